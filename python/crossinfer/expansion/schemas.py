"""Input schema checks and the output Row types, derived from the input schema.

Cross-language outputs must carry a schema (RowCoder) so a Java or Go pipeline
reads them as Rows. The results schema is the input schema plus crossinfer's
output fields; the failures schema nests the input row. Both are built here
from the input schema proto and turned into NamedTuple types with Beam's own
``named_tuple_from_schema`` (those types pickle to the workers by schema).
"""

from __future__ import annotations

import keyword
import uuid

from apache_beam.portability.api import schema_pb2
from apache_beam.typehints.schema_registry import SCHEMA_REGISTRY
from apache_beam.typehints.schemas import named_tuple_from_schema

from crossinfer.errors import CrossinferError
from crossinfer.rows import FAILURE_FIELDS, OUTPUT_FIELDS

_NUMERIC = frozenset({schema_pb2.BYTE, schema_pb2.INT16, schema_pb2.INT32, schema_pb2.INT64,
                      schema_pb2.FLOAT, schema_pb2.DOUBLE})

#: Logical types whose values carry code: Beam's ``python_callable`` evaluates
#: source when decoded, ``pythonsdk_any`` holds pickled Python objects. An input
#: schema with one is refused, since the workers would decode it.
_CODE_LOGICAL_TYPES = {
    "beam:logical_type:python_callable:v1": "Python source, evaluated when decoded",
    "beam:logical:pythonsdk_any:v1": (
        "a pickled Python value; give the field a concrete type (Python NamedTuples: "
        "no 'from __future__ import annotations', which hides field types from Beam)"),
}


class InputSchemaError(CrossinferError, ValueError):
    """The input PCollection's schema cannot feed the transform."""


def atomic_type(kind: int, nullable: bool = False) -> schema_pb2.FieldType:
    return schema_pb2.FieldType(atomic_type=kind, nullable=nullable)


def array_type(element: int, nullable: bool = False,
               element_nullable: bool = False) -> schema_pb2.FieldType:
    return schema_pb2.FieldType(nullable=nullable, array_type=schema_pb2.ArrayType(
        element_type=atomic_type(element, element_nullable)))


#: crossinfer's output fields and their wire types (docs/wire-contract.md).
OUTPUT_TYPES: dict[str, schema_pb2.FieldType] = {
    "model": atomic_type(schema_pb2.STRING),
    "path": atomic_type(schema_pb2.STRING),
    "inference": array_type(schema_pb2.DOUBLE),
    "label": atomic_type(schema_pb2.INT64, nullable=True),
    "score": atomic_type(schema_pb2.DOUBLE, nullable=True),
    "labels": array_type(schema_pb2.INT64, nullable=True),
    "scores": array_type(schema_pb2.DOUBLE, nullable=True),
}
assert tuple(OUTPUT_TYPES) == OUTPUT_FIELDS, "keep in step with crossinfer.rows"


def describe(field_type: schema_pb2.FieldType) -> str:
    """A type as the contract writes it: ``ARRAY<DOUBLE>``, ``STRING``, ``ROW``..."""
    kind = field_type.WhichOneof("type_info")
    if kind == "atomic_type":
        return schema_pb2.AtomicType.Name(field_type.atomic_type)
    if kind == "array_type":
        return f"ARRAY<{describe(field_type.array_type.element_type)}>"
    if kind == "iterable_type":
        return f"ITERABLE<{describe(field_type.iterable_type.element_type)}>"
    if kind == "map_type":
        m = field_type.map_type
        return f"MAP<{describe(m.key_type)}, {describe(m.value_type)}>"
    if kind == "row_type":
        return "ROW"
    if kind == "logical_type":
        return f"LOGICAL<{field_type.logical_type.urn}>"
    return "an unset type"


def check_input_schema(schema: schema_pb2.Schema, features_field: str, key_field: str,
                       key_required: bool) -> None:
    """Raise InputSchemaError unless ``schema`` has a numeric-array features field
    (and a STRING key field when ``key_required``), and nothing code-bearing."""
    fields = {f.name: f.type for f in schema.fields}
    listing = ", ".join(fields) or "none"
    problem = code_bearing_field(schema) or unusable_field_name(schema)
    if problem:
        raise InputSchemaError(f"input: {problem}")
    if features_field not in fields:
        raise InputSchemaError(
            f"features_field: the input schema has no field {features_field!r} (fields: "
            f"{listing}); set features_field in the payload to the numeric array field")
    features = fields[features_field]
    kind = features.WhichOneof("type_info")
    if kind == "atomic_type" and features.atomic_type == schema_pb2.BYTES:
        kind = "packed"  # little-endian float32 values, see docs/wire-contract.md
    element = (features.array_type.element_type if kind == "array_type"
               else features.iterable_type.element_type if kind == "iterable_type" else None)
    if kind != "packed" and (element is None or element.WhichOneof("type_info") != "atomic_type"
                             or element.atomic_type not in _NUMERIC):
        raise InputSchemaError(
            f"features_field: input field {features_field!r} must be an ARRAY (or ITERABLE) of "
            f"DOUBLE, FLOAT or an integer type, or BYTES of packed float32 values, got "
            f"{describe(features)}")
    if key_required:
        if key_field not in fields:
            raise InputSchemaError(
                f"key_field: the spec routes or splits by key, but the input schema has no "
                f"field {key_field!r} (fields: {listing}); set key_field in the payload")
        key = fields[key_field]
        if key.WhichOneof("type_info") != "atomic_type" or key.atomic_type != schema_pb2.STRING:
            raise InputSchemaError(f"key_field: input field {key_field!r} must be a STRING, "
                                   f"got {describe(key)}")


