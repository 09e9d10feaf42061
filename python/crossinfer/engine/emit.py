"""Finished blocks -> output values: the one place results and failures are built.

Whatever way the rows came in, a finished :class:`~crossinfer.engine.block.Block`
is read the same way (:func:`output_columns`: its model's post-processed
outputs, one row per row) and written in the output format of that way in:

* :class:`RowFormat`: one result row per input row - the input fields plus
  ``model``, ``path``, ``inference`` (a list of floats, flattened), ``label``,
  ``score``, ``labels``, ``scores`` (:data:`crossinfer.wire.OUTPUT_FIELDS`;
  output fields win over input fields of the same name), plus ``model_ms``
  and ``batch_size`` where the transform measures timing (``timing=True``) -
  and one failure row (``element``, ``node``, ``error``) per failure;
* :class:`BatchRowFormat` (batch-native input): one result row per input
  element and path, its outputs as arrays with a row per row, and ``index``
  (the element's rows they are for), plus ``model_ms`` and ``batch_size``
  with timing (an element's rows run in one model call per stage, so they
  share them); failure rows carry ``index`` too;
* :class:`ResultBatchFormat` (the batch transport): result batches of at
  most :data:`~crossinfer.wire.RESULT_BATCH_ROWS` results, columns of
  little-endian bytes (``docs/wire-contract.md``), plus the timing columns
  (:data:`~crossinfer.wire.TIMING_COLUMNS`) with timing; a failure row per
  failed row.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import numpy as np
from apache_beam.pvalue import Row

from crossinfer.engine.block import Block, Failure, element_starts
from crossinfer.rows import fields_view, is_named_tuple
from crossinfer.wire import OUTPUT_FIELDS, RESULT_BATCH_ROWS, RESULT_COLUMNS, TIMING_COLUMNS

RowFactory = Callable[..., Any]


class Columns(NamedTuple):
    """A finished block's outputs: ``inference`` (n, k) and, when
    post-processing set them, ``label``/``score`` (n,) and ``labels``/``scores`` (n, k)."""

    inference: np.ndarray
    label: np.ndarray | None
    score: np.ndarray | None
    labels: np.ndarray | None
    scores: np.ndarray | None


def output_columns(block: Block) -> Columns:
    """What a finished block's rows give (a block no model finished gives its
    features as ``inference``)."""
    n = len(block)
    out = block.outputs
    inference = block.features.reshape(n, -1)
    if out is None:
        return Columns(inference, None, None, None, None)
    return Columns(inference, out.label, out.score,
                   None if out.labels is None else out.labels.reshape(n, -1),
                   None if out.scores is None else out.scores.reshape(n, -1))


class Format(Protocol):
    """How a way in writes its outputs (one per output step, per worker)."""

    def results(self, block: Block) -> list[Any]:
        """The result values of a finished block's rows."""

    def failure(self, failure: Failure) -> Any:
        """The failure value of one failure."""

    def flush(self) -> list[Any]:
        """Results held back until the end of a bundle."""


def row_originals(block: Block) -> list[Any]:
    """The original element of each of a finished block's rows (n): a result
    row holds its fields, then the output fields."""
    if block.owner is None:
        return block.originals
    return [block.originals[o] for o in block.owner.tolist()]


def _floats(values: np.ndarray) -> list[Any]:
    """Rows of an array as lists of Python floats (float16/32 convert exactly)."""
    out: list[Any] = (values if values.dtype.kind == "f" else values.astype(np.float64)).tolist()
    return out


def _as_list(values: np.ndarray | None, dtype: type, n: int) -> list[Any]:
    return [None] * n if values is None else values.astype(dtype, copy=False).tolist()


