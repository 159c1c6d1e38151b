#!/usr/bin/env bash
# Install the pinned Prometheus (server + promtool) for the tests, from Debian's package, without
# installing the package: `apt-get download` fetches the .deb (apt checks its hash against the signed
# index) and `dpkg-deb -x` unpacks it into ~/.cache/nora/prometheus-<version>/. No service is started,
# nothing is written outside the cache, systemd is not needed. The binaries are static Go builds that only
# need libc; they are linked as ~/.cache/nora/bin/prometheus-<version> and promtool-<version>, the names
# tests/support/binaries.py looks for.
#
# Idempotent: when both links work, it does nothing. The version is pinned in tools/versions.env
# (PROMETHEUS_DEB_VERSION); when Debian's mirror drops it (a security update), change the pin.
#
# Usage: bash tools/install-prometheus.sh [--list]   (--list prints the binary paths and exits)
# Env:   NORA_CACHE (default ~/.cache/nora).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VERSION="$PROMETHEUS_DEB_VERSION"
TREE="$NORA_CACHE/prometheus-$VERSION"
declare -A LINKS=([prometheus]="$NORA_BIN/prometheus-$VERSION" [promtool]="$NORA_BIN/promtool-$VERSION")

log() { printf '[install-prometheus] %s\n' "$*"; }

installed() {
  local name
  for name in prometheus promtool; do
    "${LINKS[$name]}" --version >/dev/null 2>&1 || return 1
  done
}

ensure_index() {  # the package index must know the pinned version (apt-get update once if needed)
  if apt-cache show "prometheus=$VERSION" >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" -eq 0 ]; then
    log "package index lacks prometheus=$VERSION; running apt-get update"
    apt-get update -qq
  fi
  if ! apt-cache show "prometheus=$VERSION" >/dev/null 2>&1; then
    local candidate
    candidate="$(apt-cache policy prometheus 2>/dev/null | sed -n 's/^ *Candidate: //p')"
    echo "error: apt offers no prometheus=$VERSION (candidate: ${candidate:-none})." >&2
    echo "  Run 'apt-get update' as root, or set PROMETHEUS_DEB_VERSION in tools/versions.env" >&2
    echo "  to the candidate above." >&2
    exit 1
  fi
}

WORK=""
cleanup() { if [ -n "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

download_and_unpack() {
  local deb sandbox=()
  WORK="$(mktemp -d "$NORA_CACHE/.prometheus.XXXXXX")"
  # as root, apt hands downloads to its _apt user, which cannot write into our private temp folder
  if [ "$(id -u)" -eq 0 ]; then sandbox=(-o APT::Sandbox::User=root); fi
  (cd "$WORK" && apt-get download -qq "${sandbox[@]}" "prometheus=$VERSION")
  deb="$(find "$WORK" -maxdepth 1 -name 'prometheus_*.deb' -print -quit)"
  [ -n "$deb" ] || { echo "error: apt-get download left no .deb in $WORK" >&2; exit 1; }
  mkdir "$WORK/root"
  dpkg-deb -x "$deb" "$WORK/root"
  rm -rf "$TREE"
  mv "$WORK/root" "$TREE"   # a download cut short never leaves a tree that looks finished
}

main() {
  if [ "${1:-}" = "--list" ]; then
    echo "prometheus ${LINKS[prometheus]}"
    echo "promtool ${LINKS[promtool]}"
    return 0
  fi
  if installed; then
    log "prometheus $VERSION present in $NORA_BIN (nothing to do)"
    return 0
  fi
  for tool in apt-get apt-cache dpkg-deb; do
    command -v "$tool" >/dev/null 2>&1 || {
      echo "error: $tool not found; Prometheus comes from Debian bookworm's package" >&2
      exit 1
    }
  done
  mkdir -p "$NORA_BIN"
  exec 8>"$NORA_CACHE/.prometheus.lock"
  if command -v flock >/dev/null 2>&1; then
    flock 8   # one install at a time; a concurrent run waits, then finds the work done
  fi
  if [ ! -x "$TREE/usr/bin/prometheus" ] || [ ! -x "$TREE/usr/bin/promtool" ]; then
    ensure_index
    log "downloading prometheus=$VERSION from Debian into $TREE"
    download_and_unpack
  fi
  local name
  for name in prometheus promtool; do
    ln -sfn "$TREE/usr/bin/$name" "${LINKS[$name]}"
  done
  installed || { echo "error: ${LINKS[prometheus]} --version fails (missing libc?)" >&2; exit 1; }
  log "installed: $("${LINKS[prometheus]}" --version 2>&1 | head -n1)"
}

main "$@"
