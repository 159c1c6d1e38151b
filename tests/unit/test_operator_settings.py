"""Operator settings from NORA_* variables, and kopf's settings derived from them."""

from __future__ import annotations

import kopf
import pytest

from nora.operator.handlers import configure
from nora.operator.settings import DEFAULT_TRAIN_COMMAND, OperatorSettings, SettingsError


def test_defaults_without_variables() -> None:
    settings = OperatorSettings.from_env({})
    assert settings == OperatorSettings()
    assert settings.train_command == DEFAULT_TRAIN_COMMAND
    assert (settings.namespaces, settings.peering, settings.metrics_port) == ((), None, 8080)


def test_variables_are_parsed() -> None:
    settings = OperatorSettings.from_env(
        {
            "NORA_NAMESPACES": "team-a, team-b",
            "NORA_PEERING": "nora",
            "NORA_PRIORITY": "7",
            "NORA_TRAIN_COMMAND": '["/venv/bin/python", "-m", "nora", "train", "--genome"]',
            "NORA_TEST_SCORE_COMMAND": "nora test-score --task",
            "NORA_JOB_TTL_SECONDS": "60",
            "NORA_PEERING_LIFETIME_SECONDS": "20",
            "NORA_LIVENESS_ENDPOINT": "",
            "NORA_AMBIENT_CREDENTIALS_NAMESPACES": "team-a,team-c",
            "UNRELATED": "x",
        }
    )
    assert settings.namespaces == ("team-a", "team-b")
    assert (settings.peering, settings.peering_priority(), settings.job_ttl_seconds) == ("nora", 7, 60)
    assert settings.train_command == ("/venv/bin/python", "-m", "nora", "train", "--genome")
    assert settings.test_score_command == ("nora", "test-score", "--task")
    assert settings.liveness_endpoint is None
    assert settings.peering_lifetime_seconds == 20
    assert settings.ambient_credentials_namespaces == ("team-a", "team-c")
    assert OperatorSettings.from_env({"NORA_TRAIN_COMMAND": "nora train --genome"}).train_command == (
        "nora",
        "train",
        "--genome",
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [("NORA_METRICS_PORT", "eighty"), ("NORA_RESYNC_SECONDS", "-1"), ("NORA_TRAIN_COMMAND", "[]")],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{variable}="):
        OperatorSettings.from_env({variable: value})


def test_replicas_without_a_priority_get_distinct_random_ones() -> None:
    settings = OperatorSettings(peering="nora")
    assert len({settings.peering_priority() for _ in range(20)}) > 1


def test_kopf_is_configured_for_bounded_timeouts_and_our_own_markers() -> None:
    ours = OperatorSettings(reconcile_workers=6, peering_lifetime_seconds=15)
    theirs = kopf.OperatorSettings()
    configure(theirs, ours)
    assert theirs.peering.lifetime == 15
    assert theirs.scanning.disabled is False  # cluster-wide: kopf scans namespaces and CRDs
    namespaced = kopf.OperatorSettings()
    configure(namespaced, OperatorSettings(namespaces=("team-a",)))
    assert namespaced.scanning.disabled is True  # named namespaces: no cluster-wide list (least privilege)
    assert theirs.watching.server_timeout is not None
    assert theirs.watching.client_timeout is not None
    assert theirs.persistence.finalizer == "nora.dev/operator"
    assert theirs.execution.max_workers == 6
