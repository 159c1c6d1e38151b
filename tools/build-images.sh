#!/usr/bin/env bash
# Build the project's images with buildah (no Docker engine, no registry needed) and keep each in an OCI
# image layout folder under ~/.cache/nora/images/<name>, which the real-node tests (tests/node) import into
# containerd:
#
#   nora-operator   operator/Dockerfile         localhost/nora-operator:<key>
#   nora-trainer    trainer_image/Dockerfile    localhost/nora-trainer:<key>
#   nora-pause      the Pod sandbox image: FROM scratch + the static tools/pause program (user 65535)
#
# <key> hashes what an image depends on: its Dockerfile, constraints.txt, pyproject.toml, README.md, every
# file under src/ and the base image. An image whose key is already in its layout folder is not rebuilt,
# so a warm run does nothing.
#
# Layers: buildah builds with --layers in a store that persists (below), so a Dockerfile step whose inputs
# did not change is taken from the cache. The Dockerfiles put the dependencies in one multi-GB layer keyed
# by the base, constraints.txt and pyproject.toml's dependency lists, and the project in a thin layer on
# top: a change under src/ rebuilds only the thin layer, and the push writes only its blob into the layout
# folder (the blobs already there are reused). The folder then keeps only the newest reference and the
# blobs it needs.
#
# Base: the Dockerfiles' pinned python slim image when the registry answers; otherwise (as here) a Debian
# bookworm root filesystem with Python 3.11 and venv made by mmdebstrap (its tar is cached too), passed as
# the BASE_IMAGE build argument. Without the PyTorch CPU index, the operator takes PyPI's torch wheel.
# pip's cache is a build cache mount that lives in ~/.cache/nora/buildah-tmp, so rebuilds reuse wheels.
#
# Storage: buildah's own store under NORA_BUILDAH_STORE (default /var/lib/nora-buildah/<driver>), driver
# NORA_BUILDAH_DRIVER (default overlay: vfs stores every layer as a full copy of the tree; see
# tools/README.md); `buildah --root <store>/root rmi --prune` empties its layer cache. Needs root, buildah,
# mmdebstrap and jq (tools/install-node-packages.sh).
#
# Usage: bash tools/build-images.sh [--list]   (--list prints "name reference layout-folder" lines and exits)
# NORA_IMAGES="nora-trainer" builds (or lists) only the images named (default: all three).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO_ROOT="$(cd "$TOOLS_DIR/.." && pwd)"
IMAGES_DIR="$NORA_CACHE/images"
DRIVER="${NORA_BUILDAH_DRIVER:-overlay}"
STORE="${NORA_BUILDAH_STORE:-/var/lib/nora-buildah}/$DRIVER"
PINNED_BASE="$(sed -n 's/^ARG BASE_IMAGE=//p' "$REPO_ROOT/operator/Dockerfile")"
SUITE=bookworm
BASE_PACKAGES=(python3 python3-venv python-is-python3 ca-certificates)
MIRRORS=(
  "deb http://deb.debian.org/debian $SUITE main"
  "deb http://deb.debian.org/debian $SUITE-updates main"
  "deb http://deb.debian.org/debian-security $SUITE-security main"
)
declare -A DOCKERFILES=([nora-operator]=operator/Dockerfile [nora-trainer]=trainer_image/Dockerfile)
export BUILDAH_ISOLATION=chroot
export TMPDIR="$NORA_CACHE/buildah-tmp"   # buildah keeps RUN cache mounts (pip's cache) under TMPDIR

log() { printf "[build-images %4ds] %s\n" "$SECONDS" "$*" >&2; }  # stderr: some callers print results on stdout
bah() { buildah --root "$STORE/root" --runroot "$STORE/run" --storage-driver "$DRIVER" "$@"; }
short_hash() { sha256sum | cut -c1-16; }

base_key() { printf '%s\n' "$SUITE" "${BASE_PACKAGES[@]}" "${MIRRORS[@]}" | short_hash; }

context_key() {  # <dockerfile>: what the image depends on
  (
    cd "$REPO_ROOT"
    cat "$1"
    find pyproject.toml README.md constraints.txt src -type f ! -path '*/__pycache__/*' \
      ! -name '*.py[cod]' ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum
    base_key
  ) | short_hash
}

reference() {  # <name>
  case "$1" in
    nora-pause) echo "localhost/nora-pause:$PAUSE_VERSION" ;;
    *) echo "localhost/$1:$(context_key "${DOCKERFILES[$1]}")" ;;
  esac
}

layout() { echo "$IMAGES_DIR/$1"; }  # <name>: the image's OCI layout folder

ref_name() { echo '.annotations["org.opencontainers.image.ref.name"]'; }

is_current() {  # <name> <reference>: the layout folder holds this reference
  local index; index="$(layout "$1")/index.json"
  [ -s "$index" ] && jq -e --arg ref "$2" "any(.manifests[]; $(ref_name) == \$ref)" "$index" >/dev/null
}

prune_layout() {  # <folder> <reference>: keep only this reference in index.json and the blobs it needs
  local dir="$1" ref="$2" manifest keep blob
  jq --arg ref "$ref" ".manifests |= map(select($(ref_name) == \$ref))" "$dir/index.json" > "$dir/index.new"
  mv "$dir/index.new" "$dir/index.json"
  manifest="$(jq -r '.manifests[0].digest' "$dir/index.json")"
  keep="$(printf '%s\n' "$manifest"; jq -r '.config.digest, .layers[].digest' "$dir/blobs/${manifest/://}")"
  for blob in "$dir"/blobs/sha256/*; do
    grep -qx "sha256:${blob##*/}" <<<"$keep" || rm -f "$blob"
  done
}

