"""The one unit in flight: a :class:`Block` of rows, and the :class:`Failure` of a row.

Every step of every pattern hands on blocks: the step that reads input makes
them, model steps turn their rows into results (:mod:`crossinfer.engine.runner`),
A/B splits and keyed routes pass on some of their rows, and the last step
turns them into output rows (:mod:`crossinfer.engine.emit`). An element of
the input is one row (``n = 1`` when the runner's own batching brings
elements one by one), or, for batch-native input, many rows of one block.

Blocks are never changed once made (an A/B mirror hands the same block to
every arm): each step makes new ones. They are pickled on the wire by
:class:`BlockCoder`, like Beam's fallback coder, but with a cheap size
estimate: Beam samples element sizes for its metrics and would otherwise
pickle a sampled block whole just to measure it.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Sequence
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
from apache_beam import coders
from apache_beam.coders import coder_impl, typecoders
from apache_beam.pvalue import Row

from crossinfer.processing.ops import Outputs

#: One row's measured model calls so far, per model on its path in order:
#: (ms per row of each call, rows in each call).
Timing = tuple[tuple[float, ...], tuple[int, ...]]
#: A row no model has run on yet.
NO_TIMING: Timing = ((), ())

#: The arrays of :class:`Outputs` besides ``inference``, one entry or row per row.
EXTRA_OUTPUTS = ("label", "score", "labels", "scores")


class Failure:
    """A row that could not be inferred: its original element, the failing
    node's path (``input`` for malformed input) and a message a user can act
    on. ``index`` is the row within a batch-native element (None: the row is
    the whole element, or the element is malformed as a whole)."""

    __slots__ = ("error", "index", "node", "original")

    def __init__(self, original: Any, node: str, error: str, index: int | None = None) -> None:
        self.original = original
        self.node = node
        self.error = error
        self.index = index

    def __reduce__(self) -> tuple[Any, ...]:
        return (Failure, (self.original, self.node, self.error, self.index))

    def __repr__(self) -> str:
        return f"Failure(node={self.node!r}, error={self.error!r}, index={self.index!r})"


def error_text(exc: BaseException) -> str:
    """``ExceptionType: message`` on one line, bounded in length."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 500 else text[:497] + "..."


