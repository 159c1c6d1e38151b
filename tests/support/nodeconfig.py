"""The configuration files of the real node (containerd, CNI, kubelet, kube-proxy), as pure builders.

Each ``build_*`` returns a dict (or TOML text for containerd) and touches nothing; tests/support/node.py
writes them and starts the processes. The four settings this kind of machine needs (see
shared notes, real-node.md) are marked where they are set.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CNI_BIN_DIR = Path("/usr/lib/cni")
SERVICE_CIDR = "10.0.0.0/24"  # the control plane's --service-cluster-ip-range


@dataclass(frozen=True)
class NodeNetwork:
    """The pod bridge: a private /24 that exists only on this machine; the host owns its first address."""

    bridge: str
    subnet: str

    @property
    def host_ip(self) -> str:
        """The bridge's own address: node IP, apiserver and S3 address that Pods reach."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))


@dataclass(frozen=True)
class NodeLayout:
    """Where the node's processes keep their files: all under one temporary folder, except containerd's
    root (content store, snapshots, metadata), which persists between runs so that images are imported
    once."""

    root: Path
    containerd_root: Path

    @property
    def containerd_socket(self) -> Path:
        """containerd's CRI/gRPC socket."""
        return self.root / "containerd" / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        """The kubelet's --root-dir (volumes and Pod folders are mounted below it)."""
        return self.root / "kubelet"

    @property
    def cni_conf_dir(self) -> Path:
        """Where the CNI network list lives."""
        return self.root / "cni" / "net.d"


def build_containerd_config(layout: NodeLayout, sandbox_image: str) -> str:
    """containerd's config (version 2): its own root (persistent), state and socket (temporary); CRI with
    runc and our CNI."""
    base = layout.root / "containerd"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            f'root = "{layout.containerd_root}"',  # persistent: the imported images stay
            f'state = "{base / "state"}"',
            "[grpc]",
            f'  address = "{layout.containerd_socket}"',
            f"[{cri}]",
            f'  sandbox_image = "{sandbox_image}"',  # registry.k8s.io/pause cannot be pulled here
            "  restrict_oom_score_adj = true",  # no CAP_SYS_RESOURCE: oom_score_adj may only go up
            "  enable_selinux = false",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{layout.cni_conf_dir}"',
            "",
        ]
    )


def build_cni_config(network: NodeNetwork, layout: NodeLayout) -> dict[str, Any]:
    """The bridge network: host-local addresses, no masquerading, and no default route, so Pods reach
    only the subnet (the host's services on ``host_ip``) and the Service range (kube-proxy)."""
    return {
        "cniVersion": "0.4.0",
        "name": "nora-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": False,  # the bridge already has host_ip; True would turn on ip_forward
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": network.subnet, "gateway": network.host_ip}]],
                    "routes": [{"dst": SERVICE_CIDR}],
                    "dataDir": str(layout.root / "cni" / "ipam"),
                },
            }
        ],
    }


def build_kubelet_config(network: NodeNetwork, layout: NodeLayout, port: int) -> dict[str, Any]:
    """KubeletConfiguration: cgroupfs (this machine runs cgroup v1), the node address on the bridge
    (a loopback node IP is refused), anonymous read for the apiserver's logs requests, and no image
    garbage collection or disk eviction (the imported images cannot be pulled again)."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": network.host_ip,
        "port": port,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "failSwapOn": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "serializeImagePulls": False,
        "registerNode": True,
        "staticPodPath": "",
        "fileCheckFrequency": "1s",
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "5s",
        "maxPods": 30,
        "podPidsLimit": 4096,
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": str(layout.root / "pod-logs"),
        "logging": {"verbosity": 1},
    }


def build_kube_proxy_config(network: NodeNetwork, kubeconfig: Path, node_name: str) -> dict[str, Any]:
    """KubeProxyConfiguration: iptables mode for the pod subnet; conntrack sysctls left as they are."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": network.subnet,
        "hostnameOverride": node_name,
        "bindAddress": network.host_ip,
        "healthzBindAddress": f"{network.host_ip}:10256",
        "metricsBindAddress": f"{network.host_ip}:10249",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"masqueradeAll": False, "syncPeriod": "5s", "minSyncPeriod": "0s"},
        "nodePortAddresses": [f"{network.host_ip}/32"],
    }