save() {  # <name> <reference>: push into the layout folder, prune it, untag older builds in buildah's store
  local dir old
  dir="$(layout "$1")"
  bah push --quiet --disable-compression "$2" "oci:$dir:$2"
  prune_layout "$dir" "$2"
  bah images --noheading --format '{{.Name}}:{{.Tag}}' | { grep "^localhost/$1:" || true; } | while read -r old; do
    [ "$old" = "$2" ] || bah rmi "$old" >/dev/null
  done
  log "$2 -> $dir ($(du -sm "$dir" | cut -f1) MiB)"
}

build_pause() {
  local ctr ref="$1"
  ctr="$(bah from scratch)"
  bah copy --quiet --chmod 0755 "$ctr" "$NORA_BIN/pause-$PAUSE_VERSION" /pause
  bah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  bah commit --quiet "$ctr" "$ref" >/dev/null
  bah rm "$ctr" >/dev/null
}

local_base() {  # prints the reference of the mmdebstrap base, building it when absent
  local key ref rootfs ctr
  key="$(base_key)"; ref="localhost/nora-base:$SUITE-$key"; rootfs="$IMAGES_DIR/nora-base-$key.rootfs.tar"
  if ! bah inspect --type image "$ref" >/dev/null 2>&1; then
    if [ ! -s "$rootfs" ]; then
      log "mmdebstrap $SUITE with ${BASE_PACKAGES[*]} -> $rootfs"
      local IFS=,
      mmdebstrap --quiet --variant=minbase --format=tar --include="${BASE_PACKAGES[*]}" "$SUITE" \
        "$rootfs.tmp" "${MIRRORS[@]}"
      unset IFS
      mv "$rootfs.tmp" "$rootfs"
    fi
    ctr="$(bah from scratch)"
    bah add --quiet "$ctr" "$rootfs" / >/dev/null
    bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$ctr"
    bah commit --quiet "$ctr" "$ref" >/dev/null
    bah rm "$ctr" >/dev/null
  fi
  echo "$ref"
}

base_args() {  # prints the build arguments: none when the pinned base can be pulled
  if bah pull --quiet "docker.io/library/$PINNED_BASE" >/dev/null 2>&1; then
    return 0
  fi
  log "cannot pull $PINNED_BASE; building from a local Debian base" >&2
  echo "--build-arg=BASE_IMAGE=$(local_base)"
  echo "--build-arg=TORCH_INDEX_URL=https://pypi.org/simple"
  echo "--build-arg=TORCH_VARIANT="
}

host_ca_args() {  # a CA bundle the host's pip is told to trust (a TLS-intercepting proxy) reaches RUN too
  local cert="${PIP_CERT:-}"
  if [ -z "$cert" ] && [ -f /etc/pip.conf ]; then
    cert="$(sed -n 's/^\s*cert\s*=\s*//p' /etc/pip.conf | head -n1)"
  fi
  [ -n "$cert" ] && [ -f "$cert" ] || return 0
  printf '[global]\ncert = /etc/nora-build-ca.crt\n' > "$TMPDIR/pip.conf"
  echo "--volume=$cert:/etc/nora-build-ca.crt:ro"
  echo "--volume=$TMPDIR/pip.conf:/etc/pip.conf:ro"
}

build_dockerfile() {  # <name> <reference> <build args...>
  local name="$1" ref="$2"; shift 2
  bah bud --quiet --format oci --layers -f "$REPO_ROOT/${DOCKERFILES[$name]}" -t "$ref" "$@" \
    "$REPO_ROOT" >/dev/null
}

main() {
  local all="nora-pause nora-operator nora-trainer" names name ref todo=() args=() have_args=0
  read -ra names <<< "${NORA_IMAGES:-$all}"
  for name in "${names[@]}"; do
    if [[ " $all " != *" $name "* ]]; then
      echo "error: NORA_IMAGES: unknown image '$name' (choose from $all)" >&2
      exit 2
    fi
  done
  if [ "${1:-}" = "--list" ]; then
    for name in "${names[@]}"; do echo "$name $(reference "$name") $(layout "$name")"; done
    return 0
  fi
  for name in "${names[@]}"; do
    ref="$(reference "$name")"
    if is_current "$name" "$ref"; then log "$ref is current (nothing to do)"; else todo+=("$name"); fi
  done
  [ "${#todo[@]}" -gt 0 ] || return 0
  [ -x "$NORA_BIN/pause-$PAUSE_VERSION" ] || { echo "error: run bash tools/build-tools.sh first" >&2; exit 1; }
  mkdir -p "$IMAGES_DIR" "$TMPDIR" "$STORE"
  exec 7>"$NORA_CACHE/.images.lock"
  flock 7   # one build at a time
  # a build cut short leaves multi-GB temporary files; keep only the cache mounts and our pip.conf; the
  # OCI archives of earlier versions of this script are gone too
  find "$IMAGES_DIR" -maxdepth 1 -name 'nora-*.tar' ! -name 'nora-base-*' -delete
  bah rm --all >/dev/null   # working containers (and their mounts) of a build that failed or was cut short
  find "$TMPDIR" -mindepth 1 -maxdepth 1 ! -name buildah-cache ! -name pip.conf -exec rm -rf {} +
  for name in "${todo[@]}"; do
    local start=$SECONDS
    ref="$(reference "$name")"
    log "building $ref with $DRIVER storage"
    if [ "$name" = nora-pause ]; then
      build_pause "$ref"
    else
      if [ "$have_args" -eq 0 ]; then mapfile -t args < <(base_args; host_ca_args); have_args=1; fi
      build_dockerfile "$name" "$ref" "${args[@]}"
    fi
    save "$name" "$ref"
    log "built $name in $((SECONDS - start))s"
  done
}

main "$@"
