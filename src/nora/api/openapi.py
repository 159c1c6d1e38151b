"""Pydantic models as structural OpenAPI v3 schemas, the form Kubernetes CRDs take.

The model's JSON Schema (with the values of ``default_factory`` as defaults) has its ``$ref`` inlined,
``Optional`` unwrapped, tuples made fixed-length arrays, free-form objects marked
``x-kubernetes-preserve-unknown-fields``, JSON Schema 2020-12 exclusive bounds made OpenAPI v3.0 ones, and
only the first paragraph of each description kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

Schema = dict[str, Any]
KEPT_KEYS = (
    "type", "description", "default", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "maxProperties", "format",
)  # fmt: skip


class _FactoryDefaults(GenerateJsonSchema):
    """Pydantic's generator, also emitting the values of ``default_factory`` as defaults."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            return factory()  # type: ignore[call-arg]
        return schema.get("default", NoDefault)


def _resolve(node: Any, defs: Mapping[str, Schema]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {key: _resolve(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    return node


def _unwrap_optional(node: Schema) -> Schema:
    variants = [v for v in node.get("anyOf", []) if v.get("type") != "null"]
    if "anyOf" not in node or len(variants) != 1:
        return node
    merged = {**variants[0], **{k: v for k, v in node.items() if k != "anyOf"}}
    if merged.get("default", 0) is None:
        del merged["default"]
    return merged


def _exclusive_bounds(node: Schema, out: Schema) -> None:
    """JSON Schema 2020-12 numeric exclusive bounds to OpenAPI v3.0 boolean ones."""
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            out[plain] = node[bound]
            out[bound] = True


def _array(node: Schema, with_defaults: bool) -> Schema:
    out: Schema = {"type": "array"}
    if "prefixItems" in node:  # a fixed-length tuple of one item type
        out["items"] = _convert(node["prefixItems"][0], with_defaults)
        out["minItems"] = out["maxItems"] = len(node["prefixItems"])
    else:
        out["items"] = _convert(node.get("items", {}), with_defaults)
    return out


def _object(node: Schema, with_defaults: bool) -> Schema:
    out: Schema = {"type": "object"}
    properties = node.get("properties")
    extra = node.get("additionalProperties")
    if properties is not None:
        out["properties"] = {k: _convert(v, with_defaults) for k, v in properties.items()}
        if node.get("required"):
            out["required"] = list(node["required"])
    elif isinstance(extra, dict) and extra:
        out["additionalProperties"] = _convert(extra, with_defaults)
    else:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _convert(node: Schema, with_defaults: bool) -> Schema:
    node = _unwrap_optional(node)
    if node.get("type") == "object" or "properties" in node:
        out = _object(node, with_defaults)
    elif node.get("type") == "array":
        out = _array(node, with_defaults)
    else:
        out = {}
    for key in KEPT_KEYS:
        if key in node and key not in out:
            out[key] = node[key]
    if "const" in node:
        out["enum"] = [node["const"]]
    _exclusive_bounds(node, out)
    if "description" in out:
        text = " ".join(str(out["description"]).split("\n\n")[0].split())
        out["description"] = text.replace("``", "`")
    default = out.get("default")
    if not with_defaults or default in ([], {}) or default is None:
        out.pop("default", None)
    elif isinstance(default, dict) and "properties" in out:
        out["default"] = {}  # the nested defaults fill it in
    return out


def model_schema(model: type[BaseModel], with_defaults: bool) -> Schema:
    """The structural OpenAPI v3 schema of ``model``."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_FactoryDefaults)
    resolved = _resolve({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    return _convert(resolved, with_defaults)
