"""The records that flow between crossinfer's steps inside a pipeline.

An input element becomes an :class:`Item` (features as a numpy array plus the
original element, untouched). Each model step replaces ``features`` with its
post-processed output, so a following sequence stage consumes it. Anything that
cannot be inferred becomes a :class:`Failure` carrying the original element,
the node that failed and why; failures pass through later steps unchanged and
leave the pattern on its failures output.

Both derive from :class:`RecordBase`, which has a registered Beam coder
(:class:`RecordCoder`): pickle on the wire, like Beam's fallback, but a cheap
size estimate. Beam samples element sizes for its metrics, and a sampled
*batch* of records would otherwise be pickled whole just to be measured.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
from apache_beam import coders
from apache_beam.coders import coder_impl


class RecordBase:
    """What flows between crossinfer's steps: an :class:`Item` or a :class:`Failure`."""

    __slots__ = ()


class Item(RecordBase):
    """One element in flight. ``path`` names the node that produced ``inference``."""

    __slots__ = ("features", "inference", "inference_list", "key", "label", "labels", "model",
                 "original", "path", "score", "scores")

    def __init__(self, original: Any, features: np.ndarray, key: str | None = None) -> None:
        self.original = original
        self.features = features
        self.key = key
        self.model: str | None = None
        self.path: str | None = None
        self.inference: np.ndarray | None = None
        #: ``inference`` flattened to Python floats, when a model step made
        #: that list for its whole batch at once (the output row's field).
        self.inference_list: list[float] | None = None
        self.label: int | None = None
        self.score: float | None = None
        self.labels: list[int] | None = None
        self.scores: list[float] | None = None

    def derive(self, features: np.ndarray) -> Item:
        """A copy for the next step (A/B mirror arms must not share mutable state)."""
        nxt = Item(self.original, features, self.key)
        nxt.model, nxt.path = self.model, self.path
        return nxt

    def __reduce__(self) -> tuple[Any, ...]:
        # Items cross every GroupByKey and fusion break: spelled out, not looped.
        return (item_from_fields, (self.original, self.features, self.key, self.model, self.path,
                                self.inference, self.inference_list, self.label, self.score,
                                self.labels, self.scores))

    def __repr__(self) -> str:
        return f"Item(path={self.path!r}, key={self.key!r}, features={self.features!r})"


def item_from_fields(original: Any, features: np.ndarray, key: str | None,
                     model: str | None, path: str | None, inference: np.ndarray | None,
                     inference_list: list[float] | None, label: int | None,
                     score: float | None, labels: list[int] | None,
                     scores: list[float] | None) -> Item:
    """An Item with every field given (unpickling, and a model step's results)."""
    item = _new(Item)
    item.original = original
    item.features = features
    item.key = key
    item.model = model
    item.path = path
    item.inference = inference
    item.inference_list = inference_list
    item.label = label
    item.score = score
    item.labels = labels
    item.scores = scores
    return item


_new = object.__new__


class Failure(RecordBase):
    """An element that could not be inferred: the original element, the failing
    node's path and a message a user can act on. For batch-native input
    (:mod:`crossinfer.patterns.batched`) ``index`` is the failing row of the
    original batch (None: the whole batch)."""

    __slots__ = ("error", "index", "node", "original")

    def __init__(self, original: Any, node: str, error: str, index: int | None = None) -> None:
        self.original = original
        self.node = node
        self.error = error
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (Failure, (self.original, self.node, self.error, self.index))

    def __repr__(self) -> str:
        return f"Failure(node={self.node!r}, error={self.error!r})"


class Batch(RecordBase):
    """Rows of one batch-native input element in flight
    (:mod:`crossinfer.patterns.batched`).

    ``features`` holds the rows still in flight, rows first; ``rows`` are their
    indices in the original batch (rows that failed leave as :class:`Failure`
    records with their ``index``). After a model step ``inference`` and, when
    post-processing sets them, ``label``/``score``/``labels``/``scores`` are
    arrays with one entry or row per row.
    """

    __slots__ = ("features", "inference", "label", "labels", "model", "original", "path",
                 "rows", "score", "scores")

    def __init__(self, original: Any, features: np.ndarray, rows: np.ndarray) -> None:
        self.original = original
        self.features = features
        self.rows = rows
        self.model: str | None = None
        self.path: str | None = None
        self.inference: np.ndarray | None = None
        self.label: np.ndarray | None = None
        self.score: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_batch, (tuple(getattr(self, s) for s in Batch.__slots__),))

    def __repr__(self) -> str:
        return f"Batch(path={self.path!r}, rows={len(self.rows)})"


def _rebuild_batch(values: tuple[Any, ...]) -> Batch:
    batch = Batch.__new__(Batch)
    for slot, value in zip(Batch.__slots__, values, strict=False):
        setattr(batch, slot, value)
    return batch


class ItemBatch(list):  # type: ignore[type-arg]
    """Records batched by crossinfer itself (see :mod:`crossinfer.patterns.to_records`):
    one RunInference element that is already a batch, all of one feature shape.

    ``stacked``: the records' features as one array, rows first, when every
    record is an Item with finite features (:func:`crossinfer.rows.stack_batch`
    made it while screening them); None otherwise. A model step then uses it
    as its input batch instead of visiting each record again."""

    __slots__ = ("stacked",)

    def __init__(self, records: Any = (), stacked: np.ndarray | None = None) -> None:
        super().__init__(records)
        self.stacked = stacked


def error_text(exc: BaseException) -> str:
    """``ExceptionType: message`` on one line, bounded in length."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 500 else text[:497] + "..."


# ------------------------------------------------------------------ coder

#: Size guessed for the parts of a record that are not its features.
_RECORD_OVERHEAD_BYTES = 128


def estimate_record_bytes(record: Any) -> int:
    """A cheap estimate of a record's encoded size (for Beam's size metrics)."""
    if type(record) is ItemBatch:
        return sum(estimate_record_bytes(r) for r in record[:1]) * len(record)
    items = getattr(record, "items", None)  # a keyed Chunk: records of one route
    if type(items) is list:
        return sum(estimate_record_bytes(r) for r in items[:1]) * len(items)
    features = getattr(record, "features", None)
    nbytes = getattr(features, "nbytes", 0)
    return _RECORD_OVERHEAD_BYTES + (nbytes if isinstance(nbytes, int) else 0)


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


class RecordCoder(coders.Coder):
    """Pickles records (as Beam's fallback coder would) and estimates their
    size from the features' byte count instead of by pickling them."""

    def _create_impl(self) -> Any:
        return coder_impl.CallbackCoderImpl(_dumps, pickle.loads, estimate_record_bytes)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> Any:
        return RecordBase

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


coders.registry.register_coder(RecordBase, RecordCoder)
coders.registry.register_coder(ItemBatch, RecordCoder)
