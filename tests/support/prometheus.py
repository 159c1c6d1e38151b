"""A real Prometheus for tests, and what the tests need to check dashboards and alert rules against it.

- :func:`start` runs the pinned Prometheus (``tools/install-prometheus.sh``) on 127.0.0.1 (free port)
  with a generated config (:func:`scrape_config`: one static job, 1 s scrape and evaluation interval, the
  given rule files), TSDB in the test's folder, bounded in time by ``timeout(1)`` as well as stopped by
  the caller; :class:`Prometheus` wraps its HTTP API (query, query_range, rules, targets, series);
- :func:`promtool` runs ``promtool`` (``check rules``, ``check config``);
- :func:`dashboard_queries` and :func:`expand` turn a Grafana dashboard's panel targets into PromQL that
  Prometheus can run (template variables and ``$__*`` intervals substituted);
- :func:`metric_names` and :func:`exposed_names` compare the metrics an expression names with those the
  operator exports (an expression naming a missing metric evaluates fine and silently shows nothing).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.controlplane import free_port
from tests.support.procs import ManagedProcess
from tests.support.waiting import wait_for

JOB = "nora-operator"
JSON = dict[str, Any]
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
}


class PrometheusError(RuntimeError):
    """Prometheus answered with ``status: error`` (a bad query, an unknown endpoint...)."""


def scrape_config(
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    *,
    job: str = JOB,
    interval: str = "1s",
    target_labels: Mapping[str, str] | None = None,
    honor_labels: bool = False,
) -> JSON:
    """A Prometheus config scraping ``targets`` (host:port, path /metrics) as ``job``."""
    static: JSON = {"targets": list(targets)}
    if target_labels:
        static["labels"] = dict(target_labels)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(path.resolve()) for path in rule_files],
        "scrape_configs": [{"job_name": job, "honor_labels": honor_labels, "static_configs": [static]}],
    }


@dataclass
class Prometheus:
    """A running Prometheus: its URL, config file and process."""

    url: str
    config: Path
    process: ManagedProcess

    def api(self, endpoint: str, **params: str | Sequence[str]) -> Any:
        """GET ``/api/v1/<endpoint>``; the ``data`` of a success, else :class:`PrometheusError`."""
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"{self.url}/api/v1/{endpoint}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as error:
            raw = error.read().decode(errors="replace")
            try:
                body = json.loads(raw)
            except json.JSONDecodeError:
                raise PrometheusError(f"GET {url} -> HTTP {error.code}: {raw[:500]}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[JSON]:
        """The instant vector (or scalar, as one sample) of ``expr`` now (or at ``at``, epoch seconds)."""
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        return _samples(self.api("query", **params))

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[JSON]:
        """The range matrix of ``expr`` over ``[start, end]``."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return _samples(self.api("query_range", **params))

    def rules(self) -> list[JSON]:
        """Every rule Prometheus loaded (each with ``group`` added): name, query, health, lastError..."""
        return [
            {**rule, "group": group["name"]}
            for group in self.api("rules")["groups"]
            for rule in group["rules"]
        ]

    def targets(self, job: str = JOB) -> list[JSON]:
        """The active scrape targets of ``job``."""
        return [t for t in self.api("targets")["activeTargets"] if t["labels"].get("job") == job]

    def series(self, match: str) -> list[JSON]:
        """The label sets of the series that ``match`` (a series selector) selects."""
        return list(self.api("series", **{"match[]": [match]}))

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        """The values of ``label``, optionally only over series that ``match`` selects."""
        params = {"match[]": [match]} if match else {}
        return list(self.api(f"label/{label}/values", **params))

    def ready(self) -> bool:
        """True when ``/-/ready`` answers 200 (raises if the process exited)."""
        self.process.ensure_alive()
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
            return bool(reply.status == 200)

    def stop(self) -> None:
        self.process.stop(grace=10)


def _samples(data: Any) -> list[JSON]:
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return list(data["result"])


