"""The base of every API model: camelCase field names as in YAML, unknown fields refused, errors by path."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

API_GROUP = "nora.dev"
API_VERSION = "v1alpha1"
API_GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"


class ApiModel(BaseModel):
    """Frozen, camelCase-aliased, extra fields forbidden (a typo is an error, not a silent default)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, validate_default=True
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The camelCase JSON form, as stored in genome.json or a Kubernetes object."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class ApiValidationError(ValueError):
    """Invalid input, with one message per problem, each starting with the field path."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def describe_validation_error(error: ValidationError, prefix: str = "") -> ApiValidationError:
    """Turn pydantic's errors into ``path: message (got value)`` lines, e.g. ``spec.selection.method: ...``.

    Pydantic's messages for enums already list the allowed values (``Input should be 'a' or 'b'``).
    """
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        where = ".".join(part for part in (prefix, path) if part) or "(root)"
        message = str(item["msg"]).removeprefix("Value error, ")
        value = item.get("input")
        shown = "" if item["type"] == "missing" or isinstance(value, dict | list) else f" (got {value!r})"
        problems.append(f"{where}: {message}{shown}")
    return ApiValidationError(problems)
