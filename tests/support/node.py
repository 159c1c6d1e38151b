"""A real Kubernetes node for tests: containerd + runc, a kubelet, kube-proxy and kube-scheduler.

:func:`start_node` makes a pod bridge on a private /24 that exists only on this machine (no
masquerading, no route out of the Pods: they reach the host's apiserver and S3 server on the bridge's
own address, and the Service range through kube-proxy), starts containerd with its own root, state and
socket (its root, which holds the images, persists in ~/.cache/nora/containerd/<version>), imports what it
lacks of the project's images (tests/support/nodeimages.py), then starts the kubelet, kube-proxy and
kube-scheduler against a control plane started with ``PlaneOptions(real_node=True)`` on that address.
The Node advertises ``nvidia.com/gpu`` as an extended resource. :meth:`RealNode.stop` removes the Pods,
removes their containers from containerd, stops every process by PID, runs ``kube-proxy --cleanup`` (its
iptables rules), unmounts what is mounted under the node's folder and deletes the bridge. One real node
runs per machine at a time (a lock file); a second session waits for the first.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.support import nodeconfig, nodeimages
from tests.support.binaries import bin_dir
from tests.support.controlplane import ControlPlane, Processes, free_port
from tests.support.kubeapi import KubeHTTP
from tests.support.nodeconfig import NodeLayout, NodeNetwork
from tests.support.nodeimages import NodeImage
from tests.support.procs import ManagedProcess
from tests.support.waiting import wait_for

NODE_NAME = "nora-real-node"
GPUS = 2
LOCK = Path("/run/nora-real-node.lock")
POOL = ipaddress.ip_network("10.244.0.0/16")
KUBELET_CHAINS = {
    "filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"),
    "nat": ("KUBE-KUBELET-CANARY",),
    "mangle": ("KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT"),
}


def run(*argv: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a set-up command; with check=True a failure raises with its output."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
    return proc


def pick_network() -> NodeNetwork:
    """A bridge name and a /24 of 10.244.0.0/16 that no address or route on this machine uses."""
    used = run("ip", "-4", "-o", "addr").stdout + run("ip", "-4", "route").stdout
    for subnet in POOL.subnets(new_prefix=24):
        prefix = str(subnet.network_address).rsplit(".", 1)[0] + "."
        if subnet.network_address.packed[2] >= 10 and prefix not in used:
            return NodeNetwork(bridge=f"nora{secrets.token_hex(3)}", subnet=str(subnet))
    raise RuntimeError(f"no free /24 in {POOL}")


def make_bridge(network: NodeNetwork) -> None:
    """The pod bridge with the host's address on it, up, before the kubelet needs its node IP."""
    prefix = ipaddress.ip_network(network.subnet).prefixlen
    run("ip", "link", "add", network.bridge, "type", "bridge")
    run("ip", "addr", "add", f"{network.host_ip}/{prefix}", "dev", network.bridge)
    run("ip", "link", "set", network.bridge, "up")


def node_images(repo_root: Path) -> list[NodeImage]:
    """The images tools/build-images.sh builds (``--list``), which must be built."""
    listing = run("bash", str(repo_root / "tools" / "build-images.sh"), "--list").stdout
    images = nodeimages.listed_images(listing)
    missing = [image.reference for image in images if not image.built]
    if missing:
        raise RuntimeError(f"images not built: {missing}; run `make images` (bash tools/build-images.sh)")
    return images


def containerd_store() -> Path:
    """containerd's persistent root for this containerd version, under NORA_CACHE (~/.cache/nora)."""
    version = run("containerd", "--version").stdout.split()[2]
    return bin_dir().parent / "containerd" / version.replace("~", "-")


@dataclass(frozen=True)
class NodeSite:
    """What the node holds on this machine before any process starts: the lock, the bridge, the images."""

    network: NodeNetwork
    layout: NodeLayout
    images: dict[str, NodeImage]
    lock: IO[str]

    def release(self) -> None:
        """Delete the bridge and let the next session have the machine."""
        run("ip", "link", "del", self.network.bridge, check=False)
        self.lock.close()


