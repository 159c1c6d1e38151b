"""pytest fixtures (session scope) for the real control plane, the process-kubelet and the S3 server.

Loaded from tests/conftest.py. Nothing starts unless a test asks for one of these fixtures.
A missing binary fails the test with the build command (``bash tools/build-tools.sh``), never skips.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import controlplane, s3
from tests.support.binaries import require
from tests.support.controlplane import ControlPlane, Processes
from tests.support.kubeapi import KubeHTTP
from tests.support.kubelet import KubeletConfig, ProcessKubelet
from tests.support.operator import Operators

TEST_GPUS = 2  # nvidia.com/gpu capacity of the harness's Node


@dataclass
class _SessionState:
    """What the session started, for failure reports and the terminal summary."""

    procs: Processes = field(default_factory=Processes)
    kubelet: ProcessKubelet | None = None
    stats: list[str] = field(default_factory=list)


_STATE = _SessionState()


def _peak_rss_mib(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _record_peaks() -> None:
    peaks = {p.name: _peak_rss_mib(p.pid) for p in _STATE.procs.items if p.alive()}
    if peaks:
        detail = ", ".join(f"{name} {mib:.0f}" for name, mib in peaks.items())
        _STATE.stats.append(f"peak RSS (MiB): total {sum(peaks.values()):.0f} ({detail})")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 (admin kubeconfig included)."""
    binaries = require("etcd", "kube-apiserver", "kube-controller-manager")
    workdir = tmp_path_factory.mktemp("controlplane")
    try:
        plane = controlplane.start(workdir, binaries, _STATE.procs)
    except Exception as exc:
        report = _STATE.procs.describe()
        _STATE.procs.stop()
        pytest.fail(f"control plane failed to start: {exc}\n{report}", pytrace=False)
    _STATE.stats.append(f"control plane started in {plane.start_seconds:.1f}s (logs: {workdir / 'logs'})")
    try:
        yield plane
    finally:
        _record_peaks()
        _STATE.procs.stop()


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> KubeHTTP:
    """A minimal REST client authenticated as the admin."""
    return control_plane.api()


@pytest.fixture(scope="session")
def kube_client(control_plane: ControlPlane) -> Any:
    """A ``kubernetes.client.ApiClient`` built from the admin kubeconfig."""
    from kubernetes import config

    new_client: Any = config.new_client_from_config  # untyped in some kubernetes releases
    return new_client(config_file=str(control_plane.kubeconfig))


@pytest.fixture(scope="session")
def kubelet(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProcessKubelet]:
    """The process-kubelet: one Ready Node with ``TEST_GPUS`` GPUs whose Pods run as local processes."""
    harness = ProcessKubelet(
        control_plane.api(), tmp_path_factory.mktemp("kubelet"), KubeletConfig(gpus=TEST_GPUS)
    )
    _STATE.kubelet = harness.start()
    try:
        yield harness
    finally:
        harness.stop()
        if harness.errors:
            _STATE.stats.append(
                f"process-kubelet recorded {len(harness.errors)} errors; last:\n{harness.errors[-1]}"
            )


@dataclass(frozen=True)
class Kubectl:
    """The real kubectl, pointed at the test control plane."""

    kubeconfig: Path
    cache_dir: Path
    binary: str = "kubectl"

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl args...``; with check=True a non-zero exit fails the test with its stderr."""
        argv: Sequence[str] = [
            self.binary,
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.cache_dir}",
            *args,
        ]
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            pytest.fail(
                f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}", pytrace=False
            )
        return proc


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """Run the real kubectl (KUBECTL env overrides the binary) against the test control plane."""
    binary = os.environ.get("KUBECTL", "kubectl")
    if shutil.which(binary) is None:
        pytest.fail(
            f"kubectl not found ({binary!r}); install it (Debian: apt-get install kubectl) or set KUBECTL",
            pytrace=False,
        )
    return Kubectl(control_plane.kubeconfig, control_plane.workdir / "kubectl-cache", binary)


@pytest.fixture
def namespace(kube_api: KubeHTTP, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{secrets.token_hex(3)}"
    kube_api.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    kube_api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def operators(control_plane: ControlPlane, kubectl: Kubectl, tmp_path: Path) -> Iterator[Operators]:
    """The one way tests get operators: CRDs installed, the stand-in trainer by default, all stopped after."""
    from tests.support.crds import install_crds

    install_crds(kubectl)
    made = Operators(kubeconfig=control_plane.kubeconfig, folder=tmp_path / "operators")
    yield made
    made.stop_all()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3.S3Server]:
    """versitygw on 127.0.0.1 with static credentials and the bucket ``nora-test``."""
    binary = require("versitygw")["versitygw"]
    procs = Processes()
    try:
        server = s3.start(procs, binary, tmp_path_factory.mktemp("s3"))
    except Exception as exc:
        report = procs.describe()
        procs.stop()
        pytest.fail(f"S3 server failed to start: {exc}\n{report}", pytrace=False)
    try:
        yield server
    finally:
        procs.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Attach the component logs and the kubelet's view to failing tests that used the control plane."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and "control_plane" in getattr(item, "fixturenames", ()):
        if _STATE.procs.items:
            report.sections.append(("control plane logs (tails)", _STATE.procs.describe(lines=25)))
        if _STATE.kubelet is not None:
            report.sections.append(("process-kubelet", _STATE.kubelet.describe()))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print control-plane start time and peak memory when the session used it."""
    if _STATE.stats:
        terminalreporter.section("nora test infrastructure")
        for line in _STATE.stats:
            terminalreporter.write_line(line)
