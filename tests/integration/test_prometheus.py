"""A real Prometheus scrapes the operator through an evolution run; the chart's dashboard and alerts work.

Prometheus (Debian's 2.42, ``tools/install-prometheus.sh``) scrapes the operator's ``/metrics`` every
second and loads ``helm/nora/files/alerts.yaml`` unchanged. The scrape is set up as the chart's
ServiceMonitor makes the Prometheus Operator set it up (rendered with helm): the job name from the
Service's ``jobLabel``, the target labels it adds (``namespace`` of the operator's Service, ``service``,
``pod``...) and its ``honorLabels``, so the operator's own ``namespace`` label survives as in production.
The operator runs three Populations with the stand-in trainer: ``prom`` evolves three generations to
Succeeded with one genome failing for good (failure series exist), ``doomed`` fails (a genome fails and
``maxFailedGenomes`` is 0) and ``nobucket`` names a bucket that does not exist, so its reconcile passes
fail and count errors. Then:

- the target is up;
- every query of every panel of ``helm/nora/files/dashboard.json`` evaluates without error, at the end
  and over the run, with the dashboard's variables set to this namespace and each Population and to
  Grafana's "All" (``.*``), and returns data for at least one of the Populations; the template
  variables' ``label_values`` queries list the namespace and the Populations;
- every metric name the dashboard and the alerts use is one the operator exports;
- every alert rule was loaded and evaluated with health ``ok``, and each rule's state agrees with its
  expression: firing or pending exactly when the expression returns series (``NoraPopulationFailed`` for
  ``doomed``, ``NoraReconcileErrors`` for ``nobucket``; ``NoraOperatorDown`` stays inactive);
- ``promtool check rules`` accepts the rule file and ``promtool check config`` the generated config; the
  chart's PrometheusRule carries exactly the rule file's groups.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from tests.integration.test_operator_support import (
    REPO,
    population,
    s3_secret,
    wait_phase,
)
from tests.support import prometheus
from tests.support.binaries import require
from tests.support.fixtures import Kubectl
from tests.support.kubeapi import JSON, KubeHTTP
from tests.support.kubelet import ProcessKubelet
from tests.support.operator import OperatorProcess, Operators
from tests.support.prometheus import PanelQuery, Prometheus
from tests.support.s3 import S3Server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

CHART = REPO / "helm" / "nora"
CHART_FILES = CHART / "files"
DASHBOARD = CHART_FILES / "dashboard.json"
ALERTS = CHART_FILES / "alerts.yaml"
MAIN, DOOMED, BROKEN = "prom", "doomed", "nobucket"
RELEASE_NAMESPACE = "nora-system"
FAILING = f"{MAIN}-g0-3"
EXPECTED_ALERT_STATES = {
    "NoraOperatorDown": ("inactive",),
    "NoraPopulationFailed": ("firing",),
    "NoraReconcileErrors": ("pending", "firing"),
}
"""Alerts whose state this scenario decides (the rest only have to agree with their expression)."""


def _chart_file(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"{path.relative_to(REPO)} is missing: the chart must ship it", pytrace=False)
    return path


@pytest.fixture
def operator(operators: Operators, namespace: str) -> OperatorProcess:
    """The operator (not started yet) serving the test's namespace with the stand-in trainer."""
    return operators.make(namespace)


def _render(*values: str) -> list[JSON]:
    """The chart's objects, rendered by helm into ``RELEASE_NAMESPACE`` with ``--set values``."""
    helm = require("helm")["helm"]
    sets = [arg for value in values for arg in ("--set", value)]
    argv = [str(helm), "template", "nora", str(CHART), "--namespace", RELEASE_NAMESPACE, *sets]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _service_monitor_scrape(target: str, rule_files: list[Path]) -> JSON:
    """The scrape config the Prometheus Operator derives from the chart's ServiceMonitor, for ``target``."""
    objects = _render("serviceMonitor.enabled=true")
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    service = next(
        o
        for o in objects
        if o["kind"] == "Service" and selector.items() <= (o["metadata"].get("labels") or {}).items()
    )
    endpoint = monitor["spec"]["endpoints"][0]
    labels = {
        "namespace": service["metadata"]["namespace"],
        "service": service["metadata"]["name"],
        "pod": "nora-operator-0",
        "container": "operator",
        "endpoint": str(endpoint["port"]),
    }
    return prometheus.scrape_config(
        [target],
        rule_files,
        job=service["metadata"]["labels"][monitor["spec"]["jobLabel"]],
        target_labels=labels,
        honor_labels=bool(endpoint.get("honorLabels", False)),
    )


