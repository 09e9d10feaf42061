"""The batch transport: many rows per element across the language boundary (the wire side).

A Java (or any SDK's) pipeline with bounded input in the global window sends
its rows to the service in *batches*, not one Beam element per row: the
runner then moves, and each side encodes, one element per few hundred rows,
and the Python workers never decode a row. The client keeps every row as its
own Row-encoded bytes, which travel through the pipeline untouched and come
back with their results, so the client rebuilds the result rows and failure
rows of the row transport exactly (docs/wire-contract.md, *Batch transport*).

In, one element per batch (:data:`BATCH_FIELDS`): ``rows`` (each row's
bytes), ``features`` (every row's feature values, concatenated, little-endian
``dtype``), ``lengths`` (int32 values per row; -1 for a row whose features the
client could not pack: a null, a null value, an odd byte count - that row is
decoded here and fails with the row transport's message) and ``keys``.

Out: ``results`` elements are result batches (:data:`RESULT_FIELDS`): per
result, its row's bytes and columns of model outputs (and, with timing, the
:data:`TIMING_FIELDS` columns of each result's ``model_ms`` and
``batch_size``); ``failures`` elements
are one per failed row: the row's bytes, the node, the error.

This module is only the wire format: :class:`BatchTransportReader` reads a
batch's rows into the engine (each row's original is its bytes, so every
failure names its row) and :class:`~crossinfer.engine.emit.ResultBatchFormat`
writes result batches; any spec runs between them as it does on rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from apache_beam.coders import RowCoder
from apache_beam.portability.api import schema_pb2
from apache_beam.pvalue import PCollection
from apache_beam.typehints.schemas import named_tuple_from_schema

from crossinfer.engine.assemble import Assembler
from crossinfer.engine.block import Block, Failure
from crossinfer.engine.emit import Format, ResultBatchFormat
from crossinfer.expansion.schemas import InputSchemaError, array_type, atomic_type, describe
from crossinfer.patterns import Inference, InferenceOutputs
from crossinfer.rows import IOConfig, check_features, features_of, fields_view, key_of
from crossinfer.wire import BATCH_DTYPES, INPUT_NODE, TIMING_COLUMNS, UNPACKED

_BYTES, _STRING = schema_pb2.BYTES, schema_pb2.STRING

BATCH_FIELDS: dict[str, schema_pb2.FieldType] = {
    "rows": array_type(_BYTES),
    "features": atomic_type(_BYTES),
    "dtype": atomic_type(_STRING),
    "lengths": atomic_type(_BYTES),
    "keys": array_type(_STRING, nullable=True, element_nullable=True),
}
RESULT_FIELDS: dict[str, schema_pb2.FieldType] = {
    "rows": array_type(_BYTES),           # each result's input row
    "models": array_type(_STRING),        # distinct (model, path) pairs ...
    "paths": array_type(_STRING),
    "node": atomic_type(_BYTES),            # ... and each result's pair: <i4
    "inference": atomic_type(_BYTES),       # <f8, concatenated
    "inference_lengths": atomic_type(_BYTES),  # <i4
    "label": atomic_type(_BYTES),           # <i8 (0 where unset)
    "label_set": atomic_type(_BYTES),       # u1
    "score": atomic_type(_BYTES),           # <f8 (0 where unset)
    "score_set": atomic_type(_BYTES),       # u1
    "labels": atomic_type(_BYTES),          # <i8, concatenated
    "labels_lengths": atomic_type(_BYTES),  # <i4, -1 = null
    "scores": atomic_type(_BYTES),          # <f8, concatenated
    "scores_lengths": atomic_type(_BYTES),  # <i4, -1 = null
}
#: What a result batch adds with timing (:data:`crossinfer.wire.TIMING_COLUMNS`).
TIMING_FIELDS: dict[str, schema_pb2.FieldType] = {
    "model_ms": atomic_type(_BYTES),          # <f8, concatenated
    "model_ms_lengths": atomic_type(_BYTES),  # <i4: each result's model stages
    "batch_size": atomic_type(_BYTES),        # <i8, concatenated (model_ms_lengths)
}
assert tuple(TIMING_FIELDS) == tuple(TIMING_COLUMNS), "keep in step with crossinfer.wire"
FAILURE_ROW_FIELDS: dict[str, schema_pb2.FieldType] = {
    "element": atomic_type(_BYTES), "node": atomic_type(_STRING), "error": atomic_type(_STRING)}


def _schema(fields: dict[str, schema_pb2.FieldType], schema_id: str) -> schema_pb2.Schema:
    out = schema_pb2.Schema(id=schema_id)
    for name, field_type in fields.items():
        out.fields.add(name=name, type=field_type)
    return out


BATCH_SCHEMA = _schema(BATCH_FIELDS, "2f0b1f7e-6d0c-4a57-9a55-0c3c61f2b101")
RESULT_BATCH_SCHEMA = _schema(RESULT_FIELDS, "2f0b1f7e-6d0c-4a57-9a55-0c3c61f2b102")
FAILURE_SCHEMA = _schema(FAILURE_ROW_FIELDS, "2f0b1f7e-6d0c-4a57-9a55-0c3c61f2b103")
#: Result batches with timing: :data:`RESULT_FIELDS` then :data:`TIMING_FIELDS`.
TIMED_RESULT_BATCH_SCHEMA = _schema({**RESULT_FIELDS, **TIMING_FIELDS},
                                    "2f0b1f7e-6d0c-4a57-9a55-0c3c61f2b104")


def batch_output_types(timing: bool = False) -> tuple[type, type]:
    """(result batch type, failure row type) of the batch transport (result
    batches with the timing columns when ``timing``)."""
    results = TIMED_RESULT_BATCH_SCHEMA if timing else RESULT_BATCH_SCHEMA
    return named_tuple_from_schema(results), named_tuple_from_schema(FAILURE_SCHEMA)


def check_batch_schema(schema: schema_pb2.Schema) -> None:
    """Raise InputSchemaError unless ``schema`` is the batch schema (field order free)."""
    found = {f.name: f.type for f in schema.fields}
    for name, expected in BATCH_FIELDS.items():
        got = found.pop(name, None)
        if got is None or not _same_type(got, expected):
            raise InputSchemaError(
                f"input: with transport 'batches' the input rows are batches; field {name!r} "
                f"must be {_spell(expected)}, got "
                f"{_spell(got) if got is not None else 'no such field'}")
    if found:
        raise InputSchemaError(f"input: with transport 'batches' the batch schema has no "
                               f"field(s) {', '.join(map(repr, found))}")


def _same_type(a: schema_pb2.FieldType, b: schema_pb2.FieldType) -> bool:
    if a.WhichOneof("type_info") == "array_type" == b.WhichOneof("type_info"):
        return a.nullable == b.nullable and _same_type(a.array_type.element_type,
                                                       b.array_type.element_type)
    return (a.WhichOneof("type_info") == b.WhichOneof("type_info") == "atomic_type"
            and a.atomic_type == b.atomic_type and a.nullable == b.nullable)


def _spell(t: schema_pb2.FieldType) -> str:
    return describe(t) + (" (nullable)" if t.nullable else "")


# ------------------------------------------------------------------ in


class BatchTransportReader:
    """A client's batch -> rows, each with its row's bytes as its original.
    Packed rows are sliced from the batch's feature values (grouped by length);
    a row the client could not pack is decoded with the input schema and read
    as the row transport reads it; a malformed batch fails each of its rows."""

    def __init__(self, io: IOConfig, input_schema: bytes, keyed: bool) -> None:
        self._io = io
        self._input_schema = input_schema
        self._keyed = keyed

    def setup(self) -> None:
        self._decode: Callable[[bytes], Any] = RowCoder(
            schema_pb2.Schema.FromString(self._input_schema)).decode

    def read(self, element: Any, into: Assembler) -> tuple[Block, ...]:
        rows = list(element.rows or ())
        released: list[Block] = []
        try:
            lengths, values, keys = _columns(element, len(rows))
        except ValueError as exc:
            for row in rows:
                released += into.fail(Failure(row, INPUT_NODE,
                                              f"malformed batch from the client: {exc}"))
            return tuple(released)
        if not self._keyed:
            keys = None
        for i in np.flatnonzero(lengths == UNPACKED).tolist():
            released += self._read_unpacked(rows[i], into)
        ok = np.flatnonzero(lengths >= 0)
        if not ok.size:
            return tuple(released)
        lens = lengths[ok]
        starts = np.concatenate(([0], np.cumsum(lens, dtype=np.int64)))
        name = self._io.features_field
        for length in ([int(lens[0])] if (lens == lens[0]).all() else np.unique(lens).tolist()):
            pick = np.flatnonzero(lens == length)
            idx = ok[pick].tolist()
            if length == 0:  # nothing to slice: each row fails as the row transport's would
                problem = check_features(values[:0], name) or ""
                for i in idx:
                    released += into.fail(Failure(rows[i], INPUT_NODE, problem))
                continue
            if len(pick) == len(ok):
                x = values.reshape(len(ok), length)
            else:
                x = values[starts[pick][:, None] + np.arange(length)]
            released += into.add_rows([rows[i] for i in idx], x,
                                      keys=None if keys is None else [keys[i] for i in idx])
        return tuple(released)

    def _read_unpacked(self, row: bytes, into: Assembler) -> tuple[Block, ...]:
        """A row the client could not pack, decoded and read as the row transport would."""
        try:
            fields = fields_view(self._decode(row))
        except Exception as exc:  # bytes that are not a row of the schema
            return into.fail(Failure(row, INPUT_NODE, f"the row does not decode with the input "
                                                      f"schema: {type(exc).__name__}: {exc}"))
        features = features_of(fields, self._io.features_field)
        if isinstance(features, str):
            return into.fail(Failure(row, INPUT_NODE, features))
        key = key_of(fields, self._io.key_field) if self._keyed else None
        return into.add_rows([row], features[None], keys=[key])


def _columns(element: Any, n: int) -> tuple[np.ndarray, np.ndarray, list[Any] | None]:
    dtype = element.dtype
    if dtype not in BATCH_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(BATCH_DTYPES)}")
    lengths = np.frombuffer(element.lengths or b"", "<i4")
    if len(lengths) != n:
        raise ValueError(f"{len(lengths)} lengths for {n} rows")
    if (lengths < UNPACKED).any():
        raise ValueError("a length is below -1")
    features = element.features or b""
    total = int(lengths[lengths > 0].sum(dtype=np.int64))
    if len(features) != total * np.dtype(dtype).itemsize:
        raise ValueError(f"the lengths add up to {total} values, but features holds "
                         f"{len(features)} bytes of {dtype}")
    values = np.frombuffer(features, dtype)
    keys = element.keys
    if keys is not None and len(keys) != n:
        raise ValueError(f"{len(keys)} keys for {n} rows")
    return lengths, values, keys


# ------------------------------------------------------------------ transform


class BatchTransportInference(Inference):
    """Any spec, on batch elements (see the module doc); outputs result batches
    and failure rows. Takes :class:`Inference`'s arguments plus ``input_schema``,
    the schema of the rows inside the batches; with ``timing=True`` result
    batches carry the timing columns (:data:`TIMING_FIELDS`).

    Raises (when applied):
      ValueError: the input is unbounded or not in the global window.
    """

    def __init__(self, spec: Any, *, input_schema: schema_pb2.Schema, **kwargs: Any) -> None:
        kwargs.pop("output_factory", None)
        kwargs.pop("failure_factory", None)
        super().__init__(spec, **kwargs)
        self._input_schema = input_schema.SerializeToString()
        self.results_type, self.failures_type = batch_output_types(self.timing)

    def _reader(self) -> BatchTransportReader:
        return BatchTransportReader(self.io, self._input_schema, self.keyed)

    def _format(self) -> Format:
        return ResultBatchFormat(self.results_type, self.failures_type, self.timing)

    def expand(self, pcoll: PCollection[Any]) -> InferenceOutputs:
        if not (pcoll.is_bounded and pcoll.windowing.is_default()):
            # Result batches mix rows of a bundle: only where timestamps and
            # windows cannot tell (the client sends rows one by one otherwise).
            raise ValueError("transport 'batches' needs bounded input in the global window; "
                             "send rows one by one (transport 'rows') for other input")
        return super().expand(pcoll)
