"""The JSON Schema of spec documents, generated from the declarations.

pydantic writes the schema of :class:`~crossinfer.spec.nodes.InferenceSpec`
from the same declarations that validate it (each rule states its own
keywords, see :mod:`crossinfer.spec.constraints`); :class:`SpecSchema` only
shapes it into the published form: definitions named after the JSON (``model``,
``ab_test``, ``op_top_k``, ...), each node's ``kind`` and each op's ``op``
stated as constants, no titles, and ``null`` left out (an absent field and a
null one mean the same; the canonical form writes neither).

``python -m crossinfer.spec.schema`` writes ``schema.json`` next to this module
(``--check``: exit 1 when the file differs); a test holds the committed file
to :func:`generate`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from crossinfer.spec.nodes import (
    NODE_TYPES,
    SPEC_VERSION,
    Arm,
    Batching,
    InferenceSpec,
    Memory,
    Route,
)
from crossinfer.spec.ops import OPS

#: Where the published schema lives (package data).
SCHEMA_FILE = Path(__file__).with_name("schema.json")

#: The constant each tagged class states: ``kind`` for nodes, ``op`` for ops.
_TAGS: dict[type, tuple[str, str]] = {
    **{cls: ("kind", kind) for kind, cls in NODE_TYPES.items()},
    **{cls: ("op", name) for name, cls in OPS.items()},
}

#: Definition names: the JSON's words, not the Python classes'.
_NAMES: dict[str, str] = {
    **{cls.__name__: kind for kind, cls in NODE_TYPES.items()},
    **{cls.__name__: f"op_{name}" for name, cls in OPS.items()},
    Arm.__name__: "arm", Batching.__name__: "batching", Memory.__name__: "memory",
    Route.__name__: "route", "Op": "op",
}


class SpecSchema(GenerateJsonSchema):
    """pydantic's generator, writing the published form of the spec's schema."""

    def normalize_name(self, name: str) -> str:
        return _NAMES.get(name) or super().normalize_name(name)

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        generated = super().default_schema(schema)
        if generated.get("default", 0) is None:
            del generated["default"]
        return generated

    def dataclass_schema(self, schema: core_schema.DataclassSchema) -> JsonSchemaValue:
        generated = super().dataclass_schema(schema)
        generated.pop("title", None)
        generated.pop("description", None)  # the Python docstring: the fields say it all
        cls = schema["cls"]
        order = getattr(cls, "json_order", None) or [f.name for f in fields(cls)]
        always = {f.name for f in fields(cls) if f.metadata.get("always")}
        required = [name for name in order
                    if name in always or name in generated.get("required", ())]
        properties = {name: generated["properties"][name] for name in order}
        tag = _TAGS.get(cls)
        if tag:
            properties = {tag[0]: {"const": tag[1]}, **properties}
            required.insert(0, tag[0])
        generated["properties"] = properties
        if required:
            generated["required"] = required
        return generated

    def handle_invalid_for_json_schema(self, schema: CoreSchema,
                                       error_info: str) -> JsonSchemaValue:
        raise TypeError(f"the spec's JSON Schema cannot state {error_info}")  # a declaration bug


def generate() -> dict[str, Any]:
    """The JSON Schema of spec documents, from the declarations."""
    body = _one_line(TypeAdapter(InferenceSpec).json_schema(schema_generator=SpecSchema))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://crossinfer.io/schema/inference-spec-v{SPEC_VERSION}.json",
        "title": f"crossinfer inference spec, version {SPEC_VERSION}",
        "description": "A tree of inference nodes (model, ab_test, sequence, keyed), generated "
                       "from crossinfer.spec.nodes; the Java builders (package io.crossinfer) "
                       "write the same documents.",
        **body,
    }


def _one_line(schema: Any) -> Any:
    """``schema`` with each description (a field's docstring) on one line."""
    if isinstance(schema, dict):
        return {key: " ".join(value.split()) if key == "description" and isinstance(value, str)
                else _one_line(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_one_line(value) for value in schema]
    return schema


def render() -> str:
    """``schema.json``'s text."""
    return json.dumps(generate(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if SCHEMA_FILE.read_text() != text:
            sys.stderr.write(f"{SCHEMA_FILE} is stale: run python -m crossinfer.spec.schema\n")
            return 1
        return 0
    SCHEMA_FILE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
