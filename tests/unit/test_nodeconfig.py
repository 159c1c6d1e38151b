"""The real node's configuration builders (tests/support/nodeconfig.py): the settings this machine needs."""

from __future__ import annotations

from pathlib import Path

from tests.support.nodeconfig import (
    SERVICE_CIDR,
    NodeLayout,
    NodeNetwork,
    build_cni_config,
    build_containerd_config,
    build_kube_proxy_config,
    build_kubelet_config,
)

NETWORK = NodeNetwork(bridge="nora0", subnet="10.244.12.0/24")
LAYOUT = NodeLayout(Path("/tmp/node"), Path("/cache/containerd/1.6"))


def test_the_host_owns_the_first_address_of_the_subnet() -> None:
    assert NETWORK.host_ip == "10.244.12.1"


def test_containerd_keeps_to_its_own_folder_and_never_lowers_oom_scores() -> None:
    text = build_containerd_config(LAYOUT, "localhost/nora-pause:1")
    assert 'root = "/cache/containerd/1.6"' in text
    assert f'address = "{LAYOUT.containerd_socket}"' in text
    assert "restrict_oom_score_adj = true" in text
    assert 'sandbox_image = "localhost/nora-pause:1"' in text
    assert "SystemdCgroup = false" in text


def test_pods_get_no_masquerade_and_no_route_out() -> None:
    bridge = build_cni_config(NETWORK, LAYOUT)["plugins"][0]
    assert bridge["ipMasq"] is False
    assert bridge["isGateway"] is False
    assert bridge["ipam"]["routes"] == [{"dst": SERVICE_CIDR}]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.12.0/24", "gateway": "10.244.12.1"}]]


def test_kubelet_and_kube_proxy_listen_on_the_bridge_only() -> None:
    kubelet = build_kubelet_config(NETWORK, LAYOUT, 10250)
    assert (kubelet["address"], kubelet["port"], kubelet["readOnlyPort"]) == ("10.244.12.1", 10250, 0)
    assert kubelet["containerRuntimeEndpoint"] == f"unix://{LAYOUT.containerd_socket}"
    assert kubelet["imageGCHighThresholdPercent"] == 100
    proxy = build_kube_proxy_config(NETWORK, Path("/k"), "n")
    assert (proxy["mode"], proxy["clusterCIDR"], proxy["bindAddress"]) == (
        "iptables",
        NETWORK.subnet,
        "10.244.12.1",
    )
    assert proxy["iptables"]["masqueradeAll"] is False