@dataclass
class RealNode:
    """A running real node and everything needed to take it down again."""

    site: NodeSite
    api: KubeHTTP
    binaries: dict[str, Path]
    procs: Processes = field(default_factory=Processes)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The Node's name."""
        return NODE_NAME

    @property
    def network(self) -> NodeNetwork:
        """The pod bridge."""
        return self.site.network

    @property
    def layout(self) -> NodeLayout:
        """The node's folders."""
        return self.site.layout

    @property
    def images(self) -> dict[str, NodeImage]:
        """The imported images by name (nora-operator, nora-trainer, nora-pause)."""
        return self.site.images

    @property
    def ctr_argv(self) -> list[str]:
        """``ctr`` against this node's containerd, namespace k8s.io."""
        return ["ctr", "--address", str(self.layout.containerd_socket), "--namespace", "k8s.io"]

    def ctr(self, *args: str, timeout: float = 600) -> str:
        """Run ``ctr`` against this node's containerd; return its output."""
        return run(*self.ctr_argv, *args, timeout=timeout).stdout

    def remove_containers(self) -> int:
        """Delete every container (and its snapshot) containerd holds; return how many there were."""
        names = self.ctr("containers", "ls", "-q").split()
        for name in names:
            self.ctr("containers", "rm", name)
        return len(names)

    def describe(self, lines: int = 30) -> str:
        """Log tails of the node's processes, for failure reports."""
        return self.procs.describe(lines)

    def stop(self) -> None:
        """Remove the Pods and their containers, stop everything by PID, clean up mounts and iptables rules
        (the control plane is still up; NodeSite.release deletes the bridge afterwards). containerd's root
        with the images stays for the next run."""
        with contextlib.suppress(Exception):
            self._drain()
        self.procs.stop()
        self._stop_shims()
        run(str(self.binaries["kube-proxy"]), "--cleanup", check=False)
        _remove_kubelet_chains()
        _unmount_below(self.layout.root)
        _unmount_below(self.layout.containerd_root)

    def _drain(self, timeout: float = 90) -> None:
        """Delete every workload and Pod (grace 0) and wait until containerd runs no task."""
        for path in ("/apis/apps/v1/deployments", "/apis/apps/v1/replicasets", "/apis/batch/v1/jobs"):
            for item in self.api.get(path)["items"]:
                meta = item["metadata"]
                namespaced = path.replace("/v1/", f"/v1/namespaces/{meta['namespace']}/")
                self.api.delete(f"{namespaced}/{meta['name']}", propagation="Background")
        for pod in self.api.get("/api/v1/pods")["items"]:
            meta = pod["metadata"]
            self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", grace_seconds=0)
        wait_for(lambda: not self.ctr("tasks", "ls", "-q").strip(), timeout=timeout, what="no tasks left")
        self.remove_containers()

    def _stop_shims(self) -> None:
        """SIGKILL the runc shims that this node's containerd started (found by its socket address)."""
        marker = str(self.layout.containerd_socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if marker in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), 9)


def _remove_kubelet_chains() -> None:
    """Delete the iptables chains the kubelet makes (``kube-proxy --cleanup`` leaves them), IPv4 and IPv6."""
    for tool in ("iptables", "ip6tables"):
        for hook in ("INPUT", "OUTPUT"):
            run(tool, "-t", "filter", "-D", hook, "-j", "KUBE-FIREWALL", check=False)
        for table, chains in KUBELET_CHAINS.items():
            for chain in chains:
                run(tool, "-t", table, "-F", chain, check=False)
                run(tool, "-t", table, "-X", chain, check=False)


