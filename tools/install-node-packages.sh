#!/usr/bin/env bash
# Install the Debian packages the real-node test tier needs: the container runtime (containerd, runc),
# the CNI plugins, the image tools (buildah, mmdebstrap) and the iptables/conntrack tools kube-proxy uses.
# kubelet, kube-scheduler and kube-proxy themselves are built from the pinned Kubernetes module by
# tools/build-tools.sh; this script only covers what Debian packages well.
#
# Idempotent and quick: when every package is installed it does nothing (no apt-get update). Installing
# needs root; without root it prints the apt-get command to run and fails.
#
# Usage: bash tools/install-node-packages.sh [--list]   (--list prints the packages and exits)
set -euo pipefail

PACKAGES=(containerd runc containernetworking-plugins buildah mmdebstrap iptables conntrack jq)

log() { printf '[install-node-packages] %s\n' "$*"; }

missing_packages() {
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
      echo "$pkg"
    fi
  done
}

main() {
  if [ "${1:-}" = "--list" ]; then
    printf '%s\n' "${PACKAGES[@]}"
    return 0
  fi
  command -v dpkg-query >/dev/null 2>&1 || {
    echo "error: dpkg-query not found; the real-node tier needs a Debian-based machine (bookworm)" >&2
    exit 1
  }
  local missing
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -eq 0 ]; then
    log "all packages present (nothing to do): ${PACKAGES[*]}"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing packages ${missing[*]}; install them as root with:" >&2
    echo "    apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -ne 0 ]; then
    echo "error: still missing after apt-get install: ${missing[*]}" >&2
    exit 1
  fi
  log "installed: ${PACKAGES[*]}"
}

main "$@"
