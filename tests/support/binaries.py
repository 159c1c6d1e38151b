"""Locate the pinned tool binaries that tools/build-tools.sh builds into ~/.cache/nora/bin."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "tools" / "versions.env"
BUILD_COMMAND = "bash tools/build-tools.sh"

# binary name -> the versions.env key that pins it
_VERSION_KEYS = {
    "etcd": "ETCD_VERSION",
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "versitygw": "VERSITYGW_VERSION",
    "helm": "HELM_VERSION",
    "kubelet": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kube-proxy": "KUBERNETES_VERSION",
    "pause": "PAUSE_VERSION",
    "prometheus": "PROMETHEUS_DEB_VERSION",
    "promtool": "PROMETHEUS_DEB_VERSION",
}


@dataclass(frozen=True)
class Binary:
    """One pinned tool: its name, version and where the build script puts it."""

    name: str
    version: str
    path: Path

    @property
    def present(self) -> bool:
        """True if the binary has been built and is executable."""
        return self.path.is_file() and os.access(self.path, os.X_OK)


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse the KEY=VALUE lines of tools/versions.env."""
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip().strip('"')
    return versions


def bin_dir() -> Path:
    """The cache folder holding the built binaries (NORA_CACHE overrides ~/.cache/nora)."""
    cache = os.environ.get("NORA_CACHE") or str(Path.home() / ".cache" / "nora")
    return Path(cache) / "bin"


def binary(name: str) -> Binary:
    """The pinned binary ``name`` (see tools/versions.env)."""
    version = read_versions()[_VERSION_KEYS[name]]
    return Binary(name=name, version=version, path=bin_dir() / f"{name}-{version}")


def require(*names: str) -> dict[str, Path]:
    """Paths of the named binaries; a missing one fails the test (never a skip), naming the build command.

    Under CI=true a missing binary means the pipeline skipped the build step, which is a failure too.
    """
    found = {name: binary(name) for name in names}
    missing = [b for b in found.values() if not b.present]
    if missing:
        listing = ", ".join(f"{b.name} {b.version} ({b.path})" for b in missing)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                f"CI: test binaries missing: {listing}. The pipeline must run `{BUILD_COMMAND}` first.",
                pytrace=False,
            )
        pytest.fail(
            f"test binaries missing: {listing}. Build them once (10-30 min cold, cached afterwards) with:\n"
            f"    {BUILD_COMMAND}",
            pytrace=False,
        )
    return {name: b.path for name, b in found.items()}
