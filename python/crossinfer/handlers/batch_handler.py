"""BatchNodeHandler: one model node over batch-native records.

Each element handed to RunInference is already a batch (a
:class:`~crossinfer.records.Batch` holding many rows). RunInference still
batches, but by *rows* (``element_size_fn``): small batches are concatenated
into one model call up to the node's ``max_batch_size`` rows, large ones run
alone. Everything is vectorised: pre-processing ops run on whole arrays, the
model on the concatenated rows, post-processing on the whole output.

Per-row accounting is kept: a model call that fails is bisected until the rows
that fail are found, and each leaves as a :class:`~crossinfer.records.Failure`
with its row index, as does each row whose output is not finite; a model that
cannot load fails every row it gets; failures of earlier steps pass through
untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from crossinfer.handlers.loaded import LoadedModel
from crossinfer.handlers.node_handler import (
    DEFAULT_MAX_BATCH,
    ModelNodeHandler,
    batch_kwargs,
    nonfinite_message,
)
from crossinfer.processing.ops import BuiltOp, Outputs, build_ops
from crossinfer.records import Batch, Failure, RecordBase, error_text
from crossinfer.rows import nonfinite_rows

_EXTRA_OUTPUTS = ("label", "score", "labels", "scores")


def record_rows(record: Any) -> int:
    """A record's weight for batching: its rows (a failure weighs 1)."""
    return len(record.rows) if type(record) is Batch else 1


class _Prepared:
    """A batch record's rows ready for the model: ``x`` and, per row, its
    index in the original input batch."""

    __slots__ = ("record", "rowid", "x")

    def __init__(self, record: Batch, x: np.ndarray, rowid: np.ndarray) -> None:
        self.record = record
        self.x = x
        self.rowid = rowid


