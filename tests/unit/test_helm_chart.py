"""The Helm chart helm/nora, rendered offline with the pinned helm: lint, toggles, modes, security, docs.

Also the files generated from it or next to it: the values table of its README, the plain install in
manifests/install, the CRDs in its crds/ folder, and the Grafana dashboard and alerts (whose queries may
name only metrics the operator registers).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from tools import chart_values_table, render_install

from nora.api import crd
from nora.operator.metrics import Metrics
from nora.operator.settings import OperatorSettings
from tests.support.binaries import REPO_ROOT, require
from tests.support.helm import (
    CHART,
    CI_VALUES,
    Doc,
    env_of,
    grants,
    helm,
    of_kind,
    one,
    pod_specs,
    render,
    rules_of,
)

DASHBOARD = CHART / "files" / "dashboard.json"
ALERTS = CHART / "files" / "alerts.yaml"
POPULATION_LABELS = {"namespace", "population"}

# The operator's API use (src/nora/operator/cluster.py, handlers.py; kopf), one grant per line: a rule the
# chart adds must be added here on purpose, and a grant the operator stops using must be removed.
NAMESPACED_GRANTS = {
    ("nora.dev", "populations", "get"), ("nora.dev", "populations", "list"),
    ("nora.dev", "populations", "watch"), ("nora.dev", "populations", "patch"),
    ("nora.dev", "populations/status", "patch"), ("nora.dev", "generations/status", "patch"),
    ("nora.dev", "generations", "get"), ("nora.dev", "generations", "create"),
    ("nora.dev", "populations/finalizers", "update"), ("nora.dev", "generations/finalizers", "update"),
    ("batch", "jobs", "list"), ("batch", "jobs", "watch"), ("batch", "jobs", "create"),
    ("", "pods", "list"), ("", "secrets", "get"), ("", "events", "create"),
    ("", "persistentvolumeclaims", "create"), ("", "events", "list"),
}  # fmt: skip
CLUSTER_GRANTS = {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
PEERING_VERBS = ("get", "list", "watch", "patch")


def _objects(*sets: str, values: tuple[Path, ...] = ()) -> list[Doc]:
    return render(release="nora", namespace="nora-system", values=values, sets=sets)


def _kinds(docs: list[Doc]) -> set[str]:
    return {doc["kind"] for doc in docs}


# ----- lint and rendering -------------------------------------------------------------------------------
@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "chart-defaults")
def test_helm_lint_strict_passes(values: Path | None) -> None:
    args = ["lint", str(CHART), "--strict", *(["--values", str(values)] if values else [])]
    result = helm(*args)
    assert "0 chart(s) failed" in result.stdout, result.stdout


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "nora"
    broken.mkdir()
    for item in ("Chart.yaml", "values.yaml"):
        (broken / item).write_text((CHART / item).read_text())
    (broken / "templates").mkdir()
    (broken / "templates" / "bad.yaml").write_text("kind: ConfigMap\nmetadata: {{ .Values.nope.missing }}\n")
    assert helm("lint", str(broken), "--strict", check=False).returncode != 0


def test_the_ci_scenarios_exist() -> None:
    assert {p.name for p in CI_VALUES} >= {
        "default-values.yaml",
        "namespaced-values.yaml",
        "monitoring-values.yaml",
        "ha-values.yaml",
    }


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


def test_defaults_render_a_cluster_wide_operator_and_nothing_optional() -> None:
    docs = _objects()
    assert _kinds(docs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"}
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    env = env_of(deployment)
    assert "NORA_NAMESPACES" not in env
    assert not {"NORA_PEERING", "NORA_PEERING_LIFETIME_SECONDS"} & set(env)
    assert env["NORA_METRICS_PORT"] == "8080"
    assert env["NORA_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8081/healthz"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/nora-dev/nora-operator:0.1.0"
    assert container["args"] == ["operator"]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nora", "namespace": "nora-system"}]


@pytest.mark.parametrize(
    ("setting", "kind"),
    [
        ("serviceMonitor.enabled", "ServiceMonitor"),
        ("prometheusRule.enabled", "PrometheusRule"),
        ("dashboards.enabled", "ConfigMap"),
        ("networkPolicy.enabled", "NetworkPolicy"),
    ],
)
def test_each_optional_object_follows_its_toggle(setting: str, kind: str) -> None:
    assert of_kind(_objects(f"{setting}=false"), kind) == []
    assert len(of_kind(_objects(f"{setting}=true"), kind)) == 1


def test_the_image_by_digest_tag_and_pull_secrets() -> None:
    digest = "sha256:" + "ab" * 32
    docs = _objects(f"image.digest={digest}", "image.tag=9.9", "imagePullSecrets={regcred}")
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == f"ghcr.io/nora-dev/nora-operator@{digest}"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    tagged = one(_objects("image.tag=9.9"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert tagged["image"] == "ghcr.io/nora-dev/nora-operator:9.9"


def test_operator_settings_become_nora_environment_variables() -> None:
    docs = _objects(
        "operator.trainCommand={nora,train,--genome}",
        "operator.testScoreCommand={nora,test-score,--task}",
        "operator.resyncSeconds=7",
        "operator.s3Endpoint=http://s3.local:9000",
        "operator.verbose=true",
        "extraEnv[0].name=NORA_MIN_INTERVAL_SECONDS",
        "extraEnv[0].value=1",
    )
    deployment = one(docs, "Deployment")
    env = env_of(deployment)
    assert json.loads(env["NORA_TRAIN_COMMAND"]) == ["nora", "train", "--genome"]
    assert json.loads(env["NORA_TEST_SCORE_COMMAND"]) == ["nora", "test-score", "--task"]
    assert env["NORA_RESYNC_SECONDS"] == "7"
    assert env["NORA_S3_ENDPOINT"] == "http://s3.local:9000"
    assert env["NORA_MIN_INTERVAL_SECONDS"] == "1"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"] == ["operator", "--verbose"]
    settings = OperatorSettings.from_env(env)  # every value the chart writes parses
    assert settings.resync_seconds == 7.0
    assert settings.liveness_endpoint == "http://0.0.0.0:8081/healthz"


# ----- modes: namespaced, high availability ------------------------------------------------------------
def test_namespaced_mode_renders_roles_per_namespace_and_no_cluster_rights() -> None:
    docs = _objects("watchNamespaces={team-a,team-b}")
    assert of_kind(docs, "ClusterRole", "ClusterRoleBinding") == []
    roles = of_kind(docs, "Role")
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "nora"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nora", "namespace": "nora-system"}]
    for role in roles:
        assert grants(role["rules"]) == NAMESPACED_GRANTS
    assert env_of(one(docs, "Deployment"))["NORA_NAMESPACES"] == "team-a,team-b"


def test_a_namespace_listed_twice_is_refused() -> None:
    result = helm("template", "nora", str(CHART), "--set", "watchNamespaces={a,a}", check=False)
    assert result.returncode != 0
    assert "watchNamespaces: every namespace may appear only once" in result.stderr


def test_more_than_one_replica_adds_cluster_peering() -> None:
    docs = _objects("replicas=2")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert env_of(deployment)["NORA_PEERING"] == "nora"
    assert env_of(deployment)["NORA_PEERING_LIFETIME_SECONDS"] == "60"
    settings = OperatorSettings.from_env(env_of(deployment))
    assert (settings.peering, settings.peering_lifetime_seconds) == ("nora", 60)
    assert "NORA_PRIORITY" not in env_of(deployment)  # each replica draws its own
    peering = one(docs, "ClusterKopfPeering")
    assert (peering["apiVersion"], peering["metadata"]["name"]) == ("kopf.dev/v1", "nora")
    assert grants(one(docs, "ClusterRole")["rules"]) == (
        NAMESPACED_GRANTS | CLUSTER_GRANTS | {("kopf.dev", "clusterkopfpeerings", v) for v in PEERING_VERBS}
    )
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"]


def test_namespaced_replicas_peer_through_a_kopfpeering_in_each_namespace() -> None:
    docs = _objects("replicas=3", "watchNamespaces={team-a,team-b}", "peering.name=ring")
    peerings = of_kind(docs, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("team-a", "ring"),
        ("team-b", "ring"),
    ]
    assert of_kind(docs, "ClusterKopfPeering") == []
    for role in of_kind(docs, "Role"):
        assert grants(role["rules"]) - NAMESPACED_GRANTS == {
            ("kopf.dev", "kopfpeerings", v) for v in PEERING_VERBS
        }
    assert env_of(one(docs, "Deployment"))["NORA_PEERING"] == "ring"


def test_one_replica_has_no_peering_at_all() -> None:
    docs = _objects("replicas=1")
    assert of_kind(docs, "ClusterKopfPeering", "KopfPeering", "PodDisruptionBudget") == []
    assert not {g for g in grants(one(docs, "ClusterRole")["rules"]) if g[0] == "kopf.dev"}


# ----- security ----------------------------------------------------------------------------------------
def _scenarios() -> list[tuple[str, list[Doc]]]:
    scenarios = [(path.name, render(values=(path,))) for path in CI_VALUES]
    return [*scenarios, ("namespaced-ha", render(sets=("replicas=2", "watchNamespaces={a,b}")))]


def test_every_pod_spec_meets_the_restricted_pod_security_standard() -> None:
    for scenario, docs in _scenarios():
        specs = pod_specs(docs)
        assert specs, scenario
        for name, spec in specs:
            where = f"{scenario}: {name}"
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True, where
            assert isinstance(pod["runAsUser"], int), where
            assert pod["runAsUser"] > 0, where
            assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert not {"hostNetwork", "hostPID", "hostIPC"} & {k for k, v in spec.items() if v}, where
            assert spec["automountServiceAccountToken"] is True, where  # asked for explicitly
            mounts = {}
            for container in spec["containers"] + spec.get("initContainers", []):
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, where
                assert context["readOnlyRootFilesystem"] is True, where
                assert context["capabilities"] == {"drop": ["ALL"]}, where
                assert context.get("privileged") is not True, where
                assert isinstance(context["runAsUser"], int), where
                assert context["runAsUser"] > 0, where
                assert {"limits", "requests"} <= set(container["resources"]), where
                mounts.update({m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])})
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            assert all(
                set(v) <= {"name", "emptyDir", "configMap", "secret", "projected"} for v in volumes.values()
            )


def test_the_serviceaccount_token_is_mounted_only_where_asked() -> None:
    account = one(_objects(), "ServiceAccount")
    assert account["automountServiceAccountToken"] is False


def test_probes_use_kopfs_health_endpoint() -> None:
    deployment = one(_objects("healthPort=9099"), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 9099}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert env_of(deployment)["NORA_LIVENESS_ENDPOINT"] == "http://0.0.0.0:9099/healthz"


def test_rbac_has_no_wildcards_and_exactly_the_verbs_the_operator_uses() -> None:
    for scenario, docs in _scenarios():
        rules = rules_of(docs)
        assert rules, scenario
        for role, rule in rules:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{scenario}: {role} {rule}"
            assert not {"resourceNames", "nonResourceURLs"} & set(rule), f"{scenario}: {role}"
        allowed = grants(rule for _, rule in rules)
        assert {verb for group, resource, verb in allowed if resource == "secrets"} == {"get"}, scenario
        assert not {
            g for g in allowed if g[2] in ("delete", "deletecollection", "escalate", "bind", "impersonate")
        }
        peering = {(group, resource, verb) for group, resource, verb in allowed if group == "kopf.dev"}
        assert allowed - peering <= NAMESPACED_GRANTS | CLUSTER_GRANTS, scenario
    cluster = grants(one(_objects(), "ClusterRole")["rules"])
    assert cluster == NAMESPACED_GRANTS | CLUSTER_GRANTS


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    docs = _objects("rbac.create=false", "serviceAccount.create=false", "serviceAccount.name=preset")
    assert of_kind(docs, "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount") == []
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "preset"


def test_network_policy_admits_only_metrics_and_reaches_only_dns_apiserver_and_s3() -> None:
    docs = render(values=(CHART / "ci" / "monitoring-values.yaml",))
    spec = one(docs, "NetworkPolicy")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert [rule["ports"] for rule in spec["ingress"]] == [[{"port": "metrics", "protocol": "TCP"}]]
    assert spec["ingress"][0]["from"][0]["namespaceSelector"]
    egress = {tuple(p["port"] for p in rule["ports"]): rule.get("to") for rule in spec["egress"]}
    assert set(egress) == {(53, 53), (443, 6443), (9000,)}
    assert egress[(443, 6443)] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    assert egress[(9000,)] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    health = one(
        render(
            sets=("networkPolicy.enabled=true", "networkPolicy.healthFrom[0].podSelector.matchLabels.a=b")
        ),
        "NetworkPolicy",
    )
    assert [rule["ports"][0]["port"] for rule in health["spec"]["ingress"]] == ["metrics", "health"]


# ----- monitoring objects --------------------------------------------------------------------------------
def test_the_service_monitor_scrapes_the_metrics_service_as_job_nora_operator() -> None:
    docs = render(values=(CHART / "ci" / "monitoring-values.yaml",))
    monitor, service = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["jobLabel"] == "nora.dev/metrics-job"
    assert service["metadata"]["labels"]["nora.dev/metrics-job"] == "nora-operator"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"], endpoint["honorLabels"]) == ("metrics", "/metrics", True)
    assert service["spec"]["ports"][0]["name"] == "metrics"


def test_the_prometheus_rule_embeds_the_alerts_file_unchanged() -> None:
    rule = one(_objects("prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    annotations = json.dumps(rule["spec"])
    assert "{{ $labels.namespace }}/{{ $labels.population }}" in annotations


def test_the_dashboard_configmap_carries_the_sidecar_label_and_the_json() -> None:
    config = one(_objects("dashboards.enabled=true"), "ConfigMap")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config["data"]["nora-operator.json"]) == json.loads(DASHBOARD.read_text())
    moved = one(
        _objects(
            "dashboards.enabled=true",
            "dashboards.label=dash",
            "dashboards.labelValue=yes",
            "dashboards.namespace=grafana",
        ),
        "ConfigMap",
    )
    assert moved["metadata"]["labels"]["dash"] == "yes"
    assert moved["metadata"]["namespace"] == "grafana"
    assert "grafana_dashboard" not in moved["metadata"]["labels"]


def _registered_metrics() -> dict[str, set[str]]:
    """Every series name the operator's Metrics class can export, and its label names."""
    names: dict[str, set[str]] = {}
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = set(metric._labelnames)
        family = metric._name
        suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
        for suffix in suffixes[metric._type]:
            names[family + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    names["up"] = {"job", "instance"}
    return names


SELECTOR = re.compile(r"\b(?P<metric>[a-z_:][a-z0-9_:]*)\s*\{(?P<matchers>[^}]*)\}")
MATCHER = re.compile(r"(?P<label>[a-z_][a-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
BY = re.compile(r"\bby\s*\((?P<labels>[^)]*)\)")


def _check_expr(expr: str, known: dict[str, set[str]]) -> list[str]:
    """Problems of one PromQL expression: unknown metrics, labels the metrics do not have."""
    problems = []
    used = set(re.findall(r"\bnora_[a-z0-9_]+\b", expr)) | (
        {"up"} if re.search(r"\bup\s*\{", expr) else set()
    )
    if not used:
        problems.append(f"{expr}: names no metric of the operator")
    problems += [f"{expr}: {name} is not a metric the operator registers" for name in used - set(known)]
    labels = set().union(*(known.get(name, set()) for name in used)) if used else set()
    for match in SELECTOR.finditer(expr):
        for label in MATCHER.findall(match["matchers"]):
            if label not in known.get(match["metric"], set()):
                problems.append(f"{expr}: {match['metric']} has no label {label}")
    for match in BY.finditer(expr):
        grouped = {label.strip() for label in match["labels"].split(",") if label.strip()}
        problems += [f"{expr}: grouped by {label}, which no metric has" for label in grouped - labels]
    return problems


def test_the_metric_names_in_this_test_follow_the_operator() -> None:
    known = _registered_metrics()
    assert {"nora_population_phase", "nora_current_generation", "nora_job_duration_seconds_bucket"} <= set(
        known
    )
    assert known["nora_job_duration_seconds_bucket"] == POPULATION_LABELS | {"outcome", "le"}
    assert _check_expr('rate(nora_nonexistent_total{namespace="a"}[5m])', known)
    assert _check_expr('sum by (phase) (nora_best_fitness{namespace="a"})', known)
    assert _check_expr('nora_genomes{outcome="x"}', known)


def _dashboard_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_is_valid_json_with_namespace_and_population_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    for name in ("namespace", "population"):
        variable = variables[name]
        assert (variable["type"], variable["multi"], variable["includeAll"], variable["allValue"]) == (
            "query", True, True, ".*",
        )  # fmt: skip
        assert "label_values(nora_" in variable["definition"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " / ".join(panel["title"] for panel in dashboard["panels"]).lower()
    needed_titles = (
        "fitness", "generation", "genomes by phase", "job duration", "breeding", "reconcile errors",
        "reconcile pass duration", "operator up",
    )  # fmt: skip
    for needed in needed_titles:
        assert needed in titles, needed


def test_every_dashboard_query_names_only_registered_metrics_and_their_labels() -> None:
    known = _registered_metrics()
    targets = _dashboard_targets()
    assert len(targets) >= 10
    problems = [p for _, expr in targets for p in _check_expr(expr, known)]
    assert problems == []
    for title, expr in targets:
        selectors = [m for m in SELECTOR.finditer(expr) if known.get(m["metric"], set()) >= POPULATION_LABELS]
        for match in selectors:  # population-scoped metrics follow both variables
            assert 'namespace=~"$namespace"' in match["matchers"], title
            assert 'population=~"$population"' in match["matchers"], title


def test_every_alert_names_only_registered_metrics() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {"NoraPopulationFailed", "NoraGenomesFailing", "NoraOperatorDown", "NoraReconcileErrors"} <= set(
        alerts
    )
    known = _registered_metrics()
    assert [p for rule in alerts.values() for p in _check_expr(rule["expr"], known)] == []
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
    assert 'nora_population_phase{phase="Failed"}' in alerts["NoraPopulationFailed"]["expr"]
    assert "absent(up{" in alerts["NoraOperatorDown"]["expr"]


# ----- generated files -------------------------------------------------------------------------------
def test_every_value_is_documented_and_the_readme_table_is_current() -> None:
    assert chart_values_table.problems((CHART / "values.yaml").read_text()) == []
    assert chart_values_table.main(["--check"]) == 0


def test_the_values_check_reports_undocumented_and_stale(tmp_path: Path) -> None:
    text = (
        "# -- documented\na: 1\nb:\n  # -- inner\n  c: true\n  d: x\n"
        "# -- whole map\ne:\n  f: 1\n  # -- twice\n  g: 2\n"
    )
    assert chart_values_table.problems(text) == [
        "b.d: no `# --` comment on it or on an enclosing map",
        "e.g: documented more than once (['e', 'e.g'])",
    ]
    rows = {row.key: row for row in chart_values_table.documentation(text)}
    assert (rows["a"].type, rows["a"].default, rows["a"].description) == ("int", "`1`", "documented")
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "values.yaml").write_text("# -- (string) the name\n# @default -- computed\nname: null\n")
    (chart / "README.md").write_text(
        f"intro\n{chart_values_table.BEGIN}\nold\n{chart_values_table.END}\nend\n"
    )
    assert chart_values_table.main(["--check", "--chart", str(chart)]) == 1
    assert chart_values_table.main(["--chart", str(chart)]) == 0
    assert chart_values_table.main(["--check", "--chart", str(chart)]) == 0
    assert "| `name` | string | computed | the name |" in (chart / "README.md").read_text()


def test_the_chart_crds_are_the_generated_ones() -> None:
    names = {path.name for path in (CHART / "crds").iterdir()}
    assert names == set(crd.rendered()) == {p.name for p in (REPO_ROOT / "crds").glob("*.yaml")}
    for directory in crd.DEFAULT_DIRS:
        assert crd.drifted(directory) == [], f"run `python -m nora.api.crd` ({directory})"
    assert crd.main(["--check"]) == 0


def test_the_crd_check_fails_when_the_chart_copy_drifts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, chart = tmp_path / "crds", tmp_path / "chart-crds"
    monkeypatch.setattr(crd, "DEFAULT_DIRS", (repo, chart))
    assert crd.main([]) == 0
    assert crd.main(["--check"]) == 0
    stale = chart / "kopf.dev_peerings.yaml"
    stale.write_text(stale.read_text().replace("Namespaced", "Cluster"))
    assert crd.main(["--check"]) == 1
    assert f"{stale}: out of date" in capsys.readouterr().err


def test_the_plain_install_is_the_chart_rendered_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELM", str(require("helm")["helm"]))
    assert render_install.main(["--check"]) == 0
    install = REPO_ROOT / "manifests" / "install"
    assert yaml.safe_load((install / "kustomization.yaml").read_text())["resources"] == ["nora.yaml"]
    docs: list[Any] = [d for d in yaml.safe_load_all((install / "nora.yaml").read_text()) if d]
    assert docs[0]["kind"] == "Namespace"
    assert docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    chart = render(include_crds=True)
    assert [(d["kind"], d["metadata"]["name"]) for d in docs[1:]] == [
        (d["kind"], d["metadata"]["name"]) for d in chart
    ]


def test_the_install_check_fails_when_the_files_drift(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELM", str(require("helm")["helm"]))
    assert render_install.main(["--dir", str(tmp_path)]) == 0
    assert render_install.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "nora.yaml").write_text(
        (tmp_path / "nora.yaml").read_text().replace("replicas: 1", "replicas: 5")
    )
    assert render_install.main(["--check", "--dir", str(tmp_path)]) == 1