class Block:
    """``n`` rows of one feature shape in flight, and the failures met so far.

    * ``features``: (n, ...) array - the next model's input; after a model, its
      post-processed output (``outputs.inference``);
    * ``originals``: the input elements the rows come from; row ``i``'s is
      ``originals[i]`` when ``owner`` is None, else ``originals[owner[i]]``;
    * ``index``: (n,) row of each row within its batch-native element, or None;
    * ``keys``: each row's key (hash splits, keyed routes), or None when the
      spec needs none;
    * after a model: ``model``, ``path`` and ``outputs`` (the post-processed
      :class:`~crossinfer.processing.ops.Outputs`, one entry or row per row);
    * ``route``: the keyed route the block is for, once routed;
    * ``failures``: rows that failed upstream and leave with this block;
    * ``timing``: None, or (when the transform measures it, ``timing=True``)
      each row's :data:`Timing` so far: per model on its path, the model call's
      wall time divided by its rows (ms), and those rows.
    """

    __slots__ = ("failures", "features", "index", "keys", "model", "originals", "outputs",
                 "owner", "path", "route", "timing")

    def __init__(self, originals: list[Any], features: np.ndarray,
                 owner: np.ndarray | None = None, index: np.ndarray | None = None,
                 keys: list[str | None] | None = None,
                 failures: list[Failure] | None = None) -> None:
        self.originals = originals
        self.features = features
        self.owner = owner
        self.index = index
        self.keys = keys
        self.failures: list[Failure] = failures if failures is not None else []
        self.model: str | None = None
        self.path: str | None = None
        self.outputs: Outputs | None = None
        self.route: str | None = None
        self.timing: list[Timing] | None = None

    @classmethod
    def of_failures(cls, failures: list[Failure]) -> Block:
        """A block of no rows that carries ``failures`` on."""
        return cls([], _NO_ROWS, failures=failures)

    def __len__(self) -> int:
        return len(self.features)

    def __repr__(self) -> str:
        return (f"Block(path={self.path!r}, rows={len(self)}, route={self.route!r}, "
                f"failures={len(self.failures)})")

    def __reduce__(self) -> tuple[Any, ...]:
        values = [getattr(self, name) for name in Block.__slots__]
        columns = _row_columns(self.originals)
        if columns is None:
            return (_rebuild, tuple(values))
        values[_ORIGINALS] = columns
        return (_rebuild_rows, tuple(values))

    # ---------------------------------------------------------------- rows

    def original(self, row: int) -> Any:
        """The input element row ``row`` comes from."""
        return self.originals[row if self.owner is None else int(self.owner[row])]

    def failure(self, row: int, node: str, error: str) -> Failure:
        """Row ``row``'s failure at ``node``."""
        return Failure(self.original(row), node, error,
                       None if self.index is None else int(self.index[row]))

    def _copy(self) -> Block:
        block = _new(Block)
        # Every slot, spelled out: a loop of setattr/getattr cost 1.3 us a copy,
        # and every model step copies each block it finishes.
        (block.failures, block.features, block.index, block.keys, block.model,
         block.originals, block.outputs, block.owner, block.path, block.route,
         block.timing) = (self.failures, self.features, self.index, self.keys, self.model,
                          self.originals, self.outputs, self.owner, self.path, self.route,
                          self.timing)
        return block

    def with_failures(self, failures: list[Failure]) -> Block:
        """The same rows, carrying ``failures`` (instead of this block's)."""
        block = self._copy()
        block.failures = failures
        return block

    def take(self, rows: np.ndarray) -> Block:
        """The rows ``rows`` (sorted positions) of this block, without its failures."""
        if len(rows) == len(self):
            return self.with_failures([])
        block = self._copy()
        block.failures = []
        block.features = self.features[rows]
        positions = rows.tolist()
        if self.owner is None:
            block.originals = [self.originals[i] for i in positions]
        else:
            block.owner = self.owner[rows]
        if self.index is not None:
            block.index = self.index[rows]
        if self.keys is not None:
            block.keys = [self.keys[i] for i in positions]
        if self.outputs is not None:
            block.outputs = self.outputs.take(rows)
        if self.timing is not None:
            block.timing = [self.timing[i] for i in positions]
        return block

    def finish(self, model: str, path: str, outputs: Outputs) -> Block:
        """These rows after a model: its post-processed ``outputs`` (one per row)."""
        block = self._copy()
        block.model, block.path, block.outputs = model, path, outputs
        block.features = outputs.inference
        return block

    def timed(self, ms: float, rows: int) -> Block:
        """These rows with one more model call on their path, of ``rows`` rows
        taking ``ms`` per row (no-op unless the block measures timing)."""
        if self.timing is None:
            return self
        block = self._copy()
        block.timing = [((*t[0], ms), (*t[1], rows)) for t in self.timing]
        return block

    def cut(self, size: int) -> list[Block]:
        """This block as blocks of at most ``size`` rows, cut between input
        elements only (a batch-native element larger than ``size`` stays whole).
        The failures leave with the first."""
        n = len(self)
        if n <= size:
            return [self]
        if self.owner is None:
            bounds = [*range(0, n, size), n]
        else:  # greedily, whole elements (their rows are consecutive) per block
            starts = element_starts(self.owner)
            bounds = [0]
            for start, end in zip(starts, [*starts[1:], n], strict=True):
                if end - bounds[-1] > size and start > bounds[-1]:
                    bounds.append(start)
            bounds.append(n)
        pieces = [self.take(np.arange(lo, hi)) for lo, hi in itertools.pairwise(bounds)]
        pieces[0].failures = self.failures
        return pieces


def element_starts(owner: np.ndarray) -> list[int]:
    """The first row of each element's rows, given each row's element
    (``owner``, non-empty; an element's rows are consecutive, as in every
    block). One element, the common case of batch-native input, costs two
    reads; else one comparison of neighbours (``np.diff`` with a prepended
    value cost 5.5 us on 256 rows, this 2 us)."""
    if owner[0] == owner[-1]:
        return [0]
    return [0, *(np.flatnonzero(owner[1:] != owner[:-1]) + 1).tolist()]


def concat(blocks: Sequence[Block]) -> Block:
    """The rows of ``blocks`` (of one feature shape) as one block awaiting a
    model, carrying all their failures (their outputs are not kept)."""
    if len(blocks) == 1:
        return blocks[0]
    features = np.concatenate([b.features for b in blocks])
    failures = [f for b in blocks for f in b.failures]
    keys = None if any(b.keys is None for b in blocks) else [
        k for b in blocks for k in (b.keys or ())]
    if all(b.owner is None for b in blocks):
        originals = [o for b in blocks for o in b.originals]
        block = Block(originals, features, keys=keys, failures=failures)
    else:
        owners, originals = [], []
        offsets: dict[int, int] = {}  # pieces of one block share its originals: kept once
        for b in blocks:
            own = np.arange(len(b)) if b.owner is None else b.owner
            offset = offsets.get(id(b.originals)) if b.owner is not None else None
            if offset is None:
                offset = len(originals)
                originals.extend(b.originals)
                if b.owner is not None:
                    offsets[id(b.originals)] = offset
            owners.append(own + offset)
        block = Block(originals, features, np.concatenate(owners), keys=keys, failures=failures)
    if all(b.index is not None for b in blocks):
        block.index = np.concatenate([b.index for b in blocks if b.index is not None])
    if all(b.timing is not None for b in blocks):
        block.timing = [t for b in blocks for t in b.timing or ()]
    block.route = blocks[0].route
    return block


