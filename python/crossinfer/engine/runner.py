"""The runner: one model node's step, from blocks of rows to finished blocks.

Every way of carrying elements to a model ends here, with the same steps:

1. **prepare**: pre-processing ops on each block (vectorised), the
   ``input_shape`` check, for blocks of one feature shape at a time;
2. **group by shape**: prepared rows of equal shape are joined, so ragged
   input (unequal lengths) never hits "stack expects each tensor to be equal
   size", and ``pad_truncate`` can still make it one model call;
3. **predict** the whole group in one call, then **post-process** it, vectorised;
4. **isolate failures**, one strategy for every step that can raise: a call
   that fails on many rows is split in halves until the rows that fail are
   alone; each leaves as a :class:`~crossinfer.engine.block.Failure` with its
   own message, and every other row gets its result. Rows whose output holds
   NaN or infinity fail without a split (an output that is not a number is a
   failure, not a result);
5. hand on finished blocks (:meth:`Block.finish`) for the next step, which
   turns them into output rows (:mod:`crossinfer.engine.emit`).

A model that cannot load fails every row it is given, each with the cause
(:class:`~crossinfer.handlers.loaded.LoadedModel`); failures of earlier steps
pass through untouched. ``model`` is anything with ``load_error()`` and
``predict(batch)`` - a loaded model, or Beam's cross-process proxy to one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np
from apache_beam.metrics.metric import Metrics

from crossinfer.engine.block import Block, Failure, concat, concat_outputs, error_text
from crossinfer.processing.ops import BuiltOp, Outputs, build_ops
from crossinfer.rows import nonfinite_rows
from crossinfer.spec.nodes import ModelNode

T = TypeVar("T")


class Predictor(Protocol):
    """What the runner calls: a loaded model, or a proxy to one."""

    def load_error(self) -> str | None: ...

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class BlockRunner:
    """Runs one model node (at ``path`` in the spec) on blocks."""

    def __init__(self, node: ModelNode, path: str) -> None:
        self.node = node
        self.path = path
        self.namespace = f"crossinfer/{path}"
        self._dtype = np.dtype(node.dtype)
        self._shape = tuple(node.input_shape) if node.input_shape else None
        self._pre: list[BuiltOp] | None = None
        self._post: list[BuiltOp] = []

    def run(self, blocks: Sequence[Block], model: Predictor) -> list[Block]:
        """The rows of ``blocks`` finished by this node: one block per feature
        shape its model was called with, carrying every failure (upstream ones
        and this node's) on the first; no block is returned empty-handed."""
        if self._pre is None:  # built on the worker: ops may hold arrays
            self._pre = build_ops(self.node.preprocess, "pre")
            self._post = build_ops(self.node.postprocess, "post")
        failures = [f for b in blocks for f in b.failures]
        live = [b.with_failures([]) if b.failures else b for b in blocks if len(b)]
        error = model.load_error() if live else None
        new: list[Failure] = []
        finished: list[Block] = []
        if error is not None:
            new = [b.failure(i, self.path, error) for b in live for i in range(len(b))]
        else:
            prepared: dict[tuple[int, ...], list[tuple[Block, np.ndarray]]] = {}
            for block in _by_shape(live):
                for piece, x in self._prepare(block, new):
                    prepared.setdefault(x.shape[1:], []).append((piece, x))
            for group in prepared.values():
                block = concat([piece for piece, _ in group])
                x = group[0][1] if len(group) == 1 else np.concatenate([x for _, x in group])
                done = self._infer(block, x, model, new)
                if done is not None:
                    finished.append(done)
        if new:
            Metrics.counter(self.namespace, "failures").inc(len(new))
        failures.extend(new)
        if not finished:
            return [Block.of_failures(failures)] if failures else []
        if failures:
            finished[0] = finished[0].with_failures(failures)
        return finished

    # ---------------------------------------------------------------- steps

    def _prepare(self, block: Block, failed: list[Failure]) -> list[tuple[Block, np.ndarray]]:
        """``block``'s rows, pre-processed and checked; rows that cannot be leave
        as failures in ``failed``."""
        x = block.features
        if not self._pre and self._shape is None and x.dtype.kind in "biuf":
            return [(block, x)]  # nothing to do: the common case
        pieces = isolate(self._prepare_rows, x, block, failed, self.path)
        if self._shape is None:
            return pieces
        out = []
        for piece, prepared in pieces:
            if prepared.shape[1:] == self._shape:
                out.append((piece, prepared))
            else:  # one shape for the whole piece: all of its rows fail alike
                message = (f"ValueError: features have shape {list(prepared.shape[1:])}, but "
                           f"model {self.node.name!r} expects input_shape {list(self._shape)}")
                failed.extend(piece.failure(i, self.path, message) for i in range(len(piece)))
        return out

    def _prepare_rows(self, x: np.ndarray) -> np.ndarray:
        """Pre-processing of a stack of rows; the cast to the model's dtype
        happens when they are predicted."""
        for op in self._pre or ():
            x = op.batch(Outputs(x)).inference
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            x = np.asarray(x, dtype=self._dtype)  # raises for what cannot be cast
        return x

    def _infer(self, block: Block, x: np.ndarray, model: Predictor,
               failed: list[Failure]) -> Block | None:
        """``block`` (rows ``x``, prepared) predicted and post-processed, without
        the rows that fail, which leave in ``failed``; None when all fail."""
        if x.dtype != self._dtype:
            x = x.astype(self._dtype)
        pieces = isolate(lambda rows: self._predict(rows, model), x, block, failed, self.path)
        if len(pieces) == 1 and len(pieces[0][0]) == len(block):
            piece, (outputs, bad, ms) = pieces[0]
            if bad is None:  # the common case: every row has its result
                return block.finish(self.node.name, self.path, outputs).timed(ms, len(block))
        kept: list[Block] = []
        parts: list[Outputs] = []
        message = nonfinite_message(self.node)
        for piece, (outputs, bad, ms) in pieces:
            piece = piece.timed(ms, len(piece))
            if bad is not None:
                failed.extend(piece.failure(int(i), self.path, message)
                              for i in np.flatnonzero(bad))
                keep = np.flatnonzero(~bad)
                piece, outputs = piece.take(keep), outputs.take(keep)
            if len(piece):
                kept.append(piece)
                parts.append(outputs)
        if not kept:
            return None
        return concat(kept).finish(self.node.name, self.path, concat_outputs(parts))

    def _predict(self, x: np.ndarray,
                 model: Predictor) -> tuple[Outputs, np.ndarray | None, float]:
        """The model and the post-processing on one stack of rows, a mask of
        the rows whose output is not finite (None: all are), and the model
        call's wall time per row in milliseconds."""
        start = time.perf_counter()
        raw = model.predict(x)
        ms = (time.perf_counter() - start) * 1e3 / max(len(x), 1)
        outputs = Outputs(raw)
        for op in self._post:
            outputs = op.batch(outputs)
        return outputs, nonfinite_rows([raw, outputs.inference, outputs.score, outputs.scores],
                                       len(raw)), ms

    def __repr__(self) -> str:
        return f"BlockRunner({self.path!r})"


def isolate(step: Callable[[np.ndarray], T], x: np.ndarray, block: Block,
            failed: list[Failure], node: str) -> list[tuple[Block, T]]:
    """``step`` on the rows ``x`` of ``block``; when it raises on several rows,
    on each half, until the rows it raises on are alone: each of those leaves
    as a failure of ``node`` in ``failed`` with the exception's message.
    Returns (rows of ``block``, what ``step`` gave for them) in row order."""
    done: list[tuple[Block, T]] = []

    def run(rows: np.ndarray | None, values: np.ndarray) -> None:
        try:
            result = step(values)
        except Exception as exc:  # a bad row must not fail the others
            count = len(values)
            if count == 1:
                failed.append(block.failure(0 if rows is None else int(rows[0]), node,
                                            error_text(exc)))
                return
            rows = np.arange(count) if rows is None else rows
            half = count // 2
            run(rows[:half], values[:half])
            run(rows[half:], values[half:])
            return
        done.append((block if rows is None else block.take(rows), result))

    run(None, x)
    return done


def _by_shape(blocks: list[Block]) -> list[Block]:
    """``blocks`` joined by feature shape (Beam's batches of one-row blocks)."""
    if len(blocks) <= 1:
        return blocks
    groups: dict[tuple[int, ...], list[Block]] = {}
    for block in blocks:
        groups.setdefault(block.features.shape[1:], []).append(block)
    return [concat(group) for group in groups.values()]


def nonfinite_message(node: ModelNode) -> str:
    """The failure of a row whose model output holds NaN or infinity."""
    return (f"model {node.name!r} gave a non-finite output (NaN or infinity) for this element; "
            f"an output that is not a number is a failure, not a result (inputs far outside "
            f"the model's range overflow its {node.dtype})")
