#!/usr/bin/env bash
# Build the test control plane (etcd, kube-apiserver, kube-controller-manager), the S3 server
# (versitygw) and helm from pinned Go modules into ~/.cache/nora/bin/<name>-<version>; Prometheus and
# promtool come from Debian's package through tools/install-prometheus.sh (no Go needed for them).
#
# Idempotent: anything already built is skipped, so a second run does nothing (and starts no Go).
# Versions live in tools/versions.env; the wrapper modules in tools/kube and tools/etcd pin every
# dependency through their committed go.mod/go.sum.
#
# Usage: bash tools/build-tools.sh [--list]     (--list prints the binary paths and exits)
# Env:   NORA_CACHE (default ~/.cache/nora), GOPROXY as usual.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE_MINOR="${KUBERNETES_VERSION#v1.}"; KUBE_MINOR="${KUBE_MINOR%%.*}"
declare -A BINARIES=(
  [etcd]="$NORA_BIN/etcd-$ETCD_VERSION"
  [kube-apiserver]="$NORA_BIN/kube-apiserver-$KUBERNETES_VERSION"
  [kube-controller-manager]="$NORA_BIN/kube-controller-manager-$KUBERNETES_VERSION"
  [versitygw]="$NORA_BIN/versitygw-$VERSITYGW_VERSION"
  [helm]="$NORA_BIN/helm-$HELM_VERSION"
)
ORDER=(etcd kube-apiserver kube-controller-manager versitygw helm)

log() { printf '[build-tools %4ds] %s\n' "$SECONDS" "$*"; }

# Run `go build|install -v ...`, printing a progress line every 100 compiled packages.
# The full output goes to $NORA_CACHE/logs/<name>.log and its tail is shown on failure.
go_with_progress() {
  local name="$1"; shift
  local logfile="$NORA_CACHE/logs/$name.log" n=0 line
  mkdir -p "$NORA_CACHE/logs"
  : > "$logfile"
  log "  full output: $logfile"
  set +e
  "$GO" "$@" 2>&1 | while IFS= read -r line; do
    printf '%s\n' "$line" >> "$logfile"
    n=$((n + 1))
    if (( n % 100 == 0 )); then log "  $name: $n packages compiled"; fi
  done
  local rc="${PIPESTATUS[0]}"
  set -e
  if [ "$rc" -ne 0 ]; then
    log "FAILED: $name (exit $rc); last lines of $logfile:"
    tail -n 40 "$logfile" >&2
    return "$rc"
  fi
}

check_wrapper() {  # <dir> <module> <version>: the committed wrapper must pin the version we want
  if ! grep -q "^\s*\(require \)\?$2 $3\b" "$TOOLS_DIR/$1/go.mod"; then
    echo "error: tools/$1/go.mod does not require $2 $3; run: bash tools/$1/gen-go-mod.sh" >&2
    exit 1
  fi
}

build_etcd() {
  check_wrapper etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  (cd "$TOOLS_DIR/etcd" && go_with_progress etcd build -v -trimpath -mod=readonly -ldflags "-s -w" \
    -o "$1.tmp" go.etcd.io/etcd/server/v3)
  mv "$1.tmp" "$1"   # a build cut short never leaves a file that looks finished
}

build_kube() {  # builds both kube binaries in one go build (they share most packages)
  check_wrapper kube k8s.io/kubernetes "$KUBERNETES_VERSION"
  local tmp="$NORA_BIN/.kube-$KUBERNETES_VERSION.tmp" pkg ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$KUBE_MINOR"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$TOOLS_DIR/kube" && go_with_progress kube build -v -trimpath -mod=readonly -ldflags "$ldflags" \
    -o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager)
  mv "$tmp/kube-apiserver" "${BINARIES[kube-apiserver]}"
  mv "$tmp/kube-controller-manager" "${BINARIES[kube-controller-manager]}"
  rm -rf "$tmp"
}

go_install() {  # <name> <module>/<cmd path>@<version> <ldflags> <dest>
  local tmp="$NORA_BIN/.$1.tmp"
  rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$tmp" && GOBIN="$tmp" go_with_progress "$1" install -v -trimpath -ldflags "$3" "$2")
  mv "$tmp/$1" "$4"
  rm -rf "$tmp"
}

build_versitygw() {
  go_install versitygw "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" \
    "-s -w -X main.Version=$VERSITYGW_VERSION -X main.Build=module -X main.BuildTime=none" "$1"
}

build_helm() {  # helm's Makefile also stamps the Kubernetes version it was built against
  local mod client_go major minor
  mod="$("$GO" mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
  client_go="$(sed -n 's/^\s*k8s.io\/client-go v0\.\([0-9]*\)\..*$/\1/p' "$mod" | head -n1)"
  major=1; minor="$client_go"
  local flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major"
  flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
  flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major"
  flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
  go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$flags" "$1"
}

main() {
  if [ "${1:-}" = "--list" ]; then
    for name in "${ORDER[@]}"; do echo "$name ${BINARIES[$name]}"; done
    bash "$TOOLS_DIR/install-prometheus.sh" --list
    return 0
  fi
  bash "$TOOLS_DIR/install-prometheus.sh"
  local missing=() name
  for name in "${ORDER[@]}"; do [ -x "${BINARIES[$name]}" ] || missing+=("$name"); done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "all tools present in $NORA_BIN (nothing to do)"
    return 0
  fi
  GO="$(find_go)"
  log "building ${missing[*]} with $("$GO" version) into $NORA_BIN (cold builds take 10-30 min)"
  mkdir -p "$NORA_BIN"
  exec 9>"$NORA_CACHE/.build.lock"
  if command -v flock >/dev/null 2>&1; then
    flock 9   # one build at a time; a concurrent run waits, then finds the work done
  fi
  for name in "${missing[@]}"; do
    [ -x "${BINARIES[$name]}" ] && continue
    local start=$SECONDS
    case "$name" in
      kube-*) log "building kube-apiserver + kube-controller-manager $KUBERNETES_VERSION (one go build) -> $NORA_BIN" ;;
      *) log "building $name -> ${BINARIES[$name]}" ;;
    esac
    case "$name" in
      etcd) build_etcd "${BINARIES[etcd]}" ;;
      kube-apiserver|kube-controller-manager) build_kube ;;
      versitygw) build_versitygw "${BINARIES[versitygw]}" ;;
      helm) build_helm "${BINARIES[helm]}" ;;
    esac
    log "built ${name/#kube-*/kube binaries} in $((SECONDS - start))s"
  done
  log "done"
}

main "$@"
