"""A process-kubelet for tests: one Node whose Pods run as local processes, with status written back.

What it does, in a background thread polling the apiserver every ``poll_interval`` seconds:

- registers Node ``node_name`` (capacity cpu/memory/pods and ``nvidia.com/gpu``), keeps its Ready
  condition and its Lease in ``kube-node-lease`` fresh;
- plays scheduler: binds each pending Pod that has no ``nodeName`` (default scheduler name) to the Node
  with ``POST pods/<name>/binding`` when its ``nodeSelector`` matches and its ``nvidia.com/gpu`` request
  fits in what the Node's other Pods leave free (otherwise marks it ``PodScheduled=False/Unschedulable``);
- runs every container of a bound Pod as a local process: exactly ``command + args`` from the spec with
  Kubernetes ``$(VAR)`` expansion, never a shell and never an image entrypoint (a container without
  ``command`` fails with reason StartError). Init containers run first, one at a time. ``restartPolicy``
  Never / OnFailure / Always and the Pod's ``activeDeadlineSeconds`` are honoured;
- environment: the harness's own environment (``inherit_env``) with the directory of the running Python
  prepended to PATH (so ``python`` is the test venv's), ``HOSTNAME=<pod name>``, then the Pod's
  ``envFrom`` and ``env`` (plain values, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef``); a missing
  Secret/ConfigMap leaves the container waiting with ``CreateContainerConfigError`` until it appears;
- termination messages: a container cannot write ``/dev/termination-log`` on the host, so each container's
  ``terminationMessagePath`` is mapped to a per-container local file whose path is passed to the process
  in env ``NORA_TERMINATION_LOG`` (programs write ``$NORA_TERMINATION_LOG`` when set, else their
  ``terminationMessagePath``). Its content (first 4096 bytes) becomes ``state.terminated.message``;
  with ``terminationMessagePolicy: FallbackToLogsOnError`` a failed container with an empty file gets
  the tail of its output instead;
- writes Pod status (phase Pending/Running/Succeeded/Failed, conditions, containerStatuses with exit
  codes, restart counts and lastState; hostIP/podIP 127.0.0.1);
- on deletion (``deletionTimestamp``): SIGTERM to the process group, SIGKILL after the grace period
  (capped at ``kill_grace_cap``), terminal status, then ``DELETE`` with grace 0;
- keeps every container's stdout/stderr in files under ``workdir`` (see :meth:`ProcessKubelet.output`).

Not emulated: images, volumes/mounts (a path in the Pod spec is just a path on this machine), probes,
resource limits, networking (every Pod is 127.0.0.1), ``kubectl logs/exec`` (use ``output()``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tests.support.kubeapi import JSON, STRATEGIC_PATCH, ApiError, KubeHTTP
from tests.support.podenv import ConfigError, container_env
from tests.support.podrun import TERMINATION_LOG_ENV, ContainerRun, PodRun, now_rfc3339

GPU = "nvidia.com/gpu"
TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class KubeletConfig:
    """How the harness's Node looks and behaves."""

    node_name: str = "nora-process-node"
    gpus: int = 0
    cpu: str = "16"
    memory: str = "64Gi"
    max_pods: int = 110
    labels: Mapping[str, str] = field(default_factory=dict)
    poll_interval: float = 0.2
    heartbeat_interval: float = 10.0
    kill_grace_cap: float = 10.0
    inherit_env: bool = True
    extra_path: tuple[str, ...] = (str(Path(sys.executable).parent),)


@dataclass(frozen=True)
class ContainerOutput:
    """What one container of a Pod printed and how it ended (latest attempt)."""

    stdout: str
    stderr: str
    exit_code: int | None
    termination_message: str
    restart_count: int


def _gpu_request(pod: JSON) -> int:
    def amount(c: JSON) -> int:
        res = c.get("resources") or {}
        return int((res.get("limits") or {}).get(GPU) or (res.get("requests") or {}).get(GPU) or 0)

    spec = pod["spec"]
    main = sum(amount(c) for c in spec.get("containers") or [])
    return max([main, *(amount(c) for c in spec.get("initContainers") or [])])


