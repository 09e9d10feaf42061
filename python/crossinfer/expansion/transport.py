"""The batch transport: many rows per element across the language boundary.

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
result, its row's bytes and columns of model outputs; ``failures`` elements
are one per failed row: the row's bytes, the node, the error.

Model and sequence specs run batch-native
(:mod:`crossinfer.patterns.batched`): the model runs on slices of the batch
and nothing is done per row in Python. A/B and keyed specs route single rows:
each batch is split into Items for the usual graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.coders import RowCoder
from apache_beam.portability.api import schema_pb2
from apache_beam.transforms.window import GlobalWindows
from apache_beam.typehints.schemas import named_tuple_from_schema

from crossinfer.expansion.schemas import InputSchemaError, array_type, atomic_type, describe
from crossinfer.handlers.node_handler import DEFAULT_MAX_BATCH
from crossinfer.patterns.batched import expand_batched, routing_node
from crossinfer.patterns.graph import expand_node
from crossinfer.patterns.transforms import Inference, InferenceOutputs, first_model
from crossinfer.records import Batch, Failure, Item, RecordBase
from crossinfer.rows import IOConfig, check_features, inference_values, surely_finite, to_item

#: ``lengths`` value of a row the client could not pack.
UNPACKED = -1
#: Feature dtypes a batch may carry: packed float32, float64 (float and double
#: arrays), int64 (integer arrays) - what the row transport would make of them.
DTYPES = ("<f4", "<f8", "<i8")
#: Results per result batch at most.
RESULT_BATCH_ROWS = 1024
_FAILURES = "failures"


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
FAILURE_FIELDS: dict[str, schema_pb2.FieldType] = {
    "element": atomic_type(_BYTES), "node": atomic_type(_STRING), "error": atomic_type(_STRING)}


def _schema(fields: dict[str, schema_pb2.FieldType], schema_id: str) -> schema_pb2.Schema:
    out = schema_pb2.Schema(id=schema_id)
    for name, field_type in fields.items():
        out.fields.add(name=name, type=field_type)
    return out


BATCH_SCHEMA = _schema(BATCH_FIELDS, "2f0b1f7e-6d0c-4a57-9a55-0c3c61f2b101")
RESULT_BATCH_SCHEMA = _schema(RESULT_FIELDS, "2f0b1f7e-6d0c-4a57-9a55-0c3c61f2b102")
FAILURE_SCHEMA = _schema(FAILURE_FIELDS, "2f0b1f7e-6d0c-4a57-9a55-0c3c61f2b103")


def output_types() -> tuple[type, type]:
    """(result batch type, failure row type)."""
    return named_tuple_from_schema(RESULT_BATCH_SCHEMA), named_tuple_from_schema(FAILURE_SCHEMA)


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


class _FromBatches(beam.DoFn):
    """A batch element -> Batch records (batch-native) or Items, plus Failures."""

    def __init__(self, io: IOConfig, input_schema: bytes, chunk: int, native: bool) -> None:
        self._io = io
        self._input_schema = input_schema
        self._chunk = chunk
        self._native = native

    def setup(self) -> None:
        coder = RowCoder(schema_pb2.Schema.FromString(self._input_schema))
        self._decode = coder.decode

    def process(self, element: Any) -> Iterator[RecordBase]:
        return iter(from_batch(element, self._io, self._decode, self._chunk, self._native))


def from_batch(element: Any, io: IOConfig, decode_row: Any, chunk: int,
               native: bool) -> list[RecordBase]:
    """The records of one batch element: every row becomes exactly one record
    (a row of a :class:`Batch`, an :class:`Item` or a :class:`Failure`); each
    record's original is the row's bytes (a Batch's: the batch's list of
    row bytes, with its rows' indices)."""
    rows = list(element.rows or ())
    try:
        lengths, values, keys = _columns(element, len(rows))
    except ValueError as exc:
        return [Failure(row, "input", f"malformed batch from the client: {exc}")
                for row in rows]
    out: list[RecordBase] = []
    for i in np.flatnonzero(lengths == UNPACKED).tolist():
        record = _decoded(rows[i], io, decode_row)
        if native and type(record) is Item:
            record = Batch([rows[i]], record.features[None], np.zeros(1, dtype=np.int64))
        out.append(record)
    ok = np.flatnonzero(lengths >= 0)
    if not ok.size:
        return out
    starts = np.concatenate(([0], np.cumsum(lengths[ok], dtype=np.int64)))
    lens = lengths[ok]
    same = bool((lens == lens[0]).all())
    finite = values.dtype.kind != "f" or surely_finite(values)
    if not native:
        order = range(len(ok)) if same else np.argsort(lens, kind="stable").tolist()
        for j in order:
            i = int(ok[j])
            features = values[starts[j]:starts[j + 1]]
            problem = check_features(features, io.features_field, finite=not finite)
            if problem is not None:
                out.append(Failure(rows[i], "input", problem))
            else:
                key = keys[i] if keys is not None else None
                out.append(Item(rows[i], features, key))
        return out
    for length in ([int(lens[0])] if same else np.unique(lens).tolist()):
        if same:
            idx = ok
            x = values.reshape(len(ok), length)
        else:
            pick = np.flatnonzero(lens == length)
            idx = ok[pick]
            x = values[starts[pick][:, None] + np.arange(length)]
        if length == 0 or not finite:
            x, idx = _screen(x, idx, rows, io.features_field, out)
        for lo in range(0, len(idx), chunk):
            out.append(Batch(rows, x[lo:lo + chunk], idx[lo:lo + chunk]))
    return out


def _columns(element: Any, n: int) -> tuple[np.ndarray, np.ndarray, list[Any] | None]:
    dtype = element.dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
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


def _decoded(row: bytes, io: IOConfig, decode_row: Any) -> RecordBase:
    """A row the client could not pack, decoded and checked as the row transport would."""
    try:
        record = to_item(decode_row(row), io)
    except Exception as exc:  # bytes that are not a row of the schema
        return Failure(row, "input", f"the row does not decode with the input schema: "
                                     f"{type(exc).__name__}: {exc}")
    if type(record) is Failure:
        return Failure(row, record.node, record.error)
    return Item(row, record.features, record.key)  # type: ignore[union-attr]


def _screen(x: np.ndarray, idx: np.ndarray, rows: list[bytes], name: str,
            out: list[RecordBase]) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``idx`` without the rows that cannot be inferred (empty, NaN,
    infinity), each of which leaves as a Failure with the row transport's message."""
    keep = np.ones(len(idx), dtype=bool)
    for j in range(len(idx)):
        problem = check_features(x[j], name)
        if problem is not None:
            keep[j] = False
            out.append(Failure(rows[int(idx[j])], "input", problem))
    return (x, idx) if keep.all() else (x[keep], idx[keep])


# ------------------------------------------------------------------ out


class _Column:
    """One result column being filled: whole arrays (from Batch records) or
    single values (from Items), turned into little-endian bytes at the end."""

    __slots__ = ("dtype", "parts", "tail")

    def __init__(self, dtype: str) -> None:
        self.dtype = dtype
        self.parts: list[Any] = []
        self.tail: list[Any] = []

    def add_array(self, values: np.ndarray) -> None:
        if self.tail:
            self.parts.append(self.tail)
            self.tail = []
        self.parts.append(values)

    def tobytes(self) -> bytes:
        parts = [*self.parts, self.tail] if self.tail else self.parts
        if not parts:
            return b""
        return np.concatenate([np.asarray(p, self.dtype).reshape(-1) for p in parts]).tobytes()


_COLUMNS = {"node": "<i4", "inference": "<f8", "inference_lengths": "<i4", "label": "<i8",
            "label_set": "u1", "score": "<f8", "score_set": "u1", "labels": "<i8",
            "labels_lengths": "<i4", "scores": "<f8", "scores_lengths": "<i4"}


class ResultBatchBuilder:
    """Finished records -> result batches; one builder per bundle."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self.clear()

    def clear(self) -> None:
        self.size = 0
        self._rows: list[bytes] = []
        self._nodes: dict[tuple[str, str], int] = {}
        self._c = {name: _Column(dtype) for name, dtype in _COLUMNS.items()}

    def _node(self, model: Any, path: Any) -> int:
        key = (str(model), str(path))
        found = self._nodes.get(key)
        if found is None:
            found = self._nodes[key] = len(self._nodes)
        return found

    def add_batch(self, batch: Batch) -> None:
        k = len(batch.rows)
        c = self._c
        original = batch.original
        self._rows.extend(original[i] for i in batch.rows.tolist())
        c["node"].add_array(np.full(k, self._node(batch.model, batch.path)))
        inference = np.asarray(batch.inference if batch.inference is not None
                               else batch.features).reshape(k, -1)
        c["inference"].add_array(inference)
        c["inference_lengths"].add_array(np.full(k, inference.shape[1]))
        for name in ("label", "score"):
            value = getattr(batch, name)
            c[name].add_array(np.zeros(k) if value is None else np.asarray(value).reshape(k))
            c[name + "_set"].add_array(np.full(k, value is not None))
        for name in ("labels", "scores"):
            value = getattr(batch, name)
            if value is None:
                c[name + "_lengths"].add_array(np.full(k, -1))
            else:
                value = np.asarray(value).reshape(k, -1)
                c[name].add_array(value)
                c[name + "_lengths"].add_array(np.full(k, value.shape[1]))
        self.size += k

    def add_item(self, item: Item) -> None:
        c = self._c
        self._rows.append(item.original)
        c["node"].tail.append(self._node(item.model, item.path))
        inference = inference_values(item)
        c["inference"].tail.extend(inference)
        c["inference_lengths"].tail.append(len(inference))
        for name in ("label", "score"):
            value = getattr(item, name)
            c[name].tail.append(0 if value is None else value)
            c[name + "_set"].tail.append(value is not None)
        for name in ("labels", "scores"):
            value = getattr(item, name)
            if value is None:
                c[name + "_lengths"].tail.append(-1)
            else:
                c[name].tail.extend(value)
                c[name + "_lengths"].tail.append(len(value))
        self.size += 1

    def build(self) -> Any:
        pairs = list(self._nodes)
        values = {name: column.tobytes() for name, column in self._c.items()}
        batch = self._factory(rows=self._rows, models=[m for m, _ in pairs],
                              paths=[p for _, p in pairs], **values)
        self.clear()
        return batch


def failure_row_bytes(failure: Failure) -> bytes:
    """The row bytes of a failed row (a Batch's failures name their row by index)."""
    return failure.original if failure.index is None else failure.original[failure.index]


class _ToResultBatches(beam.DoFn):
    """Finished records -> result batches (main) and failure rows (tagged)."""

    def __init__(self, results_type: type, failures_type: type) -> None:
        self._results_type = results_type
        self._failures_type = failures_type

    def start_bundle(self) -> None:
        self._builder = ResultBatchBuilder(self._results_type)

    def process(self, record: Any) -> Iterator[Any]:
        t = type(record)
        if t is Failure:
            yield pvalue.TaggedOutput(_FAILURES, self._failures_type(
                element=failure_row_bytes(record), node=record.node, error=record.error))
            return
        if t is Batch:
            self._builder.add_batch(record)
        elif t is Item:
            self._builder.add_item(record)
        else:  # pragma: no cover - a bug
            raise TypeError(f"unexpected record {record!r}")
        if self._builder.size >= RESULT_BATCH_ROWS:
            yield self._builder.build()

    def finish_bundle(self) -> Iterator[Any]:
        if self._builder.size:
            yield GlobalWindows.windowed_value_at_end_of_window(self._builder.build())


# ------------------------------------------------------------------ transform


class BatchTransportInference(Inference):
    """Any spec, on batch elements (see the module doc); outputs result batches
    and failure rows. Takes :class:`Inference`'s arguments plus ``input_schema``,
    the schema of the rows inside the batches."""

    def __init__(self, spec: Any, *, input_schema: schema_pb2.Schema, **kwargs: Any) -> None:
        kwargs.pop("output_factory", None)
        kwargs.pop("failure_factory", None)
        super().__init__(spec, **kwargs)
        self._input_schema = input_schema.SerializeToString()
        self.results_type, self.failures_type = output_types()

    def expand(self, pcoll: beam.PCollection) -> InferenceOutputs:
        if not (pcoll.is_bounded and pcoll.windowing.is_default()):
            # Result batches mix rows of a bundle: only where timestamps and
            # windows cannot tell (the client sends rows one by one otherwise).
            raise ValueError("transport 'batches' needs bounded input in the global window; "
                             "send rows one by one (transport 'rows') for other input")
        node = self.spec.node
        native = routing_node(node) is None
        first = first_model(node)
        chunk = (first.batching.max_batch_size if first is not None else None) \
            or DEFAULT_MAX_BATCH
        records = pcoll | "FromBatches" >> beam.ParDo(_FromBatches(
            self.io, self._input_schema, chunk, native)).with_output_types(RecordBase)
        if native:
            finished = expand_batched(records, node, "", self._ctx)
        else:
            finished = expand_node(records, node, "", self._ctx)
        out = finished | "ToResultBatches" >> beam.ParDo(_ToResultBatches(
            self.results_type, self.failures_type)).with_outputs(_FAILURES, main="results")
        return InferenceOutputs(out.results, out[_FAILURES])
