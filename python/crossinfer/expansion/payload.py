"""The v1 payload: an ExternalConfigurationPayload Row of string fields.

``spec`` (required, JSON text), ``features_field`` and ``key_field`` (nullable),
``timing`` (nullable: ``"true"`` adds the per-row latency fields ``model_ms`` and
``batch_size`` to the results; ``"false"`` or absent does not), and for the batch
transport (:mod:`crossinfer.expansion.transport`) ``transport`` and
``input_schema`` (nullable; the schema as base64 text).
Decoding is strict on purpose: the schema is checked *before* any byte is
decoded, so a payload can only ever carry strings - never a logical type whose
decoder runs code (Beam's ``python_callable`` evaluates source on decode), never
a pickled object - and an unknown or misspelled field is an error rather than
a silently ignored option.
"""

from __future__ import annotations

import base64
import binascii
import json
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from apache_beam.coders import RowCoder
from apache_beam.portability.api import external_transforms_pb2, schema_pb2
from apache_beam.transforms.external import NamedTupleBasedPayloadBuilder
from google.protobuf.message import DecodeError

from crossinfer.errors import CrossinferError
from crossinfer.expansion.limits import fixed
from crossinfer.expansion.registry import content_id
from crossinfer.spec.limits import SpecLimits

SPEC_FIELD = "spec"
FEATURES_FIELD = "features_field"
KEY_FIELD = "key_field"
TRANSPORT_FIELD = "transport"
INPUT_SCHEMA_FIELD = "input_schema"
TIMING_FIELD = "timing"
FIELDS = (SPEC_FIELD, FEATURES_FIELD, KEY_FIELD, TRANSPORT_FIELD, INPUT_SCHEMA_FIELD,
          TIMING_FIELD)
#: The values of ``timing``: a STRING like every v1 field (the payload decodes
#: strings only), spelled exactly.
TIMING_VALUES = {"true": True, "false": False}

#: Input elements are the user's rows, one per element (the default).
ROWS_TRANSPORT = "rows"
#: Input elements are batches of rows (:mod:`crossinfer.expansion.transport`).
BATCHES_TRANSPORT = "batches"
TRANSPORTS = (ROWS_TRANSPORT, BATCHES_TRANSPORT)
#: Largest ``input_schema`` accepted, in bytes of serialized Schema.
MAX_INPUT_SCHEMA_BYTES = fixed("input schema (bytes)")
#: Digits of the longest integer a spec may hold (every bound is far below; Python
#: refuses to convert more than 4,300).
MAX_INTEGER_DIGITS = 4000

DEFAULT_FEATURES_FIELD = "features"
DEFAULT_KEY_FIELD = "key"


_PAYLOAD_ID_NAMESPACE = uuid.UUID("0d6a9a5e-3f0e-5b8a-8c36-1f6f3c1b7a90")


class PayloadError(CrossinferError, ValueError):
    """The payload is malformed; the message names the offending field."""


#: The payload's Row, as Python clients encode it. Functional form with
#: ``typing.Optional``: Beam's schema inference reads neither the string
#: annotations of ``from __future__ import annotations`` nor ``str | None``
#: (both become an opaque "any" field). Field lists written out: mypy reads
#: only literal ones.
PayloadRow = NamedTuple("PayloadRow", [  # noqa: UP014 - see above
    ("spec", str),
    ("features_field", typing.Optional[str]),  # noqa: UP045 - see above
    ("key_field", typing.Optional[str]),  # noqa: UP045 - see above
])
#: The payload's Row for the batch transport: the same, plus the transport fields.
BatchPayloadRow = NamedTuple("BatchPayloadRow", [  # noqa: UP014 - see above
    ("spec", str),
    ("features_field", typing.Optional[str]),  # noqa: UP045 - see above
    ("key_field", typing.Optional[str]),  # noqa: UP045 - see above
    ("transport", str), ("input_schema", str),
])
#: The same two Rows asking for timing (``timing`` last). A payload without
#: timing keeps the rows above, so its bytes are what they always were.
TimedPayloadRow = NamedTuple("TimedPayloadRow", [  # noqa: UP014 - see above
    ("spec", str),
    ("features_field", typing.Optional[str]),  # noqa: UP045 - see above
    ("key_field", typing.Optional[str]),  # noqa: UP045 - see above
    ("timing", str),
])
TimedBatchPayloadRow = NamedTuple("TimedBatchPayloadRow", [  # noqa: UP014 - see above
    ("spec", str),
    ("features_field", typing.Optional[str]),  # noqa: UP045 - see above
    ("key_field", typing.Optional[str]),  # noqa: UP045 - see above
    ("transport", str), ("input_schema", str), ("timing", str),
])
assert PayloadRow._fields == FIELDS[:3] and TimedBatchPayloadRow._fields == FIELDS