def concat_outputs(parts: Sequence[Outputs]) -> Outputs:
    """Outputs of consecutive rows as one."""
    if len(parts) == 1:
        return parts[0]
    merged = Outputs(np.concatenate([p.inference for p in parts]))
    for name in EXTRA_OUTPUTS:
        values = [getattr(p, name) for p in parts]
        if all(v is not None for v in values):
            setattr(merged, name, np.concatenate(values))
    return merged


_new = object.__new__
_NO_ROWS = np.empty((0,), dtype=np.float32)


_ORIGINALS = 5
assert Block.__slots__[_ORIGINALS] == "originals"
assert Block.__slots__ == ("failures", "features", "index", "keys", "model", "originals",
                           "outputs", "owner", "path", "route", "timing")  # Block._copy


def _row_columns(originals: list[Any]) -> tuple[tuple[str, ...], list[Any]] | None:
    """``beam.Row`` originals of the same fields, in the same order, as
    columns: a field whose values are ndarrays of one dtype and shape (at
    least 1-D) as one stacked array, any other as the list of its values;
    None for other originals (pickled as they are).

    Why: a block is pickled wherever it crosses a stage (an A/B test's merge
    of its arms, on the FnApiRunner: a Flatten of several inputs is always
    materialized), and pickling each row's small features array cost more
    than the model (a 100,000-element mirror: 782 blocks, 1.6-2.1 s to pickle
    and unpickle; as columns 0.7-1.0 s)."""
    if not originals or set(map(type, originals)) != _ROW_TYPE:
        return None
    fields = list(map(vars, originals))  # (a Row keeps its fields in its __dict__)
    names = tuple(fields[0])
    if not names or set(map(tuple, fields)) != {names}:
        return None  # (rows without fields: no column would say how many there are)
    columns: list[Any] = []
    for name in names:
        values = list(map(itemgetter(name), fields))
        columns.append(_stacked(values) if type(values[0]) is np.ndarray else values)
    return names, columns


def _stacked(values: list[Any]) -> Any:
    """``values`` as one stacked array where that gives each row back as it
    was - ndarrays of one shape (at least 1-D) and dtype, native byte order,
    no dtype metadata, writeable (np.stack makes a native-order, writeable
    array and drops metadata) - else ``values`` as they are."""
    first = values[0]
    if first.ndim and first.dtype.isnative and first.dtype.metadata is None \
            and set(map(type, values)) == _NDARRAY and len(set(map(_dtype, values))) == 1 \
            and len(set(map(_shape, values))) == 1 and all(map(_writeable, values)):
        return np.stack(values)
    return values


_NDARRAY = {np.ndarray}
_dtype, _shape, _writeable = attrgetter("dtype"), attrgetter("shape"), attrgetter("flags.writeable")
_ROW_TYPE = {Row}


class ColumnRows(list):  # type: ignore[type-arg]  # of beam.Row
    """The originals of a block rebuilt from :func:`_row_columns`: ``beam.Row``
    s of the same fields in the same order, with those fields as ``columns``
    (name -> a stacked array or the list of the rows' values, row order), for
    a reader that wants one field of every row without reading each row (the
    experiment report). A list made from it (a slice, a comprehension) is a
    plain list, without columns."""

    __slots__ = ("columns",)
    columns: dict[str, Any]


def _rebuild_rows(*values: Any) -> Block:
    """A block whose originals were pickled as :func:`_row_columns`: each
    row's array is its row of the stacked array (a view: same dtype, shape
    and values); the originals keep their columns (:class:`ColumnRows`)."""
    names, columns = values[_ORIGINALS]
    rows = ColumnRows()
    for row_values in zip(*(list(c) for c in columns), strict=True):
        row = _new(Row)
        row.__dict__ = dict(zip(names, row_values, strict=True))
        rows.append(row)
    rows.columns = dict(zip(names, columns, strict=True))
    return _rebuild(*values[:_ORIGINALS], rows, *values[_ORIGINALS + 1:])


def _rebuild(*values: Any) -> Block:
    block = _new(Block)
    for name, value in zip(Block.__slots__, values, strict=True):
        setattr(block, name, value)
    return block


# ------------------------------------------------------------------ coder

#: Size guessed for the parts of a block that are not its features, per row.
_ROW_OVERHEAD_BYTES = 128


def estimate_bytes(value: Any) -> int:
    """A cheap estimate of a block's encoded size (for Beam's size metrics);
    of a (route, block) pair, its block's."""
    if type(value) is tuple and len(value) == 2:
        value = value[1]
    features = getattr(value, "features", None)
    nbytes = getattr(features, "nbytes", 0)
    rows = len(features) if features is not None else 0
    return _ROW_OVERHEAD_BYTES * max(rows, 1) + (nbytes if isinstance(nbytes, int) else 0)


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


class BlockCoder(coders.Coder):
    """Pickles blocks (as Beam's fallback coder would) and estimates their
    size from the features' byte count instead of by pickling them."""

    def _create_impl(self) -> Any:
        return coder_impl.CallbackCoderImpl(_dumps, pickle.loads, estimate_bytes)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> Any:
        return Block

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


typecoders.registry.register_coder(Block, BlockCoder)