def start(
    binary: Path,
    workdir: Path,
    config: JSON,
    *,
    timeout: float = 60.0,
    lifetime: float = 900.0,
) -> Prometheus:
    """Start Prometheus on 127.0.0.1 with ``config`` and wait until it is ready.

    ``lifetime`` bounds the process even if the test run is killed before it can stop it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    argv = [
        *_time_bound(lifetime),
        str(binary),
        f"--config.file={config_path}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=2h",
        "--log.level=warn",
    ]
    process = ManagedProcess("prometheus", argv, workdir / "prometheus.log").start()
    server = Prometheus(url=f"http://127.0.0.1:{port}", config=config_path, process=process)
    try:
        wait_for(server.ready, timeout=timeout, what="Prometheus /-/ready", on_timeout=process.describe)
    except BaseException:
        server.stop()
        raise
    return server


def _time_bound(seconds: float) -> list[str]:
    found = shutil.which("timeout")
    return [found, "--kill-after=10", f"{seconds:.0f}"] if found else []


def promtool(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``promtool args...`` (never raises on a non-zero exit; the caller asserts)."""
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


# ----- Grafana dashboards ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    """One Prometheus query of a dashboard panel."""

    panel: str
    ref: str
    expr: str

    @property
    def label(self) -> str:
        return f"{self.panel!r}/{self.ref}"


def _panels(panels: Sequence[JSON]) -> Iterator[JSON]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])  # collapsed rows nest their panels


def dashboard_queries(dashboard: JSON) -> list[PanelQuery]:
    """Every panel target with a PromQL ``expr`` (rows and nested panels included)."""
    found = []
    for panel in _panels(dashboard.get("panels") or []):
        for index, target in enumerate(panel.get("targets") or []):
            expr = str(target.get("expr") or "").strip()
            if expr:
                found.append(PanelQuery(str(panel.get("title", "")), target.get("refId", str(index)), expr))
    return found


def template_queries(dashboard: JSON) -> list[tuple[str, str]]:
    """``(variable name, query)`` of the dashboard's query-type template variables."""
    found = []
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if text:
            found.append((str(variable["name"]), str(text)))
    return found


_BUILTINS = ("__rate_interval", "__interval_ms", "__interval", "__range_s", "__range_ms", "__range")


def expand(expr: str, variables: Mapping[str, str], rate_interval: str = "15s", range_s: int = 300) -> str:
    """``expr`` with Grafana's ``$var``, ``${var}``, ``${var:format}`` and ``[[var]]`` substituted from
    ``variables`` and the built-in intervals set (``$__rate_interval``, ``$__interval``, ``$__range``...)."""
    values = {
        "__rate_interval": rate_interval,
        "__interval": "2s",
        "__interval_ms": "2000",
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
        "__range_ms": str(range_s * 1000),
        **variables,
    }
    names = sorted(values, key=len, reverse=True)  # longest first: $__interval_ms before $__interval
    alternatives = "|".join(re.escape(n) for n in names)
    pattern = re.compile(
        rf"\$\{{({alternatives})(?::[a-z]+)?\}}|\[\[({alternatives})\]\]|\$({alternatives})\b"
    )

    def replace(match: re.Match[str]) -> str:
        return values[next(group for group in match.groups() if group)]

    expanded = pattern.sub(replace, expr)
    unknown = re.findall(r"\$\{?[A-Za-z_]\w*|\[\[\w+\]\]", expanded)
    if unknown:
        raise ValueError(f"unknown Grafana variables {unknown} in {expr!r}")
    return expanded


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<match>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$")


def label_values_query(query: str) -> tuple[str | None, str] | None:
    """``(series selector or None, label)`` of a Grafana ``label_values(...)`` query, else None."""
    found = _LABEL_VALUES.match(query)
    return (found.group("match"), found.group("label")) if found else None


# ----- metric names ---------------------------------------------------------------------------------


def metric_names(expr: str, prefix: str = "nora_") -> set[str]:
    """The metric names with ``prefix`` that ``expr`` mentions."""
    return set(re.findall(rf"\b{re.escape(prefix)}[a-zA-Z0-9_]*\b", expr))


def exposed_names(exposition: str) -> set[str]:
    """Every sample name a ``/metrics`` text can carry, from its metric families and their types
    (``nora_x_total`` for a counter ``nora_x``, ``_bucket``/``_count``/``_sum`` for a histogram...),
    including families that have no sample yet."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def rule_file_rules(path: Path) -> list[JSON]:
    """The rules (alerting and recording) of a Prometheus rule file, each with its ``group`` added."""
    document = yaml.safe_load(path.read_text()) or {}
    return [
        {**rule, "group": group["name"]}
        for group in document.get("groups") or []
        for rule in group.get("rules") or []
    ]
