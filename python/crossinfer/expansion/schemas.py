"""Input schema checks and the output Row types, derived from the input schema.

Cross-language outputs must carry a schema (RowCoder) so a Java or Go pipeline
reads them as Rows. The results schema is the input schema plus crossinfer's
output fields; the failures schema nests the input row. Both are built here
from the input schema proto and turned into NamedTuple types with Beam's own
``named_tuple_from_schema`` (those types pickle to the workers by schema).
"""

from __future__ import annotations

import keyword
import unicodedata
import uuid

from apache_beam.portability.api import schema_pb2
from apache_beam.typehints.schemas import named_tuple_from_schema, typing_from_runner_api

from crossinfer.errors import CrossinferError
from crossinfer.expansion.limits import RequestLimits, fixed
from crossinfer.expansion.registry import contained_types, content_id
from crossinfer.wire import FAILURE_FIELDS, OUTPUT_FIELDS, TIMING_FIELDS

_NUMERIC = frozenset({schema_pb2.BYTE, schema_pb2.INT16, schema_pb2.INT32, schema_pb2.INT64,
                      schema_pb2.FLOAT, schema_pb2.DOUBLE})

#: Logical types whose values carry code: Beam's ``python_callable`` evaluates
#: source when decoded, ``pythonsdk_any`` holds pickled Python objects. An input
#: schema with one is refused, since the workers would decode it.
_CODE_LOGICAL_TYPES = {
    "beam:logical_type:python_callable:v1": "Python source, evaluated when decoded",
    "beam:logical:pythonsdk_any:v1": (
        "Beam could not infer the field's type, so its values would be pickled Python "
        "objects: an empty or None list in some row, mixed types, or a NamedTuple in a "
        "module with 'from __future__ import annotations' (which hides field types); "
        "declare the schema: a NamedTuple with concrete types, e.g. Optional[List[float]], "
        "registered with beam.coders.RowCoder, and .with_output_types(ThatType)"),
}


class InputSchemaError(CrossinferError, ValueError):
    """The input PCollection's schema cannot feed the transform."""


def atomic_type(kind: schema_pb2.AtomicType.ValueType,
                nullable: bool = False) -> schema_pb2.FieldType:
    return schema_pb2.FieldType(atomic_type=kind, nullable=nullable)


