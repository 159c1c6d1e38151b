"""Session fixtures of the real-node tier: its own control plane, S3 server and a real node.

This tier has a control plane of its own, listening on the pod bridge's host address (Pods reach it
there and through the ``kubernetes`` Service), so its Pods never meet the process-kubelet of the other
tiers. Every missing piece (root, a Debian package, a binary, an image) fails the test with the set-up
command that provides it; nothing here skips.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.support import controlplane, node, nodechart, s3
from tests.support.binaries import REPO_ROOT, require
from tests.support.controlplane import ControlPlane, PlaneOptions, Processes
from tests.support.fixtures import Kubectl
from tests.support.node import NodeSite, RealNode
from tests.support.nodechart import InstalledOperator

COMMANDS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip", "iptables", "kubectl")
SET_UP = "make tools images  (tools/install-node-packages.sh, build-tools.sh, build-images.sh)"


def _require_machine() -> None:
    missing = [name for name in COMMANDS if shutil.which(name) is None]
    problems = [f"commands not found: {', '.join(missing)}"] if missing else []
    if os.geteuid() != 0:
        problems.append("the real node needs root (containerd, mounts, the pod bridge)")
    if problems:
        pytest.fail(f"real node unavailable: {'; '.join(problems)}. Set up with: {SET_UP}", pytrace=False)


@pytest.fixture(scope="session")
def node_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSite]:
    """The machine's real-node lock, the pod bridge and the built images (released at the end)."""
    _require_machine()
    try:
        site = node.prepare(tmp_path_factory.mktemp("node"), REPO_ROOT)
    except RuntimeError as exc:
        pytest.fail(f"real node unavailable: {exc}. Set up with: {SET_UP}", pytrace=False)
    try:
        yield site
    finally:
        site.release()


@pytest.fixture(scope="session")
def node_plane(node_site: NodeSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd, kube-apiserver (on the bridge's address) and kube-controller-manager for the real node."""
    binaries = require("etcd", "kube-apiserver", "kube-controller-manager")
    procs = Processes()
    options = PlaneOptions(host=node_site.network.host_ip, real_node=True)
    try:
        try:
            plane = controlplane.start(tmp_path_factory.mktemp("node-plane"), binaries, procs, options)
        except Exception as exc:
            pytest.fail(f"real-node control plane failed to start: {exc}\n{procs.describe()}", pytrace=False)
        yield plane
    finally:
        procs.stop()  # also after a timeout (pytest-timeout raises no Exception subclass)


@pytest.fixture(scope="session")
def real_node(node_site: NodeSite, node_plane: ControlPlane) -> Iterator[RealNode]:
    """containerd, kubelet, kube-proxy and kube-scheduler: a Ready Node with the images imported."""
    binaries = require("kubelet", "kube-proxy", "kube-scheduler")
    running = RealNode(site=node_site, api=node_plane.api(), binaries=binaries)
    try:
        try:
            node.start_node(running, node_plane)
        except Exception as exc:
            pytest.fail(f"real node failed to start: {exc}\n{running.describe()}", pytrace=False)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def node_s3(node_site: NodeSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3.S3Server]:
    """versitygw on the bridge's address, so that Pods and the tests use the same endpoint."""
    binary = require("versitygw")["versitygw"]
    procs = Processes()
    try:
        try:
            server = s3.start(
                procs, binary, tmp_path_factory.mktemp("node-s3"), host=node_site.network.host_ip
            )
        except Exception as exc:
            pytest.fail(f"S3 server failed to start: {exc}\n{procs.describe()}", pytrace=False)
        yield server
    finally:
        procs.stop()


@pytest.fixture(scope="session")
def node_kubectl(node_plane: ControlPlane) -> Kubectl:
    """The real kubectl against the real node's control plane."""
    return Kubectl(
        node_plane.kubeconfig, node_plane.workdir / "kubectl-cache", os.environ.get("KUBECTL", "kubectl")
    )


@pytest.fixture(scope="session")
def node_operator(
    real_node: RealNode, node_plane: ControlPlane, node_kubectl: Kubectl, node_s3: s3.S3Server
) -> Iterator[InstalledOperator]:
    """The chart installed with the node's operator image, its Pod Ready, and a restricted namespace with
    the S3 Secret, shared by every test module of the tier (uninstalled at the end)."""
    try:
        installed = nodechart.install(real_node, node_plane, node_kubectl, node_s3)
    except Exception as exc:
        pytest.fail(f"helm install of the operator failed: {exc}\n{real_node.describe()}", pytrace=False)
    yield installed
    nodechart.uninstall(node_plane)
