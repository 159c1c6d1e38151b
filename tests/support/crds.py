"""The project's CRDs in the test control plane."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.support.fixtures import Kubectl
from tests.support.waiting import wait_for

CRDS = Path(__file__).resolve().parents[2] / "crds"


def install_crds(kubectl: Kubectl, *paths: Path) -> None:
    """Apply CRD files (default: the generated ones in crds/) and poll until each is Established.

    Polling ``get`` rather than ``kubectl wait``: kubectl 1.32's ``wait --for=condition`` fails at once
    ("accessor error") when it reads a CRD whose status has no conditions yet.
    """
    files = paths or tuple(sorted(CRDS.glob("*.yaml")))
    for path in files:
        kubectl("apply", "-f", str(path))
    names = [doc["metadata"]["name"] for path in files for doc in yaml.safe_load_all(path.read_text()) if doc]
    established = '{.status.conditions[?(@.type=="Established")].status}'

    def ready() -> bool:
        return all(
            kubectl("get", f"crd/{name}", "-o", f"jsonpath={established}", check=False).stdout == "True"
            for name in names
        )

    wait_for(ready, timeout=60, what=f"CRDs {', '.join(names)} Established", interval=0.2)