def array_type(element: schema_pb2.AtomicType.ValueType, nullable: bool = False,
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
assert tuple(OUTPUT_TYPES) == OUTPUT_FIELDS, "keep in step with crossinfer.wire"
#: The fields results gain, after the output fields, when the payload asks for
#: timing: per model on the row's path, its call's wall time over its rows (ms),
#: and its call's rows.
TIMING_TYPES: dict[str, schema_pb2.FieldType] = {
    "model_ms": array_type(schema_pb2.DOUBLE),
    "batch_size": array_type(schema_pb2.INT64),
}
assert tuple(TIMING_TYPES) == TIMING_FIELDS, "keep in step with crossinfer.wire"


def describe(field_type: schema_pb2.FieldType) -> str:
    """A type as the contract writes it: ``ARRAY<DOUBLE>``, ``STRING``, ``ROW``..."""
    kind = field_type.WhichOneof("type_info")
    if kind == "atomic_type":
        return str(schema_pb2.AtomicType.Name(field_type.atomic_type))
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


def schema_problem(schema: schema_pb2.Schema, limits: RequestLimits) -> str | None:
    """Why ``schema`` cannot be an input schema, naming the field; or None.

    Checked before any of Beam's schema code sees it (that code's cost grows
    about 4x per level of nested rows and cannot be interrupted): its size,
    field count and nesting within ``limits`` and :data:`FIXED_BOUNDS`; every
    field typed; names that Python workers can use as NamedTuple fields (which
    Python normalises to NFKC, so a name must already be in that form) and
    unique in each row; no code-bearing logical type.
    """
    size = schema.ByteSize()
    if size > fixed("input schema (bytes)"):
        return (f"the input schema is {size:,} bytes; at most "
                f"{fixed('input schema (bytes)'):,} are allowed")
    problem = code_bearing_field(schema)  # first: its message says what to do instead
    if problem:
        return problem
    count = 0
    stack: list[tuple[str, schema_pb2.Schema, int]] = [("", schema, 0)]
    while stack:
        prefix, current, rows = stack.pop()
        count += len(current.fields)
        if count > limits.max_input_fields:
            return (f"the input schema has more than {limits.max_input_fields} fields (nested "
                    "rows' fields counted; --max-input-fields)")
        seen: dict[str, str] = {}
        for f in current.fields:
            path = prefix + f.name
            problem = _name_problem(f.name)
            if problem:
                return f"input schema field {path!r}: {problem}"
            if f.name in seen:
                return (f"input schema field {path!r}: the name is used twice in one row")
            seen[f.name] = path
            nested, problem = _type_problem(f.type, limits, rows)
            if problem:
                return f"input schema field {path!r}: {problem}"
            stack.extend((f"{path}.", row, rows + 1) for row in nested)
    return None


def _name_problem(name: str) -> str | None:
    if len(name) > fixed("input schema field names (length)"):
        return (f"the name is longer than {fixed('input schema field names (length)')} "
                "characters")
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        return ("Python workers need field names that are identifiers (letters, digits and "
                "'_', not starting with '_' or a digit, not a Python keyword); rename it before "
                "the transform")
    if unicodedata.normalize("NFKC", name) != name:
        return (f"Python reads this name as {unicodedata.normalize('NFKC', name)!r} (its "
                "identifiers are NFKC-normalised), so it could collide with another field; "
                "rename it before the transform")
    return None


def _type_problem(field_type: schema_pb2.FieldType, limits: RequestLimits,
                  rows: int) -> tuple[list[schema_pb2.Schema], str | None]:
    """(row schemas nested in the type, why the type is refused or None)."""
    nested: list[schema_pb2.Schema] = []
    deepest = fixed("input schema (type nesting)")
    stack = [(field_type, 1)]
    while stack:
        t, depth = stack.pop()
        if depth > deepest:
            return nested, f"its type nests deeper than {deepest} levels"
        kind = t.WhichOneof("type_info")
        if kind is None:
            return nested, "has no type"
        if kind == "row_type":
            if rows + 1 > limits.max_input_row_nesting:
                return nested, (f"rows nest deeper than {limits.max_input_row_nesting} levels "
                                "(--max-input-row-nesting)")
            nested.append(t.row_type.schema)
        elif kind == "array_type":
            stack.append((t.array_type.element_type, depth + 1))
        elif kind == "iterable_type":
            stack.append((t.iterable_type.element_type, depth + 1))
        elif kind == "map_type":
            stack.extend(((t.map_type.key_type, depth + 1), (t.map_type.value_type, depth + 1)))
        elif kind == "logical_type":
            stack.append((t.logical_type.representation, depth + 1))
            if t.logical_type.argument_type.WhichOneof("type_info"):  # an argument given
                stack.append((t.logical_type.argument_type, depth + 1))
    return nested, None


def field_count(schema: schema_pb2.Schema) -> int:
    """Fields of ``schema``, nested rows' fields counted (after :func:`schema_problem`)."""
    count, stack = 0, [schema]
    while stack:
        current = stack.pop()
        count += len(current.fields)
        for f in current.fields:
            stack.extend(t.row_type.schema for t in _types_in(f.type)
                         if t.WhichOneof("type_info") == "row_type")
    return count


def unusable_field_name(schema: schema_pb2.Schema) -> str | None:
    """Why a field name (nested rows included) cannot become a Python NamedTuple
    field - which Beam's Python RowCoder needs on the workers - or None."""
    stack = [("", schema)]
    while stack:
        prefix, current = stack.pop()
        for f in current.fields:
            problem = _name_problem(f.name)
            if problem:
                return f"input schema field {prefix + f.name!r}: {problem}"
            stack.extend((f"{prefix}{f.name}.", t.row_type.schema) for t in _types_in(f.type)
                         if t.WhichOneof("type_info") == "row_type")
    return None


def _types_in(field_type: schema_pb2.FieldType,
              into_rows: bool = False) -> list[schema_pb2.FieldType]:
    """``field_type`` and the types it contains (and nested rows' field types)."""
    found, stack = [], [field_type]
    while stack:
        t = stack.pop()
        found.append(t)
        stack.extend(contained_types(t))
        if into_rows and t.WhichOneof("type_info") == "row_type":
            stack.extend(f.type for f in t.row_type.schema.fields)
    return found


def _code_logical_type(field_type: schema_pb2.FieldType) -> str | None:
    for t in _types_in(field_type, into_rows=True):
        if t.WhichOneof("type_info") == "logical_type" and (
                t.logical_type.urn in _CODE_LOGICAL_TYPES):
            return t.logical_type.urn
    return None


#: Namespace of crossinfer's name-based schema ids.
_ID_NAMESPACE = uuid.UUID("6f1c2a4e-8a3b-5d7e-9c1f-2b3a4c5d6e7f")


def _derived_id(kind: str, schema: schema_pb2.Schema) -> str:
    """A UUID derived from the content, so expanding the same input twice reuses
    one type instead of growing Beam's process-wide schema registry with each
    request (:mod:`.registry` bounds what stays)."""
    return content_id(uuid.uuid5(_ID_NAMESPACE, kind), schema)


def results_schema(input_schema: schema_pb2.Schema, timing: bool = False) -> schema_pb2.Schema:
    """Input fields (minus any named like an output field, which the output
    replaces), then the output fields; with ``timing``, then ``model_ms`` and
    ``batch_size`` (:data:`TIMING_TYPES`, which then also replace input fields)."""
    added = {**OUTPUT_TYPES, **TIMING_TYPES} if timing else OUTPUT_TYPES
    out = schema_pb2.Schema()
    for f in input_schema.fields:
        if f.name not in added:
            out.fields.add(name=f.name, type=f.type, description=f.description)
    for name, field_type in added.items():
        out.fields.add(name=name, type=field_type)
    out.id = _derived_id("results-timed" if timing else "results", input_schema)
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


def output_types(input_schema: schema_pb2.Schema, timing: bool = False) -> tuple[type, type]:
    """(results row type, failures row type) for an input schema (results with
    the timing fields when ``timing``); InputSchemaError naming the field when
    Beam cannot make a Python type of it."""
    # Register the input type first so the failures type nests that same class
    # (the one Beam's RowCoder hands the transform for this schema id).
    python_type(input_schema)
    return (named_tuple_from_schema(results_schema(input_schema, timing)),
            named_tuple_from_schema(failures_schema(input_schema)))


def python_type(schema: schema_pb2.Schema, what: str = "input") -> type:
    """Beam's NamedTuple type for ``schema``; InputSchemaError naming the first field
    Beam's schema code fails on (a logical type without its argument, ...)."""
    try:
        return named_tuple_from_schema(schema)
    except Exception as exc:  # whatever Beam's schema code raises: the client's schema
        raise InputSchemaError(f"{what}: {failing_field(schema, exc)}") from exc


def failing_field(schema: schema_pb2.Schema, exc: Exception, prefix: str = "") -> str:
    """Which field of ``schema`` Beam cannot read, and Beam's reason."""
    for f in schema.fields:
        try:
            typing_from_runner_api(f.type)
        except Exception as inner:
            if f.type.WhichOneof("type_info") == "row_type":
                return failing_field(f.type.row_type.schema, inner, f"{prefix}{f.name}.")
            return (f"input schema field {prefix + f.name!r} cannot be read by Beam: "
                    f"{_reason(inner)}")
    return f"the input schema cannot be read by Beam: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    """The innermost cause of a Beam error, on one bounded line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 300 else text[:297] + "..."
