"""Batch-native input: elements that already carry many rows.

``rows | BatchedInference(spec)`` takes elements that each hold a batch -
a numpy array with the rows first, a Row/dict whose features field holds one
(or a list of equal-length lists), or a *packed tensor*: the features field
holds little-endian float32 bytes and a ``shape`` field their shape, rows
first, which is how a batch crosses a language boundary cheaply. Each batch
stays one element end to end: RunInference runs the model once per batch
(see :class:`~crossinfer.handlers.batch_handler.BatchNodeHandler`), so the
per-element cost of the runner is paid once per batch, not once per row.

Outputs, one result row per input batch: the input fields, plus ``model``,
``path``, ``inference`` (a numpy array, one row per row), ``label``/``score``
and ``labels``/``scores`` (numpy arrays, when post-processing sets them) and
``index`` (the rows of the input batch these results are for, in order).
Failures: one row per failed input row - ``element`` (the input batch),
``node``, ``error`` and ``index`` (the row; None when the whole element is
malformed). Rows in == rows in results + failures.

Model and sequence specs are supported; A/B and keyed specs need
per-row routing and are refused at construction (use :class:`Inference`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.ml.inference.base import RunInference

from crossinfer.handlers.batch_handler import BatchNodeHandler
from crossinfer.handlers.registry import model_handler
from crossinfer.patterns.context import ExpandContext, child_path
from crossinfer.patterns.transforms import Inference, InferenceOutputs
from crossinfer.records import Batch, Failure, RecordBase
from crossinfer.rows import PACKED_DTYPE, RowFactory, fields_view, surely_finite
from crossinfer.spec.nodes import ModelNode, Node, SequenceNode

_FAILURES = "failures"


# ------------------------------------------------------------------ input


def to_batch(element: Any, features_field: str, shape_field: str) -> list[RecordBase]:
    """An input element as a :class:`Batch` of its valid rows, plus a
    :class:`Failure` per invalid row (or one for a malformed element)."""
    if isinstance(element, np.ndarray):
        raw: Any = element
        fields: Any = {}
    else:
        try:
            fields = fields_view(element)
        except TypeError as exc:
            return [Failure(element, "input", str(exc))]
        raw = fields.get(features_field)
    try:
        x = _as_array(raw, fields, features_field, shape_field)
    except ValueError as exc:
        return [Failure(element, "input", str(exc))]
    n = x.shape[0]
    if x.dtype.kind == "f" and not surely_finite(x):
        finite = np.isfinite(x.reshape(n, -1)).all(axis=1)
        bad = np.flatnonzero(~finite)
        if bad.size:
            failures: list[RecordBase] = [
                Failure(element, "input", f"row {int(i)} of field {features_field!r} contains "
                                          "NaN or infinity", index=int(i)) for i in bad]
            rows = np.flatnonzero(finite)
            if rows.size:
                failures.insert(0, Batch(element, x[rows], rows))
            return failures
    return [Batch(element, x, np.arange(n))]


def _as_array(raw: Any, fields: Any, name: str, shape_field: str) -> np.ndarray:
    if raw is None:
        raise ValueError(f"field {name!r} is missing or null")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        x = _unpack(raw, fields.get(shape_field), name, shape_field)
    elif isinstance(raw, str):
        raise ValueError(f"field {name!r} must be a batch of numbers, got str")
    else:
        try:
            x = np.asarray(raw)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"field {name!r} is not a numeric array: {exc}") from None
    if x.dtype.kind not in "iuf":
        raise ValueError(f"field {name!r} must contain only numbers (found dtype {x.dtype})")
    if x.ndim < 2:
        raise ValueError(f"field {name!r} must hold a batch, rows first (at least 2 "
                         f"dimensions), got shape {list(x.shape)}")
    if x.size == 0:
        raise ValueError(f"field {name!r} holds an empty batch (shape {list(x.shape)})")
    return x


def _unpack(raw: Any, shape: Any, name: str, shape_field: str) -> np.ndarray:
    if shape is None or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                and d >= 0 for d in shape):
        raise ValueError(f"field {name!r} holds packed float32 bytes, so field "
                         f"{shape_field!r} must give their shape as non-negative integers, "
                         f"rows first; got {shape!r}")
    dims = tuple(int(d) for d in shape)
    values = np.frombuffer(raw, dtype=PACKED_DTYPE)
    if values.size != math.prod(dims):
        raise ValueError(f"field {name!r} holds {values.size} float32 values, but "
                         f"{shape_field!r} {list(dims)} needs {math.prod(dims)}")
    return values.reshape(dims)


class _ToBatches(beam.DoFn):
    def __init__(self, features_field: str, shape_field: str) -> None:
        self._features_field = features_field
        self._shape_field = shape_field

    def process(self, element: Any) -> Iterator[RecordBase]:
        yield from to_batch(element, self._features_field, self._shape_field)


# ------------------------------------------------------------------ output


def batch_output_row(batch: Batch, factory: RowFactory = beam.Row) -> Any:
    values = {} if isinstance(batch.original, np.ndarray) else dict(fields_view(batch.original))
    values["model"] = batch.model
    values["path"] = batch.path
    values["inference"] = batch.inference if batch.inference is not None else batch.features
    values["label"] = batch.label
    values["score"] = batch.score
    values["labels"] = batch.labels
    values["scores"] = batch.scores
    values["index"] = batch.rows
    return factory(**values)


class _ToRows(beam.DoFn):
    def __init__(self, output_factory: RowFactory | None,
                 failure_factory: RowFactory | None) -> None:
        self._output_factory = output_factory or beam.Row
        self._failure_factory = failure_factory or beam.Row

    def process(self, record: Any) -> Iterator[Any]:
        if type(record) is Batch:
            yield batch_output_row(record, self._output_factory)
        else:
            yield pvalue.TaggedOutput(_FAILURES, self._failure_factory(
                element=record.original, node=record.node, error=record.error,
                index=record.index))


# ------------------------------------------------------------------ graph


def expand_batched(records: beam.PCollection, node: Node, parent: str,
                   ctx: ExpandContext) -> beam.PCollection:
    path = child_path(parent, node.name)
    if isinstance(node, SequenceNode):
        for stage in node.stages:
            records = expand_batched(records, stage, path, ctx)
        return records
    assert isinstance(node, ModelNode)
    # Typed records use RecordCoder (cheap size estimates for Beam's metrics).
    records.element_type = RecordBase
    inner = model_handler(node, ctx.policy, path)
    inner.bounded = records.is_bounded
    handler = BatchNodeHandler(inner)
    return records | f"RunInference[{path}]" >> RunInference(handler)


def routing_node(node: Node) -> Node | None:
    """The first node in ``node`` that routes single elements (anything but a
    model or a sequence of them), or None when every element meets the same
    models and the spec can run on whole batches."""
    if isinstance(node, SequenceNode):
        for stage in node.stages:
            found = routing_node(stage)
            if found is not None:
                return found
        return None
    return None if isinstance(node, ModelNode) else node


def _check_supported(node: Node) -> None:
    routing = routing_node(node)
    if routing is not None:
        raise TypeError(f"BatchedInference runs model and sequence nodes; {routing.kind} node "
                        f"{routing.name!r} routes single elements: use crossinfer.Inference")


class BatchedInference(Inference):
    """Run a model or sequence spec on batch-native elements (see the module doc).

    Takes the arguments of :class:`Inference`, plus ``shape_field`` (the field
    giving the shape of a packed float32 ``bytes`` features field).
    """

    def __init__(self, spec: Any, *, features_field: str = "features",
                 shape_field: str = "shape", **kwargs: Any) -> None:
        super().__init__(spec, features_field=features_field, **kwargs)
        _check_supported(self.spec.node)
        self.shape_field = shape_field

    def expand(self, pcoll: beam.PCollection) -> InferenceOutputs:
        records = pcoll | "ToBatches" >> beam.ParDo(
            _ToBatches(self.io.features_field, self.shape_field)).with_output_types(RecordBase)
        finished = expand_batched(records, self.spec.node, "", self._ctx)
        rows = finished | "ToRows" >> beam.ParDo(
            _ToRows(self._output_factory, self._failure_factory)).with_outputs(
            _FAILURES, main="results")
        return InferenceOutputs(rows.results, rows[_FAILURES])