class RowFormat:
    """Result rows and failure rows, made by ``output_factory`` and
    ``failure_factory`` (default ``beam.Row``; the expansion service passes
    its schema'd NamedTuple types)."""

    def __init__(self, output_factory: RowFactory | None = None,
                 failure_factory: RowFactory | None = None) -> None:
        self._factory: RowFactory = output_factory or Row
        self._failure_factory: RowFactory = failure_factory or Row

    @property
    def beam_rows(self) -> bool:
        """Whether its results are ``beam.Row``s of the input's fields, then
        the output fields (the default: no factory given, no subclass)."""
        return type(self) is RowFormat and self._factory is Row

    def results(self, block: Block) -> list[Any]:
        n = len(block)
        if not n:
            return []
        c = output_columns(block)
        inference = _floats(c.inference)
        label, score = _as_list(c.label, np.int64, n), _as_list(c.score, np.float64, n)
        labels, scores = _as_list(c.labels, np.int64, n), _as_list(c.scores, np.float64, n)
        originals = row_originals(block)
        model, path, factory = block.model, block.path, self._factory
        if block.timing is not None:  # the transform measures timing: two fields more
            timed = ({**fields_view(original), "model": model, "path": path, "inference": inf,
                      "label": lab, "score": sc, "labels": labs, "scores": scs,
                      "model_ms": list(ms), "batch_size": list(sizes)}
                     for original, inf, lab, sc, labs, scs, (ms, sizes) in zip(
                         originals, inference, label, score, labels, scores, block.timing,
                         strict=True))
            if factory is Row:  # (an element's keys need not be names: no keywords)
                return [_row_of(values) for values in timed]
            return [factory(**values) for values in timed]
        rows = zip(originals, inference, label, score, labels, scores, strict=True)
        if factory is Row:  # Row(**values) without unpacking the keywords
            out = []
            for original, inf, lab, sc, labs, scs in rows:
                row = _new(Row)
                row.__dict__ = {**fields_view(original), "model": model, "path": path,
                                "inference": inf, "label": lab, "score": sc, "labels": labs,
                                "scores": scs}
                out.append(row)
            return out
        first: Any = type(originals[0])
        if _appends_outputs(factory, first):
            # A NamedTuple in, a NamedTuple type out whose fields are the input's
            # then the output fields (the expansion service's result rows): one
            # tuple, no dict of the fields, no keyword arguments.
            new: Any = tuple.__new__
            return [new(factory, (*original, model, path, inf, lab, sc, labs, scs))
                    for original, inf, lab, sc, labs, scs in rows]
        return [factory(**{**fields_view(original), "model": model, "path": path,
                           "inference": inf, "label": lab, "score": sc, "labels": labs,
                           "scores": scs})
                for original, inf, lab, sc, labs, scs in rows]

    def failure(self, failure: Failure) -> Any:
        return self._failure_factory(element=failure.original, node=failure.node,
                                     error=failure.error)

    def flush(self) -> list[Any]:
        return []


_new = object.__new__


def _row_of(values: dict[Any, Any]) -> Row:
    """A ``beam.Row`` of ``values``, whatever its keys (``Row(**values)`` needs names)."""
    row = _new(Row)
    row.__dict__ = values
    return row


@functools.cache
def _appends_outputs(factory: Any, input_type: Any) -> bool:
    """Whether ``factory`` is a NamedTuple type whose fields are exactly those of
    the NamedTuple type ``input_type`` followed by :data:`OUTPUT_FIELDS`."""
    if not (is_named_tuple(input_type) and isinstance(factory, type)
            and is_named_tuple(factory)):
        return False
    named: Any = factory  # a NamedTuple type: it has _fields
    return bool(named._fields == input_type._fields + OUTPUT_FIELDS)


class BatchRowFormat(RowFormat):
    """Batch-native results: one row per input element and path, the outputs
    of its rows as arrays (a row per row) and ``index``, the element's rows
    they are for (those that did not fail), in order."""

    def results(self, block: Block) -> list[Any]:
        n = len(block)
        if not n:
            return []
        c = output_columns(block)
        inference = block.features  # arrays keep the model's shape per row
        owner = block.owner if block.owner is not None else np.arange(n)
        index = block.index if block.index is not None else np.zeros(n, dtype=np.int64)
        starts = element_starts(owner)
        out = []
        for lo, hi in zip(starts, [*starts[1:], n], strict=True):
            original = block.originals[int(owner[lo])]
            values = {} if isinstance(original, np.ndarray) else dict(fields_view(original))
            values.update(model=block.model, path=block.path, inference=inference[lo:hi],
                          label=_part(c.label, lo, hi), score=_part(c.score, lo, hi),
                          labels=_part(c.labels, lo, hi), scores=_part(c.scores, lo, hi),
                          index=index[lo:hi])
            if block.timing is not None:  # the element's rows ran together: its first's
                ms, sizes = block.timing[lo]
                values.update(model_ms=list(ms), batch_size=list(sizes))
            out.append(self._factory(**values))
        return out

    def failure(self, failure: Failure) -> Any:
        return self._failure_factory(element=failure.original, node=failure.node,
                                     error=failure.error, index=failure.index)