def code_bearing_field(schema: schema_pb2.Schema) -> str | None:
    """Why ``schema`` is refused for carrying code, or None."""
    for f in schema.fields:
        urn = _code_logical_type(f.type)
        if urn:
            return (f"input schema field {f.name!r} has logical type {urn!r} "
                    f"({_CODE_LOGICAL_TYPES[urn]}); refused")
    return None


def unusable_field_name(schema: schema_pb2.Schema) -> str | None:
    """Why a field name (nested rows included) cannot become a Python NamedTuple
    field - which Beam's Python RowCoder needs on the workers - or None."""
    stack = [("", schema)]
    while stack:
        prefix, current = stack.pop()
        for f in current.fields:
            name = f.name
            if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
                return (f"input schema field {prefix + name!r}: Python workers need field "
                        "names that are identifiers (letters, digits and '_', not starting "
                        "with '_' or a digit, not a Python keyword); rename it before the "
                        "transform")
            stack.extend((f"{prefix}{name}.", t.row_type.schema) for t in _types_in(f.type)
                         if t.WhichOneof("type_info") == "row_type")
    return None


def _types_in(field_type: schema_pb2.FieldType,
              into_rows: bool = False) -> list[schema_pb2.FieldType]:
    """``field_type`` and the types it contains (and nested rows' field types)."""
    found, stack = [], [field_type]
    while stack:
        t = stack.pop()
        found.append(t)
        kind = t.WhichOneof("type_info")
        if kind == "logical_type":
            stack.append(t.logical_type.representation)
        elif kind == "array_type":
            stack.append(t.array_type.element_type)
        elif kind == "iterable_type":
            stack.append(t.iterable_type.element_type)
        elif kind == "map_type":
            stack.extend((t.map_type.key_type, t.map_type.value_type))
        elif kind == "row_type" and into_rows:
            stack.extend(f.type for f in t.row_type.schema.fields)
    return found


def _code_logical_type(field_type: schema_pb2.FieldType) -> str | None:
    for t in _types_in(field_type, into_rows=True):
        if t.WhichOneof("type_info") == "logical_type" and (
                t.logical_type.urn in _CODE_LOGICAL_TYPES):
            return t.logical_type.urn
    return None


def check_schema_id(schema: schema_pb2.Schema) -> None:
    """Refuse a schema whose id is already registered in this process with other
    fields: Beam resolves row types by id, so a reused id would decode rows with
    the wrong layout."""
    known = SCHEMA_REGISTRY.get_schema_by_id(schema.id)
    if known is not None and list(known.fields) != list(schema.fields):
        raise InputSchemaError(f"input: the schema id {schema.id!r} is already in use with "
                               "different fields; give each schema its own id")


#: Namespace of crossinfer's name-based schema ids.
_ID_NAMESPACE = uuid.UUID("6f1c2a4e-8a3b-5d7e-9c1f-2b3a4c5d6e7f")


def _derived_id(kind: str, schema: schema_pb2.Schema) -> str:
    """A UUID derived from the content, so expanding the same input twice reuses
    one type instead of growing Beam's process-wide schema registry with each
    request. A UUID because Beam Java parses every schema id as one."""
    return str(uuid.uuid5(_ID_NAMESPACE, kind + "\0" + schema.SerializeToString(
        deterministic=True).hex()))


def results_schema(input_schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """Input fields (minus any named like an output field, which the output
    replaces), then the output fields."""
    out = schema_pb2.Schema()
    for f in input_schema.fields:
        if f.name not in OUTPUT_TYPES:
            out.fields.add(name=f.name, type=f.type, description=f.description)
    for name, field_type in OUTPUT_TYPES.items():
        out.fields.add(name=name, type=field_type)
    out.id = _derived_id("results", input_schema)
    return out


def failures_schema(input_schema: schema_pb2.Schema) -> schema_pb2.Schema:
    out = schema_pb2.Schema()
    element, node, error = FAILURE_FIELDS
    out.fields.add(name=element, type=schema_pb2.FieldType(
        row_type=schema_pb2.RowType(schema=input_schema)))
    out.fields.add(name=node, type=atomic_type(schema_pb2.STRING))
    out.fields.add(name=error, type=atomic_type(schema_pb2.STRING))
    out.id = _derived_id("failures", input_schema)
    return out


def output_types(input_schema: schema_pb2.Schema) -> tuple[type, type]:
    """(results row type, failures row type) for an input schema."""
    # Register the input type first so the failures type nests that same class
    # (the one Beam's RowCoder hands the transform for this schema id).
    named_tuple_from_schema(input_schema)
    return (named_tuple_from_schema(results_schema(input_schema)),
            named_tuple_from_schema(failures_schema(input_schema)))