class BatchNodeHandler(ModelHandler[RecordBase, RecordBase, Any]):
    """Runs ``node_handler``'s model on batch records, batched by rows."""

    def __init__(self, node_handler: ModelNodeHandler) -> None:
        node = node_handler.node
        b = node.batching
        # Sizes count rows. Without a min_batch_size in the spec the target is
        # fixed at the maximum: the elements are batches already, and a fixed
        # size spares Beam's per-batch size regression.
        max_rows = b.max_batch_size or max(DEFAULT_MAX_BATCH, b.min_batch_size or 0)
        min_rows = b.min_batch_size or max_rows
        super().__init__(min_batch_size=min_rows, max_batch_size=max_rows,
                         max_batch_duration_secs=b.max_wait_secs, element_size_fn=record_rows,
                         large_model=node.memory.large_model,
                         model_copies=node.memory.model_copies)
        self.inner = node_handler
        self.node = node
        self.path = node_handler.path
        self.namespace = node_handler.namespace
        self._dtype = np.dtype(node.dtype)
        self._shape = tuple(node.input_shape) if node.input_shape else None
        self._pre: list[BuiltOp] | None = None
        self._post: list[BuiltOp] | None = None

    # --- Beam ModelHandler interface -------------------------------------

    def load_model(self) -> LoadedModel:
        return self.inner.load_model()

    def get_metrics_namespace(self) -> str:
        return self.namespace

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return batch_kwargs(self._batching_kwargs, self.inner.bounded)

    def get_num_bytes(self, batch: Any) -> int:
        return sum(int(r.features.nbytes) for r in batch if type(r) is Batch)

    def run_inference(self, batch: Any, model: Any,
                      inference_args: dict[str, Any] | None = None) -> list[RecordBase]:
        """The surviving rows of each batch record as one Batch, a Failure per
        failed row; failures of earlier steps pass through. ``model`` is a
        :class:`LoadedModel` or Beam's proxy to one; the node's own
        ``inference_args`` are used (crossinfer passes RunInference none)."""
        if self._pre is None:
            self._pre = build_ops(self.node.preprocess, "pre")
            self._post = build_ops(self.node.postprocess, "post")
        error = model.load_error()
        if error is not None:
            return self._fail_all(batch, error)
        out: list[RecordBase] = []
        groups: dict[tuple[int, ...], list[_Prepared]] = {}
        for record in batch:
            if type(record) is not Batch:
                out.append(record)
                continue
            prepared = self._prepare_record(record, out)
            if prepared is not None:
                groups.setdefault(prepared.x.shape[1:], []).append(prepared)
        given = len(out)
        for group in groups.values():
            self._infer_group(group, model, out)
        failures = sum(1 for r in out[given:] if type(r) is Failure)
        failures += sum(1 for r in out[:given] if type(r) is Failure and r.node == self.path)
        if failures:
            Metrics.counter(self.namespace, "failures").inc(failures)
        return out

    def _fail_all(self, batch: Any, error: str) -> list[RecordBase]:
        """A Failure for every row of every Batch; failures pass through."""
        out: list[RecordBase] = []
        for record in batch:
            if type(record) is Batch:
                out.extend(Failure(record.original, self.path, error, index=int(row))
                           for row in record.rows.tolist())
            else:
                out.append(record)
        failed = sum(len(r.rows) for r in batch if type(r) is Batch)
        if failed:
            Metrics.counter(self.namespace, "failures").inc(failed)
        return out

    # --- preparation ----------------------------------------------------

    def _prepare(self, features: np.ndarray) -> np.ndarray:
        x = features
        for op in self._pre or ():
            x = op.batch(Outputs(x)).inference
        x = np.asarray(x)
        if x.dtype != self._dtype:
            x = x.astype(self._dtype)
        if self._shape is not None and x.shape[1:] != self._shape:
            raise ValueError(f"features have shape {list(x.shape[1:])}, but model "
                             f"{self.node.name!r} expects input_shape {list(self._shape)}")
        return x

    def _prepare_record(self, record: Batch, out: list[RecordBase]) -> _Prepared | None:
        try:
            return _Prepared(record, self._prepare(record.features), record.rows)
        except Exception:  # find the rows that cannot be prepared, one by one
            pass
        good: list[np.ndarray] = []
        kept: list[int] = []
        for pos, rowid in enumerate(record.rows):
            try:
                good.append(self._prepare(record.features[pos:pos + 1]))
                kept.append(pos)
            except Exception as exc:
                out.append(Failure(record.original, self.path, error_text(exc),
                                   index=int(rowid)))
        if not good:
            return None
        return _Prepared(record, np.concatenate(good), record.rows[kept])

    # --- inference ------------------------------------------------------

    def _infer_group(self, group: list[_Prepared], model: Any, out: list[RecordBase]) -> None:
        """One model call for the rows of every record in ``group`` (same row shape)."""
        x = group[0].x if len(group) == 1 else np.concatenate([p.x for p in group])
        sizes = [len(p.x) for p in group]
        pieces: list[tuple[np.ndarray, Outputs]] = []
        failed: list[tuple[int, str]] = []
        self._run(x, np.arange(len(x)), model, pieces, failed)
        if not failed:  # the common case: every row has its result, in order
            outputs, lo = pieces[0][1], 0
            for p, size in zip(group, sizes, strict=True):
                out.append(self._result(p, outputs, lo, lo + size, None))
                lo += size
            return
        owner = np.repeat(np.arange(len(group)), sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)])
        for g, error in failed:
            p = group[owner[g]]
            out.append(Failure(p.record.original, self.path, error,
                               index=int(p.rowid[g - starts[owner[g]]])))
        if not pieces:
            return
        kept = pieces[0][0] if len(pieces) == 1 else np.concatenate([k for k, _ in pieces])
        outputs = _concat([o for _, o in pieces])
        bounds = np.searchsorted(kept, starts)
        for j, p in enumerate(group):
            lo, hi = int(bounds[j]), int(bounds[j + 1])
            if lo == hi:
                continue
            local = kept[lo:hi] - starts[j]
            out.append(self._result(p, outputs, lo, hi, local))

    def _run(self, x: np.ndarray, idx: np.ndarray, model: Any,
             pieces: list[tuple[np.ndarray, Outputs]],
             failed: list[tuple[int, str]]) -> None:
        """Predict + post-process ``x``; on an error, bisect to the failing rows.
        Rows whose output is not finite fail without a bisection."""
        try:
            raw = model.predict(x)
            outputs = Outputs(raw)
            for op in self._post or ():
                outputs = op.batch(outputs)
        except Exception as exc:
            if len(idx) == 1:
                failed.append((int(idx[0]), error_text(exc)))
                return
            half = len(idx) // 2
            self._run(x[:half], idx[:half], model, pieces, failed)
            self._run(x[half:], idx[half:], model, pieces, failed)
            return
        bad = nonfinite_rows([raw, outputs.inference, outputs.score, outputs.scores], len(raw))
        if bad is not None:
            message = nonfinite_message(self.node)
            failed.extend((int(i), message) for i in idx[bad].tolist())
            keep = np.flatnonzero(~bad)
            if not keep.size:
                return
            idx, outputs = idx[keep], outputs.take(keep)
        pieces.append((idx, outputs))

    def _result(self, p: _Prepared, outputs: Outputs, lo: int, hi: int,
                local: np.ndarray | None) -> Batch:
        """Rows ``lo:hi`` of ``outputs``: the rows ``local`` of ``p`` (None: all)."""
        inference = outputs.inference[lo:hi]
        whole = local is None or len(local) == len(p.rowid)
        result = Batch(p.record.original, inference, p.rowid if whole else p.rowid[local])
        result.model = self.node.name
        result.path = self.path
        result.inference = inference
        for name in _EXTRA_OUTPUTS:
            value = getattr(outputs, name)
            if value is not None:
                setattr(result, name, value[lo:hi])
        return result

    def __repr__(self) -> str:
        return f"BatchNodeHandler({self.path!r}, {self.inner.adapter.framework})"


def _concat(outputs: list[Outputs]) -> Outputs:
    if len(outputs) == 1:
        return outputs[0]
    merged = Outputs(np.concatenate([o.inference for o in outputs]))
    for name in _EXTRA_OUTPUTS:
        values = [getattr(o, name) for o in outputs]
        if all(v is not None for v in values):
            setattr(merged, name, np.concatenate(values))
    return merged