def _part(values: np.ndarray | None, lo: int, hi: int) -> np.ndarray | None:
    return None if values is None else values[lo:hi]


def _slice(c: Columns, lo: int, hi: int) -> Columns:
    """Rows ``lo:hi`` of ``c``."""
    return Columns(c.inference[lo:hi], _part(c.label, lo, hi), _part(c.score, lo, hi),
                   _part(c.labels, lo, hi), _part(c.scores, lo, hi))


class ResultBatchFormat:
    """Result batches of the batch transport (``docs/wire-contract.md``): each
    result's input row (the bytes that came in: a block's originals are row
    bytes), the distinct (model, path) pairs, and little-endian columns; one
    per :data:`RESULT_BATCH_ROWS` results, the rest at the end of the bundle.
    ``factory`` makes a result batch, ``failure_factory`` a failure row; with
    ``timing``, batches carry the :data:`TIMING_COLUMNS` too."""

    def __init__(self, factory: RowFactory, failure_factory: RowFactory,
                 timing: bool = False) -> None:
        self._factory = factory
        self._failure_factory = failure_factory
        self._dtypes = {**RESULT_COLUMNS, **TIMING_COLUMNS} if timing else RESULT_COLUMNS
        self._timing = timing
        self._clear()

    def _clear(self) -> None:
        self._size = 0
        self._rows: list[bytes] = []
        self._nodes: dict[tuple[str, str], int] = {}
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in self._dtypes}

    def results(self, block: Block) -> list[Any]:
        n = len(block)
        if not n:
            return []
        c = output_columns(block)
        rows = block.originals if block.owner is None else [
            block.originals[o] for o in block.owner.tolist()]
        pair = (str(block.model), str(block.path))
        out, lo = [], 0
        while lo < n:  # at most RESULT_BATCH_ROWS results per batch
            hi = min(n, lo + RESULT_BATCH_ROWS - self._size)
            node = self._nodes.setdefault(pair, len(self._nodes))
            self._add(rows[lo:hi], node, _slice(c, lo, hi))
            if self._timing:
                self._add_timing(block, lo, hi)
            if self._size >= RESULT_BATCH_ROWS:
                out.append(self._build())
            lo = hi
        return out

    def _add(self, rows: list[bytes], node: int, c: Columns) -> None:
        n = len(rows)
        parts = self._parts
        self._rows.extend(rows)
        parts["node"].append(np.full(n, node))
        parts["inference"].append(c.inference)
        parts["inference_lengths"].append(np.full(n, c.inference.shape[1]))
        for name, values in (("label", c.label), ("score", c.score)):
            parts[name].append(np.zeros(n) if values is None else values.reshape(n))
            parts[name + "_set"].append(np.full(n, values is not None))
        for name, values in (("labels", c.labels), ("scores", c.scores)):
            if values is None:
                parts[name + "_lengths"].append(np.full(n, -1))
            else:
                parts[name].append(values)
                parts[name + "_lengths"].append(np.full(n, values.shape[1]))
        self._size += n

    def _add_timing(self, block: Block, lo: int, hi: int) -> None:
        """Rows ``lo:hi`` of ``block``'s timing (none measured: no stages)."""
        parts = self._parts
        timing = block.timing[lo:hi] if block.timing is not None else [((), ())] * (hi - lo)
        parts["model_ms_lengths"].append(np.fromiter((len(ms) for ms, _ in timing), np.int32,
                                                     hi - lo))
        parts["model_ms"].append(np.array([m for ms, _ in timing for m in ms], np.float64))
        parts["batch_size"].append(np.array([r for _, rows in timing for r in rows], np.int64))

    def _build(self) -> Any:
        pairs = list(self._nodes)
        columns = {name: np.concatenate([np.asarray(p, self._dtypes[name]).reshape(-1)
                                         for p in parts]).tobytes() if parts else b""
                   for name, parts in self._parts.items()}
        batch = self._factory(rows=self._rows, models=[m for m, _ in pairs],
                              paths=[p for _, p in pairs], **columns)
        self._clear()
        return batch

    def failure(self, failure: Failure) -> Any:
        return self._failure_factory(element=failure.original, node=failure.node,
                                     error=failure.error)

    def flush(self) -> list[Any]:
        return [self._build()] if self._size else []
