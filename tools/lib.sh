# shellcheck shell=bash
# Shared shell setup for tools/*.sh: pinned versions, the Go toolchain and the cache layout.
# Source it; do not execute it.

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$TOOLS_DIR/versions.env"

NORA_CACHE="${NORA_CACHE:-$HOME/.cache/nora}"
# shellcheck disable=SC2034  # used by the scripts that source this file
NORA_BIN="$NORA_CACHE/bin"
export GOMODCACHE="$NORA_CACHE/go/mod"
export GOCACHE="$NORA_CACHE/go/build"
export GOPATH="$NORA_CACHE/go/path"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"  # set GOTOOLCHAIN=auto to let an older Go fetch 1.26
export CGO_ENABLED=0

find_go() {
  if command -v go >/dev/null 2>&1; then
    command -v go
  elif [ -x /usr/local/go/bin/go ]; then
    echo /usr/local/go/bin/go
  else
    echo "error: no Go toolchain found (need Go >= 1.26 on PATH or at /usr/local/go/bin/go)" >&2
    return 1
  fi
}