def _unmount_below(root: Path) -> None:
    """Lazily unmount every mount point under ``root``, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    for point in sorted(points, key=len, reverse=True):
        run("umount", "-l", point, check=False)


def _lock() -> IO[str]:
    handle = LOCK.open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def start_containerd(node: RealNode, sandbox_image: str) -> None:
    """containerd with its own config, root, state and socket; ready when ``ctr version`` answers."""
    config = _write(
        node.layout.root / "containerd" / "config.toml",
        nodeconfig.build_containerd_config(node.layout, sandbox_image),
    )
    _write(
        node.layout.cni_conf_dir / "10-nora.conflist",
        json.dumps(nodeconfig.build_cni_config(node.network, node.layout), indent=2),
    )
    proc = node.procs.add(
        ManagedProcess(
            "containerd", ["containerd", "--config", str(config)], node.layout.root / "containerd.log"
        )
    )

    def ready() -> bool:
        proc.ensure_alive()
        return bool(node.ctr("version", timeout=10))

    wait_for(ready, timeout=60, what="containerd", interval=0.25, on_timeout=proc.describe)
    if node.remove_containers():  # a run that ended without clean-up left them in the persistent root
        proc.stop()
        proc.start()  # the CRI plugin reloads its sandboxes and containers (now none) on start
        wait_for(ready, timeout=60, what="containerd restarted", interval=0.25, on_timeout=proc.describe)


def start_kubelet(node: RealNode, kubeconfig: Path) -> None:
    """The kubelet, registered as Node ``NODE_NAME`` at the bridge address."""
    port = free_port()
    config = _write(
        node.layout.root / "kubelet-config.json",
        json.dumps(nodeconfig.build_kubelet_config(node.network, node.layout, port)),
    )
    argv = [
        str(node.binaries["kubelet"]),
        f"--config={config}",
        f"--kubeconfig={kubeconfig}",
        f"--root-dir={node.layout.kubelet_dir}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={node.network.host_ip}",
        "--v=1",
    ]
    node.procs.add(ManagedProcess("kubelet", argv, node.layout.root / "kubelet.log"))


def start_kube_proxy(node: RealNode, kubeconfig: Path) -> None:
    """kube-proxy (iptables) so that the ``kubernetes`` Service reaches the apiserver from Pods."""
    config = _write(
        node.layout.root / "kube-proxy-config.json",
        json.dumps(nodeconfig.build_kube_proxy_config(node.network, kubeconfig, NODE_NAME)),
    )
    argv = [str(node.binaries["kube-proxy"]), f"--config={config}", "--v=1"]
    node.procs.add(ManagedProcess("kube-proxy", argv, node.layout.root / "kube-proxy.log"))


def start_scheduler(node: RealNode, kubeconfig: Path) -> None:
    """kube-scheduler on 127.0.0.1 (no leader election)."""
    argv = [
        str(node.binaries["kube-scheduler"]),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={free_port()}",
        "--leader-elect=false",
        "--v=1",
    ]
    node.procs.add(ManagedProcess("kube-scheduler", argv, node.layout.root / "kube-scheduler.log"))


def _node_ready(api: KubeHTTP) -> bool:
    node = api.get_or_none(f"/api/v1/nodes/{NODE_NAME}")
    if node is None:
        return False
    ready = [c for c in node["status"].get("conditions", []) if c["type"] == "Ready"]
    tainted = any(t["key"] == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints", []))
    return bool(ready and ready[0]["status"] == "True" and not tainted)


def advertise_gpus(api: KubeHTTP, count: int) -> None:
    """``nvidia.com/gpu`` as a node-level extended resource (a status patch, as the docs describe)."""
    patch = {"status": {"capacity": {"nvidia.com/gpu": str(count)}}}
    api.patch(f"/api/v1/nodes/{NODE_NAME}/status", patch)

    def advertised() -> bool:
        status = api.get(f"/api/v1/nodes/{NODE_NAME}")["status"]
        return bool(status.get("allocatable", {}).get("nvidia.com/gpu") == str(count))

    wait_for(advertised, timeout=60, what="nvidia.com/gpu allocatable", interval=0.5)


def start_node(node: RealNode, plane: ControlPlane) -> RealNode:
    """Start containerd, import the images, then kubelet, kube-proxy and scheduler; wait until Ready."""
    began = time.monotonic()
    start_containerd(node, node.images["nora-pause"].reference)
    sent = nodeimages.import_images(list(node.images.values()), node.ctr, node.ctr_argv)
    node.timings["image import"] = time.monotonic() - began
    node.timings["image bytes imported"] = float(sum(sent.values()))
    for start in (start_kubelet, start_kube_proxy, start_scheduler):
        start(node, plane.kubeconfig)
    wait_for(
        lambda: _node_ready(node.api),
        timeout=180,
        what=f"Node {NODE_NAME} Ready without the not-ready taint",
        interval=0.5,
        on_timeout=node.describe,
    )
    advertise_gpus(node.api, GPUS)
    node.timings["node start"] = time.monotonic() - began
    return node


def prepare(workdir: Path, repo_root: Path) -> NodeSite:
    """Find the images, take the machine's real-node lock, pick and make the bridge; the control plane
    (on the bridge's address) starts next."""
    images = {image.name: image for image in node_images(repo_root)}
    lock = _lock()
    try:
        network = pick_network()
        make_bridge(network)
    except Exception:
        lock.close()
        raise
    layout = NodeLayout(workdir, containerd_store())
    return NodeSite(network=network, layout=layout, images=images, lock=lock)
