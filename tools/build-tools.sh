#!/usr/bin/env bash
# Build the test control plane (etcd, kube-apiserver, kube-controller-manager), the real node's
# Kubernetes parts (kubelet, kube-scheduler, kube-proxy), the Pod sandbox program (pause), the S3 server
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
  [kubelet]="$NORA_BIN/kubelet-$KUBERNETES_VERSION"
  [kube-scheduler]="$NORA_BIN/kube-scheduler-$KUBERNETES_VERSION"
  [kube-proxy]="$NORA_BIN/kube-proxy-$KUBERNETES_VERSION"
  [pause]="$NORA_BIN/pause-$PAUSE_VERSION"
)
ORDER=(etcd kube-apiserver kube-controller-manager versitygw helm kubelet kube-scheduler kube-proxy pause)
NODE_CMDS=(kubelet kube-scheduler kube-proxy)

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

kube_ldflags() {  # the version stamps `make` puts into Kubernetes binaries
  local pkg ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$KUBE_MINOR"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ldflags"
}

build_kube_cmds() {  # <log name> <cmd>...: one go build of k8s.io/kubernetes/cmd/<cmd> each (shared packages)
  local name="$1"; shift
  check_wrapper kube k8s.io/kubernetes "$KUBERNETES_VERSION"
  local tmp="$NORA_BIN/.$name-$KUBERNETES_VERSION.tmp" cmd pkgs=()
  for cmd in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$cmd"); done
  rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$TOOLS_DIR/kube" && go_with_progress "$name" build -v -trimpath -mod=readonly \
    -ldflags "$(kube_ldflags)" -o "$tmp/" "${pkgs[@]}")
  for cmd in "$@"; do mv "$tmp/$cmd" "${BINARIES[$cmd]}"; done
  rm -rf "$tmp"
}

build_pause() {  # the Pod sandbox program (tools/pause), static, for the locally built pause image
  (cd "$TOOLS_DIR/pause" && go_with_progress pause build -v -trimpath -mod=readonly \
    -ldflags "-s -w" -o "$1.tmp" .)
  mv "$1.tmp" "$1"
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
      kube-apiserver|kube-controller-manager)
        log "building kube-apiserver + kube-controller-manager $KUBERNETES_VERSION (one go build) -> $NORA_BIN" ;;
      kubelet|kube-scheduler|kube-proxy)
        log "building ${NODE_CMDS[*]} $KUBERNETES_VERSION (one go build) -> $NORA_BIN" ;;
      *) log "building $name -> ${BINARIES[$name]}" ;;
    esac
    case "$name" in
      etcd) build_etcd "${BINARIES[etcd]}" ;;
      kube-apiserver|kube-controller-manager) build_kube_cmds kube kube-apiserver kube-controller-manager ;;
      kubelet|kube-scheduler|kube-proxy) build_kube_cmds kube-node "${NODE_CMDS[@]}" ;;
      versitygw) build_versitygw "${BINARIES[versitygw]}" ;;
      helm) build_helm "${BINARIES[helm]}" ;;
      pause) build_pause "${BINARIES[pause]}" ;;
    esac
    case "$name" in
      kube-apiserver|kube-controller-manager) log "built kube-apiserver + kube-controller-manager in $((SECONDS - start))s" ;;
      kubelet|kube-scheduler|kube-proxy) log "built ${NODE_CMDS[*]} in $((SECONDS - start))s" ;;
      *) log "built $name in $((SECONDS - start))s" ;;
    esac
  done
  log "done"
}

main "$@"