@pytest.fixture
def prom(operator: OperatorProcess, tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus scraping the operator's metrics port as the chart's ServiceMonitor does, with its rules."""
    binary = require("prometheus")["prometheus"]
    config = _service_monitor_scrape(f"127.0.0.1:{operator.metrics_port}", [_chart_file(ALERTS)])
    assert config["scrape_configs"][0]["job_name"] == prometheus.JOB
    server = prometheus.start(binary, tmp_path / "prometheus", config)
    yield server
    server.stop()


def test_the_chart_prometheus_rule_carries_the_rule_file_unchanged() -> None:
    objects = _render("prometheusRule.enabled=true")
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(_chart_file(ALERTS).read_text())["groups"]


def test_promtool_accepts_the_chart_rules_and_the_generated_config(tmp_path: Path) -> None:
    promtool = require("promtool")["promtool"]
    rules = prometheus.promtool(promtool, "check", "rules", str(_chart_file(ALERTS)))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS" in rules.stdout
    loaded = prometheus.rule_file_rules(ALERTS)
    assert loaded, "the rule file holds no rules"
    assert f"{len(loaded)} rules found" in rules.stdout
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps(prometheus.scrape_config(["127.0.0.1:8080"], [ALERTS])))
    checked = prometheus.promtool(promtool, "check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def _run_populations(kube_api: KubeHTTP, kubectl: Kubectl, namespace: str, s3: S3Server) -> None:
    s3_secret(kube_api, namespace, s3)
    fail = {"env": [{"name": "NORA_STANDIN_FAIL", "value": f"{FAILING},{DOOMED}-g0-1"}]}
    kubectl("apply", "-f", "-", stdin=population(MAIN, namespace, s3, maxGenerations=3, template=fail))
    doomed = population(
        DOOMED,
        namespace,
        s3,
        populationSize=2,
        maxGenerations=2,
        selection={"method": "truncation", "survivors": 1, "elites": 1, "tournamentSize": 2},
        retries={"backoffLimit": 0, "maxFailedGenomes": 0},
        template=fail,
    )
    kubectl("apply", "-f", "-", stdin=doomed)
    storage = {
        "bucket": "no-such-bucket",
        "endpoint": s3.endpoint,
        "region": s3.region,
        "secretRef": {"name": "s3"},
    }
    kubectl("apply", "-f", "-", stdin=population(BROKEN, namespace, s3, populationSize=2, storage=storage))


def _scraped_final_state(prom: Prometheus, namespace: str) -> bool:
    """Prometheus holds the end of the run: both finished phases and the main run's generations."""
    where = f'namespace="{namespace}"'
    done = prom.query(f'nora_population_phase{{{where},population="{MAIN}",phase="Succeeded"}} == 1')
    failed = prom.query(f'nora_population_phase{{{where},population="{DOOMED}",phase="Failed"}} == 1')
    generations = prom.query(f'nora_generations_completed_total{{{where},population="{MAIN}"}} == 3')
    errors = prom.query(f'increase(nora_reconcile_errors_total{{{where},population="{BROKEN}"}}[1m]) > 0')
    return bool(done and failed and generations and errors)


@dataclass(frozen=True)
class QueryOutcome:
    """What one dashboard query gave with one set of variables."""

    query: PanelQuery
    variables: str
    expr: str
    instant: int = 0
    points: int = 0
    error: str = ""

    def line(self) -> str:
        status = f"ERROR {self.error}" if self.error else f"{self.instant} series now, {self.points} points"
        return f"{self.query.label} [{self.variables}]: {status}"


def _evaluate(
    prom: Prometheus, query: PanelQuery, name: str, variables: dict[str, str], began: float
) -> QueryOutcome:
    now = time.time()
    span = int(now - began) + 1
    expr = prometheus.expand(query.expr, variables, rate_interval="15s", range_s=span)
    try:
        instant = prom.query(expr)
        matrix = prom.query_range(expr, began, now, 2)
    except prometheus.PrometheusError as error:
        return QueryOutcome(query, name, expr, error=str(error))
    points = sum(1 for series in matrix for _, value in series["values"] if not math.isnan(float(value)))
    return QueryOutcome(query, name, expr, instant=len(instant), points=points)


def _check_dashboard(prom: Prometheus, namespace: str, began: float) -> list[str]:
    dashboard = json.loads(_chart_file(DASHBOARD).read_text())
    queries = prometheus.dashboard_queries(dashboard)
    assert queries, f"{DASHBOARD} has no panel queries"
    settings = {name: {"namespace": namespace, "population": name} for name in (MAIN, DOOMED, BROKEN)}
    settings["All"] = {"namespace": ".*", "population": ".*"}
    problems = []
    print("dashboard queries (points = non-NaN samples over the run):")
    for query in queries:
        outcomes = [_evaluate(prom, query, name, variables, began) for name, variables in settings.items()]
        print("\n".join(o.line() for o in outcomes))
        problems += [f"evaluation failed: {o.line()}\n    {o.expr}" for o in outcomes if o.error]
        if not any(o.points for o in outcomes if o.variables != "All"):
            problems.append(f"no data for any Population: {query.label}: {query.expr}")
    for name, text in prometheus.template_queries(dashboard):
        problems += _check_template(prom, name, text, namespace)
    return problems


def _check_template(prom: Prometheus, name: str, query: str, namespace: str) -> list[str]:
    parsed = prometheus.label_values_query(query)
    if parsed is None:
        return [f"template variable {name}: not a label_values(...) query: {query!r}"]
    match, label = parsed
    if match is not None:
        match = prometheus.expand(match, {"namespace": namespace, "population": MAIN})
    values = prom.label_values(label, match)
    print(f"template variable {name}: {query} -> {values}")
    expected = {"namespace": {namespace}, "population": {MAIN, DOOMED, BROKEN}}.get(label, set())
    missing = expected - set(values)
    return [f"template variable {name} ({query}) lacks {sorted(missing)}: {values}"] if missing else []


def _check_metric_names(operator: OperatorProcess) -> list[str]:
    exposed = prometheus.exposed_names(operator.metrics())
    dashboard = json.loads(DASHBOARD.read_text())
    used: dict[str, set[str]] = {}
    for query in prometheus.dashboard_queries(dashboard):
        for metric in prometheus.metric_names(query.expr):
            used.setdefault(metric, set()).add(f"dashboard panel {query.label}")
    for _, text in prometheus.template_queries(dashboard):
        for metric in prometheus.metric_names(text):
            used.setdefault(metric, set()).add("dashboard variable")
    for rule in prometheus.rule_file_rules(ALERTS):
        for metric in prometheus.metric_names(str(rule["expr"])):
            used.setdefault(metric, set()).add(f"rule {rule.get('alert') or rule.get('record')}")
    assert used, "neither the dashboard nor the alerts use a nora_ metric"
    return [
        f"{metric} (used by {sorted(users)}) is not exported"
        for metric, users in used.items()
        if metric not in exposed
    ]


def _evaluated_rules(prom: Prometheus, after: float) -> list[JSON] | None:
    """The loaded rules once every one was evaluated after ``after`` (epoch seconds), else None."""
    rules = prom.rules()
    for rule in rules:
        stamp = str(rule.get("lastEvaluation", ""))
        if stamp.startswith("0001-") or _epoch(stamp) < after:
            return None
    return rules


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def _check_alerts(prom: Prometheus) -> list[str]:
    expected = prometheus.rule_file_rules(ALERTS)
    names = {str(rule.get("alert") or rule.get("record")) for rule in expected}
    unknown = set(EXPECTED_ALERT_STATES) - names
    assert not unknown, f"{ALERTS.name} lacks the alerts {sorted(unknown)} this test expects"

    def settled() -> list[JSON] | None:
        rules = _evaluated_rules(prom, time.time() - 0.5)
        if rules is None:
            return None
        states = {str(r["name"]): r.get("state") for r in rules}
        return rules if all(states.get(n) in s for n, s in EXPECTED_ALERT_STATES.items()) else None

    try:
        rules = wait_for(settled, timeout=60, what="alert rules evaluated in their expected states")
    except AssertionError as error:
        rules = prom.rules()
        return [f"{error}; rules: {json.dumps(rules, indent=1)[:4000]}"]
    loaded = {str(r["name"]): r for r in rules}
    problems = [f"rule {n} was not loaded" for n in sorted(names - set(loaded))]
    for name, rule in sorted(loaded.items()):
        print(f"rule {name}: health {rule['health']}, state {rule.get('state')}, alerts {rule.get('alerts')}")
        if rule["health"] != "ok" or rule.get("lastError"):
            problems.append(f"rule {name}: health {rule['health']}, lastError {rule.get('lastError')!r}")
        if rule.get("type") == "alerting":
            active = bool(prom.query(str(rule["query"])))
            if active != (rule.get("state") in ("pending", "firing")):
                problems.append(f"rule {name}: state {rule.get('state')} but its expression gives {active=}")
    return problems


def test_prometheus_scrapes_a_run_and_the_dashboard_and_alerts_work(
    kube_api: KubeHTTP,
    kubectl: Kubectl,
    kubelet: ProcessKubelet,
    namespace: str,
    s3_server: S3Server,
    operator: OperatorProcess,
    prom: Prometheus,
) -> None:
    began = time.time()
    operator.start()
    _run_populations(kube_api, kubectl, namespace, s3_server)
    wait_phase(kube_api, namespace, MAIN, ("Succeeded",), 240, operator)
    wait_phase(kube_api, namespace, DOOMED, ("Failed",), 120, operator)
    wait_for(
        lambda: _scraped_final_state(prom, namespace),
        timeout=60,
        what="Prometheus to scrape the end of the run",
        interval=0.5,
        on_timeout=lambda: f"series: {prom.series('nora_population_phase')[:6]}\n{prom.process.describe()}",
    )
    targets = prom.targets()
    assert [t["health"] for t in targets] == ["up"], targets
    assert targets[0]["scrapeUrl"] == f"http://127.0.0.1:{operator.metrics_port}/metrics"

    problems = _check_metric_names(operator)
    problems += _check_dashboard(prom, namespace, began)
    problems += _check_alerts(prom)
    assert not problems, "\n".join(problems)
    assert operator.tracebacks() <= _broken_tracebacks(operator), operator.describe()


def _broken_tracebacks(operator: OperatorProcess) -> int:
    """Tracebacks the operator logged for ``nobucket``'s failing passes (the only ones expected)."""
    text = operator.log.read_text(errors="replace")
    return text.count(f"reconciling {operator.namespace}/{BROKEN} failed")
