"""Rows in, blocks out: how elements become the blocks the runner takes.

An :class:`Assembler` takes rows one element at a time - a row per element,
or many rows of a batch-native element or a client's batch - and hands on
:class:`~crossinfer.engine.block.Block`\\ s of one feature shape.

* With a ``size`` (bounded input in the global window) it holds rows back,
  grouped by feature shape, and lets a shape's rows go as one block when they
  fill ``size`` rows, when too many are held (the largest group goes first),
  or at the end of the bundle. Model steps then skip Beam's batching step, and
  ragged input never shares a block across shapes. "Too many" is
  :data:`HELD_BATCHES` blocks' worth of rows, or :data:`HELD_BYTES` of features
  once more than one shape is held (a single shape is held only until it fills
  a block, as Beam's own batching would hold it). Holding more does not pay:
  with ~60 lengths, 16 or 24 blocks held made blocks two or three times as
  large but no faster beyond the machine's noise, and 32 promoted enough held
  rows to the collector's oldest generation to cost a full collection
  (~0.2 s) nearly every 100,000 rows (``python -m bench.ragged --held 16,24,32``).
  Reordering rows is harmless there: RunInference's own batching would give
  every output the end of the window as its timestamp anyway.
* Without (streaming, other windows) each element leaves at once as a block
  of its own rows, and Beam's batching joins them before a model.

NaN and infinity are found once per block (one sum over its features); only
a block whose sum is not finite is looked at row by row, and each such row
leaves as a failure with :func:`crossinfer.rows.nonfinite_problem`'s message.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossinfer.engine.block import Block, Failure
from crossinfer.rows import nonfinite_problem, surely_finite
from crossinfer.wire import INPUT_NODE

#: Rows held per bundle at most, in blocks of ``size``.
HELD_BATCHES = 8
#: Bytes of features held per bundle at most, once rows of more than one
#: shape are held.
HELD_BYTES = 64 << 20


class _Group:
    """Held rows of one feature shape: per row (``arrays`` of rows) or per
    piece (``arrays`` of stacks of rows)."""

    __slots__ = ("arrays", "index", "keys", "originals", "owner", "rows", "unit")

    def __init__(self, unit: int, keyed: bool) -> None:
        self.arrays: list[np.ndarray] = []
        self.originals: list[Any] = []
        self.keys: list[str | None] | None = [] if keyed else None
        self.owner: list[np.ndarray] = []
        self.index: list[np.ndarray] = []
        self.rows = 0
        self.unit = unit  # bytes of features per row


def _joined(parts: list[np.ndarray]) -> np.ndarray | None:
    """``parts`` as one array (None for none); one part as it is, uncopied
    (a batch-native element as large as a block is the common case)."""
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class Assembler:
    """Turns rows into blocks (see the module doc); one per DoFn instance,
    :meth:`start` at every bundle. ``name`` is the features field (for
    messages); ``keyed``: keep each row's key (the spec splits or routes by key)."""

    def __init__(self, size: int | None, name: str, keyed: bool) -> None:
        self.size = size
        self._size = size or 1
        self.name = name
        self.keyed = keyed
        self._limit = self._size * HELD_BATCHES
        self.start()

    def start(self) -> None:
        self._groups: dict[tuple[int, ...], _Group] = {}
        self._last_shape: tuple[int, ...] | None = None
        self._last: _Group | None = None
        self._failures: list[Failure] = []
        self.held = 0
        self.held_bytes = 0

    # ---------------------------------------------------------------- in

    def add_row(self, original: Any, features: np.ndarray, key: str | None) -> tuple[Block, ...]:
        """One element's row (features not yet checked for NaN or infinity)."""
        if self.size is None:
            keys = [key] if self.keyed else None
            return self._screened([original], features[None], None, None, keys),
        shape = features.shape
        group = self._last
        if group is None or shape != self._last_shape:  # not the same shape again
            group = self._group(shape, features.nbytes)
        group.arrays.append(features)
        group.originals.append(original)
        if group.keys is not None:
            group.keys.append(key)
        group.rows += 1
        self.held += 1
        self.held_bytes += group.unit
        # Inlined _release_if_due's tests (this runs once per element).
        if group.rows < self._size and self.held <= self._limit \
                and self.held_bytes <= HELD_BYTES:
            return ()
        return self._release_if_due(shape, group)

    def add_rows(self, originals: list[Any], features: np.ndarray,
                 owner: np.ndarray | None = None, index: np.ndarray | None = None,
                 keys: list[str | None] | None = None) -> tuple[Block, ...]:
        """Many rows at once, ``features`` rows first: of one batch-native
        element (``owner`` zeros, ``index`` their rows in it) or one original
        per row (``owner`` None)."""
        if not self.keyed:
            keys = None
        if self.size is None:
            return self._screened(originals, features, owner, index, keys),
        shape = features.shape[1:]
        group = self._last if shape == self._last_shape else None
        if group is None:
            group = self._group(shape, features[:1].nbytes)
        k = len(features)
        if owner is not None:
            group.owner.append(owner + len(group.originals))
        if index is not None:
            group.index.append(index)
        group.originals.extend(originals)
        group.arrays.append(features)
        if group.keys is not None:
            group.keys.extend(keys if keys is not None else [None] * k)
        group.rows += k
        self.held += k
        self.held_bytes += k * group.unit
        return self._release_if_due(shape, group)

    def fail(self, failure: Failure) -> tuple[Block, ...]:
        """An element (or a row) that cannot be inferred: it leaves with the
        next block (at once, without a ``size``)."""
        if self.size is None:
            return Block.of_failures([failure]),
        self._failures.append(failure)
        return ()

    # ---------------------------------------------------------------- out

    def finish(self) -> list[Block]:
        """Every held row and failure, as blocks (the end of a bundle)."""
        out = [block for shape in list(self._groups) for block in self._release(shape)]
        if self._failures:
            out.append(Block.of_failures(self._failures))
            self._failures = []
        return out

    def _group(self, shape: tuple[int, ...], unit: int) -> _Group:
        group = self._groups.get(shape)
        if group is None:
            group = self._groups[shape] = _Group(unit, self.keyed)
        self._last_shape, self._last = shape, group
        return group

    def _release_if_due(self, shape: tuple[int, ...], group: _Group) -> tuple[Block, ...]:
        if group.rows >= self._size:
            return self._release(shape)
        if self.held > self._limit or (self.held_bytes > HELD_BYTES and len(self._groups) > 1):
            return self._release(max(self._groups, key=lambda s: self._groups[s].rows))
        return ()

    def _release(self, shape: tuple[int, ...]) -> tuple[Block, ...]:
        """The held rows of ``shape``, as blocks of at most ``size`` rows (cut
        between elements), with the failures held so far on the first."""
        group = self._groups.pop(shape)
        self.held -= group.rows
        self.held_bytes -= group.rows * group.unit
        if shape == self._last_shape:
            self._last_shape, self._last = None, None
        # One concatenation of every row's values, then the shape (the arrays
        # are single rows, or stacks of rows: the same values in the same order).
        arrays = group.arrays
        x = (arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=None)).reshape(
            (group.rows, *shape))
        block = self._screened(group.originals, x, _joined(group.owner), _joined(group.index),
                               group.keys)
        if self._failures:
            block.failures.extend(self._failures)
            self._failures = []
        return tuple(block.cut(self._size))

    def _screened(self, originals: list[Any], x: np.ndarray, owner: np.ndarray | None,
                  index: np.ndarray | None, keys: list[str | None] | None) -> Block:
        """A block of the rows, less those holding NaN or infinity, which it
        carries as failures."""
        block = Block(originals, x, owner, index, keys)
        if x.dtype.kind != "f" or surely_finite(x):
            return block
        finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        failures = [block.failure(i, INPUT_NODE, nonfinite_problem(x[i], self.name) or "")
                    for i in np.flatnonzero(~finite).tolist()]
        kept = block.take(np.flatnonzero(finite))
        kept.failures = failures
        return kept