@dataclass(frozen=True)
class Payload:
    """A decoded payload: the spec as a plain JSON object plus the I/O mapping."""

    spec: dict[str, Any]
    features_field: str
    key_field: str
    key_field_given: bool
    transport: str = ROWS_TRANSPORT
    #: The user's row schema, for the batch transport (None otherwise).
    input_schema: schema_pb2.Schema | None = None
    #: Whether results carry ``model_ms`` and ``batch_size`` (``timing`` "true").
    timing: bool = False


# ---------------------------------------------------------------- encoding


def encode_payload(spec_json: str, features_field: str | None = None,
                   key_field: str | None = None,
                   input_schema: schema_pb2.Schema | None = None,
                   timing: bool = False) -> bytes:
    """The serialized ExternalConfigurationPayload for a transform's ``spec.payload``;
    with ``input_schema``, for the batch transport of rows of that schema; with
    ``timing``, results carry ``model_ms`` and ``batch_size`` (without it the
    payload has no ``timing`` field at all)."""
    if input_schema is None:
        row: Any = (TimedPayloadRow(spec_json, features_field, key_field, "true") if timing
                    else PayloadRow(spec_json, features_field, key_field))
    else:
        schema_text = base64.b64encode(input_schema.SerializeToString()).decode()
        row = (TimedBatchPayloadRow(spec_json, features_field, key_field, BATCHES_TRANSPORT,
                                    schema_text, "true") if timing
               else BatchPayloadRow(spec_json, features_field, key_field, BATCHES_TRANSPORT,
                                    schema_text))
    data: bytes = NamedTupleBasedPayloadBuilder(row).payload()
    return data


# ---------------------------------------------------------------- decoding


def decode_row_payload(data: bytes, check_schema: Callable[[schema_pb2.Schema],
                                                            schema_pb2.Schema]) -> dict[str, Any]:
    """An ExternalConfigurationPayload's Row as ``{field: value}``; PayloadError
    when ``data`` is not one or its Row bytes do not match its schema.

    ``check_schema`` takes the client's schema and returns the one to decode
    with (a clean copy), or raises PayloadError: it runs before any Row byte is
    read, so only the types it lets through are ever decoded.
    """
    try:
        config = external_transforms_pb2.ExternalConfigurationPayload.FromString(data)
    except DecodeError as exc:
        raise PayloadError(f"payload: not an ExternalConfigurationPayload ({exc})") from exc
    schema = check_schema(config.schema)
    try:
        row = RowCoder(schema).decode(config.payload)
    except Exception as exc:  # any decoder failure is the client's bytes
        raise PayloadError(f"payload: the Row bytes do not match the payload schema "
                           f"({type(exc).__name__}: {exc})") from exc
    return dict(zip((f.name for f in schema.fields), row, strict=True))


def decode_payload(data: bytes, limits: SpecLimits | None = None) -> Payload:
    """Decode and check a payload; raise PayloadError naming what is wrong.

    ``limits`` bounds the spec's bytes and JSON nesting (default: SpecLimits()).
    """
    values = decode_row_payload(data, _checked_schema)
    return Payload(
        spec=parse_spec_json(values.get(SPEC_FIELD), limits),
        features_field=_field_name(values, FEATURES_FIELD, DEFAULT_FEATURES_FIELD),
        key_field=_field_name(values, KEY_FIELD, DEFAULT_KEY_FIELD),
        key_field_given=values.get(KEY_FIELD) is not None,
        timing=_timing(values.get(TIMING_FIELD)),
        **_transport(values),
    )


def _timing(value: str | None) -> bool:
    if value is None:
        return False
    if value not in TIMING_VALUES:
        raise PayloadError(f"payload.timing: {_clip(value)} is not one of "
                           f"{', '.join(map(repr, TIMING_VALUES))} (or null)")
    return TIMING_VALUES[value]


def _transport(values: dict[str, Any]) -> dict[str, Any]:
    transport = values.get(TRANSPORT_FIELD) or ROWS_TRANSPORT
    if transport not in TRANSPORTS:
        raise PayloadError(f"payload.transport: {transport!r} is not one of "
                           f"{', '.join(TRANSPORTS)}")
    text = values.get(INPUT_SCHEMA_FIELD)
    if transport == ROWS_TRANSPORT:
        if text is not None:
            raise PayloadError("payload.input_schema: only used with transport 'batches' "
                               "(the input PCollection's own schema describes the rows)")
        return {}
    if text is None:
        raise PayloadError("payload.input_schema: required with transport 'batches': the "
                           "schema of the rows inside each batch, a serialized Schema as "
                           "base64")
    if len(text) > MAX_INPUT_SCHEMA_BYTES * 4 // 3 + 4:
        raise PayloadError(f"payload.input_schema: larger than {MAX_INPUT_SCHEMA_BYTES} bytes")
    try:
        schema = schema_pb2.Schema.FromString(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError, DecodeError) as exc:
        raise PayloadError(f"payload.input_schema: not a base64 serialized Schema ({exc})") \
            from exc
    return {"transport": transport, "input_schema": schema}


