"""Start etcd, kube-apiserver and kube-controller-manager on 127.0.0.1; describe the running result.

With :class:`PlaneOptions` ``real_node`` the apiserver listens on the real node's bridge address instead,
and the parts a real node needs are on: ServiceAccount admission (token volumes), the ``kubernetes``
Service's endpoint, the kubelet reached at its InternalIP, and the node lifecycle controller (which lifts
the not-ready taint)."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import certs
from tests.support.kubeapi import KubeHTTP
from tests.support.procs import ManagedProcess
from tests.support.waiting import wait_for

START_TIMEOUT = 180.0  # seconds; kube-apiserver alone takes ~20-60 s on 2 cores


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PlaneOptions:
    """Where the apiserver listens and whether it serves a real node (tests/support/node.py)."""

    host: str = "127.0.0.1"
    real_node: bool = False


@dataclass(frozen=True)
class ControlPlane:
    """A running test control plane: where it listens and how to authenticate as the admin."""

    server: str
    kubeconfig: Path
    admin_token: str
    ca_cert: Path
    etcd_url: str
    workdir: Path
    start_seconds: float

    def api(self) -> KubeHTTP:
        """A minimal REST client authenticated as the admin (system:masters)."""
        return KubeHTTP(server=self.server, token=self.admin_token, ca_cert=self.ca_cert)


@dataclass
class Processes:
    """The processes behind a ControlPlane, stopped in reverse start order."""

    items: list[ManagedProcess] = field(default_factory=list)

    def add(self, proc: ManagedProcess) -> ManagedProcess:
        """Start ``proc`` and remember it for stop()."""
        self.items.append(proc.start())
        return proc

    def stop(self) -> None:
        """Stop everything that was started (safe to call more than once)."""
        for proc in reversed(self.items):
            proc.stop()

    def describe(self, lines: int = 40) -> str:
        """Log tails of every process, for failure reports."""
        return "\n".join(p.describe(lines) for p in self.items)


def write_kubeconfig(path: Path, server: str, ca_cert: Path, token: str) -> Path:
    """Write an admin kubeconfig (JSON, which kubectl and the Python client read as YAML)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "nora-test", "cluster": {"server": server, "certificate-authority": str(ca_cert)}}
        ],
        "users": [{"name": certs.ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": "nora-test", "context": {"cluster": "nora-test", "user": certs.ADMIN_USER}}],
        "current-context": "nora-test",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def _http_ok(url: str, expect: str, context: ssl.SSLContext | None = None) -> bool:
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:
        return bool(resp.status == 200 and expect in resp.read().decode(errors="replace"))


def _insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def start_etcd(procs: Processes, binary: Path, workdir: Path) -> str:
    """Start etcd (single member, no fsync) and wait for /health; return its client URL."""
    client = f"http://127.0.0.1:{free_port()}"
    peer = f"http://127.0.0.1:{free_port()}"
    etcd = procs.add(
        ManagedProcess(
            "etcd",
            [
                str(binary),
                "--name=nora-test",
                f"--data-dir={workdir / 'etcd-data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=nora-test={peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
                f"--quota-backend-bytes={4 << 30}",
            ],
            workdir / "logs" / "etcd.log",
        )
    )

    def healthy() -> bool:
        etcd.ensure_alive()
        return _http_ok(f"{client}/health", '"health":"true"')

    wait_for(healthy, timeout=60, what="etcd /health", on_timeout=etcd.describe)
    return client


def apiserver_args(
    workdir: Path, port: int, creds: certs.Credentials, etcd_url: str, options: PlaneOptions = PlaneOptions()
) -> list[str]:
    """kube-apiserver flags (as controller-runtime's envtest uses them, plus token auth and quieter logs).

    Without a real node, ServiceAccount admission stays off so Pods never race the creation of the
    ``default`` account, and the ``kubernetes`` Service gets no endpoint."""
    if options.real_node:
        node = ["--endpoint-reconciler-type=lease", "--kubelet-preferred-address-types=InternalIP"]
    else:
        node = ["--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none"]
    return [
        f"--etcd-servers={etcd_url}", f"--bind-address={options.host}", f"--advertise-address={options.host}",
        f"--secure-port={port}", f"--cert-dir={workdir / 'apiserver-certs'}",
        f"--tls-cert-file={creds.serving_cert}", f"--tls-private-key-file={creds.serving_key}",
        f"--client-ca-file={creds.ca_cert}", f"--requestheader-client-ca-file={creds.ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--token-auth-file={creds.token_file}", f"--service-account-key-file={creds.service_account_key}",
        f"--service-account-signing-key-file={creds.service_account_key}",
        f"--service-account-issuer=https://127.0.0.1:{port}", "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true", "--authorization-mode=RBAC", "--enable-priority-and-fairness=false",
        "--profiling=false", "--v=1", *node,
    ]  # fmt: skip


def start_apiserver(
    procs: Processes,
    binary: Path,
    workdir: Path,
    creds: certs.Credentials,
    etcd_url: str,
    options: PlaneOptions = PlaneOptions(),
) -> str:
    """Start kube-apiserver against ``etcd_url`` and wait for /readyz; return its https URL."""
    port = free_port()
    server = f"https://{options.host}:{port}"
    argv = [str(binary), *apiserver_args(workdir, port, creds, etcd_url, options)]
    apiserver = procs.add(ManagedProcess("kube-apiserver", argv, workdir / "logs" / "kube-apiserver.log"))
    api = KubeHTTP(server=server, token=creds.admin_token, ca_cert=creds.ca_cert, timeout=5)

    def ready() -> bool:
        apiserver.ensure_alive()
        return api.raw("/readyz") == "ok"

    wait_for(
        ready,
        timeout=START_TIMEOUT,
        what="kube-apiserver /readyz",
        interval=0.25,
        on_timeout=apiserver.describe,
    )
    return server


def start_controller_manager(
    procs: Processes,
    binary: Path,
    workdir: Path,
    creds: certs.Credentials,
    kubeconfig: Path,
    api: KubeHTTP,
    real_node: bool = False,
) -> None:
    """Start kube-controller-manager; ready when /healthz is ok and it has created default/default SA.

    Without a real node the node lifecycle and taint eviction controllers stay off (the process-kubelet
    keeps no real heartbeat they would trust)."""
    port = free_port()
    controllers = "*" if real_node else "*,-node-lifecycle-controller,-taint-eviction-controller"
    kcm = procs.add(
        ManagedProcess(
            "kube-controller-manager",
            [
                str(binary),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={workdir / 'kcm-certs'}",
                "--leader-elect=false",
                f"--controllers={controllers}",
                f"--service-account-private-key-file={creds.service_account_key}",
                f"--root-ca-file={creds.ca_cert}",
                "--v=1",
            ],
            workdir / "logs" / "kube-controller-manager.log",
        )
    )
    insecure = _insecure_context()

    def ready() -> bool:
        kcm.ensure_alive()
        healthy = _http_ok(f"https://127.0.0.1:{port}/healthz", "ok", insecure)
        return healthy and api.get_or_none("/api/v1/namespaces/default/serviceaccounts/default") is not None

    wait_for(
        ready,
        timeout=START_TIMEOUT,
        what="kube-controller-manager healthz + default ServiceAccount",
        interval=0.25,
        on_timeout=kcm.describe,
    )


def start(
    workdir: Path, binaries: dict[str, Path], procs: Processes, options: PlaneOptions = PlaneOptions()
) -> ControlPlane:
    """Start the whole control plane in ``workdir``; on error the caller stops ``procs``."""
    began = time.monotonic()
    creds = certs.generate(workdir / "pki", extra_ips=(options.host,) if options.host != "127.0.0.1" else ())
    etcd_url = start_etcd(procs, binaries["etcd"], workdir)
    server = start_apiserver(procs, binaries["kube-apiserver"], workdir, creds, etcd_url, options)
    kubeconfig = write_kubeconfig(workdir / "admin.kubeconfig", server, creds.ca_cert, creds.admin_token)
    api = KubeHTTP(server=server, token=creds.admin_token, ca_cert=creds.ca_cert)
    start_controller_manager(
        procs, binaries["kube-controller-manager"], workdir, creds, kubeconfig, api, options.real_node
    )
    return ControlPlane(
        server=server,
        kubeconfig=kubeconfig,
        admin_token=creds.admin_token,
        ca_cert=creds.ca_cert,
        etcd_url=etcd_url,
        workdir=workdir,
        start_seconds=time.monotonic() - began,
    )
