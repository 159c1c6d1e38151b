"""Load a ``Population`` manifest (the YAML ``kubectl apply`` takes) and validate it completely.

Every problem is reported with its field path, schema errors and cross-field rules alike, e.g.
``spec.selection.survivors: 9 exceeds spec.populationSize (8)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nora.api.base import API_GROUP_VERSION, ApiValidationError, describe_validation_error
from nora.api.population import PopulationSpec, semantic_problems

NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME_LENGTH = 40
"""Job names are ``<population>-g<N>-<i>`` and must fit in 63 characters."""


@dataclass(frozen=True)
class PopulationManifest:
    """A validated Population: its name, namespace and spec."""

    name: str
    namespace: str
    spec: PopulationSpec


def _metadata_problems(document: Mapping[str, Any]) -> list[str]:
    problems = []
    if document.get("apiVersion") != API_GROUP_VERSION:
        problems.append(f"apiVersion: must be {API_GROUP_VERSION} (got {document.get('apiVersion')!r})")
    if document.get("kind") != "Population":
        problems.append(f"kind: must be Population (got {document.get('kind')!r})")
    name = (document.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        problems.append(
            f"metadata.name: must be lowercase letters, digits and '-', at most {MAX_NAME_LENGTH} characters "
            f"(got {name!r})"
        )
    return problems


def parse_population(document: Any) -> PopulationManifest:
    """Validate a parsed manifest.

    Raises:
        ApiValidationError: listing every problem with its field path.
    """
    if not isinstance(document, Mapping):
        raise ApiValidationError([f"(root): expected a Population mapping, got {type(document).__name__}"])
    problems = _metadata_problems(document)
    spec = None
    try:
        spec = PopulationSpec.model_validate(document.get("spec") or {})
    except ValidationError as error:
        problems.extend(describe_validation_error(error, prefix="spec").problems)
    if spec is not None:
        problems.extend(semantic_problems(spec))
    if problems or spec is None:
        raise ApiValidationError(problems)
    metadata = document["metadata"]
    return PopulationManifest(
        name=metadata["name"], namespace=metadata.get("namespace", "default"), spec=spec
    )


def load_population(path: str | os.PathLike[str]) -> PopulationManifest:
    """Read and validate a Population YAML file (one document)."""
    file = Path(path)
    try:
        document = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise ApiValidationError([f"{file}: no such file"]) from None
    except yaml.YAMLError as error:
        raise ApiValidationError([f"{file}: not valid YAML ({error})"]) from None
    try:
        return parse_population(document)
    except ApiValidationError as error:
        raise ApiValidationError([f"{file}: {problem}" for problem in error.problems]) from None