def _checked_schema(schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """A clean copy of the client's schema holding only the v1 fields, or PayloadError.

    The copy carries a content-derived id, so decoding does not register one
    new type per request in Beam's process-wide schema registry.
    """
    names = [f.name for f in schema.fields]
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise PayloadError(
            f"payload: unknown field(s) {', '.join(map(repr, unknown))}; the crossinfer v1 "
            f"payload has only {', '.join(FIELDS)} (code-bearing or extra options are refused)")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PayloadError(f"payload: field(s) {', '.join(map(repr, duplicates))} appear "
                           "more than once")
    if SPEC_FIELD not in names:
        raise PayloadError("payload.spec: is required (the inference spec as JSON text)")
    clean = schema_pb2.Schema(encoding_positions_set=schema.encoding_positions_set)
    for f in schema.fields:
        kind = f.type.WhichOneof("type_info")
        if kind != "atomic_type" or f.type.atomic_type != schema_pb2.STRING:
            found = (f"logical type {f.type.logical_type.urn!r}" if kind == "logical_type"
                     else schema_pb2.AtomicType.Name(f.type.atomic_type)
                     if kind == "atomic_type" else kind or "no type")
            raise PayloadError(f"payload.{f.name}: must be a STRING, got {found}")
        clean.fields.add(name=f.name, encoding_position=f.encoding_position,
                         type=schema_pb2.FieldType(atomic_type=schema_pb2.STRING,
                                                   nullable=f.type.nullable))
    if clean.encoding_positions_set and sorted(
            f.encoding_position for f in clean.fields) != list(range(len(clean.fields))):
        raise PayloadError("payload: encoding positions must number the fields 0..n-1")
    clean.id = content_id(_PAYLOAD_ID_NAMESPACE, clean)
    return clean


def _field_name(values: dict[str, Any], name: str, default: str) -> str:
    value = values.get(name)
    if value is None:
        return default
    if not value.strip() or value != value.strip():
        raise PayloadError(f"payload.{name}: {value!r} is not a field name")
    return str(value)


def parse_spec_json(text: str | None, limits: SpecLimits | None = None) -> dict[str, Any]:
    """Parse spec text as plain JSON: objects, arrays, strings, finite numbers,
    booleans and null, no duplicate keys, size and depth within ``limits``."""
    limits = limits or SpecLimits()
    if text is None:
        raise PayloadError("payload.spec: is required (the inference spec as JSON text)")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_spec_bytes:
        raise PayloadError(f"payload.spec: {size} bytes; at most {limits.max_spec_bytes} are "
                           "allowed (--max-spec-bytes)")
    try:
        doc = json.loads(text, parse_constant=_refuse_constant, parse_int=_integer,
                         object_pairs_hook=_refuse_duplicates)
    except RecursionError as exc:
        raise PayloadError("payload.spec: JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError and our own refusals
        raise PayloadError(f"payload.spec: not plain JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError(f"payload.spec: expected a JSON object "
                           f"({{\"version\": 1, \"node\": ...}}), got {type(doc).__name__}")
    if _depth(doc) > limits.max_spec_depth:
        raise PayloadError(f"payload.spec: JSON nested deeper than {limits.max_spec_depth} "
                           "levels (--max-spec-depth)")
    problem = _text_problem(doc)
    if problem:
        raise PayloadError(problem)
    return doc


class _LongInteger(str):
    """An integer literal too long to convert (Python refuses past 4,300 digits)."""


def _integer(text: str) -> int | _LongInteger:
    return _LongInteger(text) if len(text.lstrip("-")) > MAX_INTEGER_DIGITS else int(text)


def _text_problem(doc: dict[str, Any]) -> str | None:
    """``field.path: why`` for the first over-long integer or lone surrogate (which no
    file system, encoder or Java string round-trips) in the spec; None when none."""
    stack: list[tuple[Any, str]] = [(doc, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _LongInteger):
            return (f"{path}: an integer of {len(value.lstrip('-')):,} digits; numbers in a "
                    f"spec have at most {MAX_INTEGER_DIGITS}")
        if isinstance(value, str) and _surrogate(value):
            return f"{path}: contains a lone surrogate ({_clip(value)}), which is not text"
        if isinstance(value, dict):
            for key, item in value.items():
                at = f"{path}.{key}" if path else key
                if _surrogate(key):
                    return (f"{path or 'payload.spec'}: a key contains a lone surrogate "
                            f"({_clip(key)}), which is not text")
                stack.append((item, at))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
    return None


def _surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def _clip(value: str) -> str:
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _depth(doc: Any) -> int:
    """Nesting depth, iteratively (the document may be adversarial)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return deepest