def _microtime() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ProcessKubelet:
    """Runs the Pods bound to one Node as local processes (see the module docstring)."""

    def __init__(self, api: KubeHTTP, workdir: Path, config: KubeletConfig | None = None) -> None:
        self.api = api
        self.config = config or KubeletConfig()
        self.workdir = workdir
        self.errors: list[str] = []
        self._runs: dict[str, PodRun] = {}
        self._by_name: dict[tuple[str, str], PodRun] = {}
        self._unschedulable: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_heartbeat = 0.0

    # ----- public API -------------------------------------------------------------------------
    def start(self) -> ProcessKubelet:
        """Register the Node (Ready) and start the background thread."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._register_node()
        self._thread = threading.Thread(target=self._loop, name="process-kubelet", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and every process it started (SIGTERM, then SIGKILL)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.kill(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while any(r.any_running() for r in runs) and time.monotonic() < deadline:
            time.sleep(0.05)
            for r in runs:
                r.poll()
        for run in runs:
            run.kill(signal.SIGKILL)
            for c in run.containers:
                if c.popen is not None:
                    c.popen.wait(timeout=10)

    def output(self, namespace: str, pod: str, container: str | None = None) -> ContainerOutput:
        """stdout/stderr (all attempts), exit code and termination message of a container of the
        latest Pod named ``namespace/pod`` (default: its first container)."""
        with self._lock:
            run = self._by_name.get((namespace, pod))
        if run is None:
            raise KeyError(f"the process kubelet never ran a pod {namespace}/{pod}")
        candidates = run.main if container is None else [c for c in run.containers if c.name == container]
        if not candidates:
            raise KeyError(f"pod {namespace}/{pod} has no container {container!r}")
        c = candidates[0]

        def read(path: Path) -> str:
            return path.read_text(errors="replace") if path.exists() else ""

        return ContainerOutput(
            read(c.stdout), read(c.stderr), c.exit_code, c.message() if c.terminated else "", c.restart_count
        )

    def pods_run(self) -> list[tuple[str, str]]:
        """(namespace, name) of every Pod whose processes this harness started, oldest first."""
        with self._lock:
            return [(r.namespace, r.name) for r in self._runs.values()]

    def describe(self, max_chars: int = 1500) -> str:
        """A summary of every Pod run and its output tails, for failure reports."""
        lines = [
            f"process-kubelet {self.config.node_name}: {len(self._runs)} pods, errors: {self.errors[-5:]}"
        ]
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            for c in run.containers:
                out = (c.stdout.read_text(errors="replace") if c.stdout.exists() else "")[-max_chars:]
                err = (c.stderr.read_text(errors="replace") if c.stderr.exists() else "")[-max_chars:]
                lines.append(
                    f"  {run.namespace}/{run.name}/{c.name} exit={c.exit_code} restarts={c.restart_count}"
                    f"\n    stdout: {out!r}\n    stderr: {err!r}"
                )
        return "\n".join(lines)

    # ----- node -----------------------------------------------------------------------------
    def _node_status(self) -> JSON:
        cfg = self.config
        capacity = {"cpu": cfg.cpu, "memory": cfg.memory, "pods": str(cfg.max_pods), GPU: str(cfg.gpus)}
        now = now_rfc3339()

        def cond(ctype: str, status: str, reason: str) -> JSON:
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                cond("Ready", "True", "KubeletReady"),
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": cfg.node_name},
            ],
            "nodeInfo": {
                "kubeletVersion": "v0.0.0-nora-process-kubelet",
                "containerRuntimeVersion": "process://1",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "local processes",
                "kernelVersion": os.uname().release,
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kubeProxyVersion": "",
            },
        }

    def _register_node(self) -> None:
        name = self.config.node_name
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "nora.dev/process-kubelet": "true",
            **self.config.labels,
        }
        if self.api.get_or_none(f"/api/v1/nodes/{name}") is None:
            self.api.post(
                "/api/v1/nodes",
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}},
            )
        self._heartbeat()

    def _heartbeat(self) -> None:
        name = self.config.node_name
        self.api.patch(f"/api/v1/nodes/{name}/status", {"status": self._node_status()}, STRATEGIC_PATCH)
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": _microtime()}
        if self.api.get_or_none(lease_path) is None:
            self.api.post(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name},
                    "spec": spec,
                },
            )
        else:
            self.api.patch(lease_path, {"spec": spec})
        self._last_heartbeat = time.monotonic()

    # ----- loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync_once()
            except Exception:
                self._record_error(traceback.format_exc())
            self._stop.wait(self.config.poll_interval)

    def _record_error(self, text: str) -> None:
        self.errors.append(text)
        del self.errors[:-50]
        with (self.workdir / "kubelet-errors.log").open("a") as log:
            log.write(f"{now_rfc3339()} {text}\n")

    def _sync_once(self) -> None:
        if time.monotonic() - self._last_heartbeat >= self.config.heartbeat_interval:
            self._heartbeat()
        pods = self.api.get("/api/v1/pods").get("items", [])
        mine = [p for p in pods if p["spec"].get("nodeName") == self.config.node_name]
        self._schedule([p for p in pods if not p["spec"].get("nodeName")], mine)
        seen = set()
        for pod in mine:
            seen.add(pod["metadata"]["uid"])
            try:
                self._sync_pod(pod)
            except ApiError as err:
                if err.status not in (404, 409):
                    self._record_error(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}: {err}")
        with self._lock:
            gone = [r for uid, r in self._runs.items() if uid not in seen and r.any_running()]
        for run in gone:  # force-deleted behind our back
            run.kill(signal.SIGKILL)
            run.poll()

    # ----- scheduling -----------------------------------------------------------------------
    def _schedule(self, unbound: list[JSON], mine: list[JSON]) -> None:
        node_labels = {
            "kubernetes.io/hostname": self.config.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "nora.dev/process-kubelet": "true",
            **self.config.labels,
        }
        used = sum(_gpu_request(p) for p in mine if p.get("status", {}).get("phase") not in TERMINAL)
        for pod in unbound:
            meta, spec = pod["metadata"], pod["spec"]
            if (
                meta.get("deletionTimestamp")
                or spec.get("schedulerName", "default-scheduler") != "default-scheduler"
            ):
                continue
            selector = spec.get("nodeSelector") or {}
            wanted = _gpu_request(pod)
            if any(node_labels.get(k) != v for k, v in selector.items()):
                self._mark_unschedulable(
                    pod, "0/1 nodes are available: 1 node(s) didn't match Pod's node selector."
                )
            elif used + wanted > self.config.gpus and wanted > 0:
                self._mark_unschedulable(pod, f"0/1 nodes are available: 1 Insufficient {GPU}.")
            else:
                self._bind(pod)
                used += wanted

    def _bind(self, pod: JSON) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        try:
            self.api.post(
                f"/api/v1/namespaces/{ns}/pods/{name}/binding",
                {
                    "apiVersion": "v1",
                    "kind": "Binding",
                    "metadata": {"name": name, "uid": pod["metadata"]["uid"]},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.config.node_name},
                },
            )
        except ApiError as err:
            if err.status not in (404, 409):
                raise

    def _mark_unschedulable(self, pod: JSON, message: str) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._unschedulable:
            return
        self._unschedulable.add(uid)
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        cond = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": now_rfc3339(),
        }
        self.api.patch(
            f"/api/v1/namespaces/{ns}/pods/{name}/status", {"status": {"conditions": [cond]}}, STRATEGIC_PATCH
        )

    # ----- pods -----------------------------------------------------------------------------
    def _sync_pod(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            run = self._runs.get(uid)
        if pod["metadata"].get("deletionTimestamp"):
            self._terminate(pod, run)
            return
        if run is None:
            if pod.get("status", {}).get("phase") in TERMINAL:
                return  # finished before this harness existed
            run = PodRun.create(pod, self.workdir / "pods")
            with self._lock:
                self._runs[uid] = run
                self._by_name[(run.namespace, run.name)] = run
        run.advance(pod, lambda c: self._start_container(pod, run, c))
        self._write_status(run)

    def _write_status(self, run: PodRun) -> None:
        status = run.status()
        if status != run.last_sent:
            self.api.patch(
                f"/api/v1/namespaces/{run.namespace}/pods/{run.name}/status",
                {"status": status},
                STRATEGIC_PATCH,
            )
            run.last_sent = status

    def _terminate(self, pod: JSON, run: PodRun | None) -> None:
        meta, ns, name = pod["metadata"], pod["metadata"]["namespace"], pod["metadata"]["name"]
        if run is not None:
            run.poll()
            if run.any_running():
                if run.kill_deadline is None:
                    grace = meta.get(
                        "deletionGracePeriodSeconds", pod["spec"].get("terminationGracePeriodSeconds", 30)
                    )
                    run.kill_deadline = time.monotonic() + min(float(grace or 0), self.config.kill_grace_cap)
                    run.kill(signal.SIGTERM)
                    return
                if time.monotonic() < run.kill_deadline:
                    return
                run.kill(signal.SIGKILL)
                return  # noticed on the next pass
            run.deleting = True
            self._write_status(run)
        self.api.delete(f"/api/v1/namespaces/{ns}/pods/{name}", grace_seconds=0)

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ) if self.config.inherit_env else {}
        path = env.get("PATH", os.defpath)
        env["PATH"] = os.pathsep.join([*self.config.extra_path, path])
        return env

    def _start_container(self, pod: JSON, run: PodRun, c: ContainerRun) -> None:
        try:
            pod_env = container_env(self.api, pod, c.spec)
        except ConfigError as err:
            c.waiting = ("CreateContainerConfigError", str(err))
            return
        try:
            argv = c.argv(pod_env)
        except ValueError as err:
            c.fail_to_start(str(err))
            return
        env = {
            **self._base_env(),
            "HOSTNAME": run.name,
            **pod_env,
            TERMINATION_LOG_ENV: str(c.termination_log),
        }
        working_dir = c.spec.get("workingDir")
        cwd = Path(working_dir) if working_dir and Path(working_dir).is_dir() else c.directory
        c.directory.mkdir(parents=True, exist_ok=True)
        c.start(argv, env, cwd)
