"""ModelNodeHandler: the Beam ModelHandler behind every crossinfer model node.

It extends Beam's RunInference rather than replacing it: RunInference batches,
loads (shared per process, or across processes for ``large_model`` /
``model_copies``), times and counts; this handler adds what Beam lacks:

* ragged batches: elements are grouped by feature shape and each group is
  stacked separately, so unequal lengths never hit "stack expects each tensor
  to be equal size";
* per-element failures: pre-processing errors, wrong shapes, model errors and
  non-finite outputs (NaN, infinity) become :class:`~crossinfer.records.Failure`
  records for exactly the elements that caused them (a failing batch is
  retried element by element), never a crashed bundle or a silently dropped
  element;
* a model that cannot load fails this node's elements only, each with the
  cause (:class:`~crossinfer.handlers.loaded.LoadedModel`);
* ``large_model`` / ``model_copies`` for every framework: Beam hands the
  handler a cross-process proxy, and a LoadedModel is called only through
  methods that take and return numpy arrays;
* vectorised post-processing over the whole batch;
* a cheap ``get_num_bytes`` (Beam's PyTorch handler walks every scalar).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from crossinfer.handlers.adapter import FrameworkAdapter
from crossinfer.handlers.loaded import LoadedModel
from crossinfer.processing.ops import BuiltOp, Outputs, build_ops
from crossinfer.records import Failure, Item, error_text, item_from_fields
from crossinfer.rows import nonfinite_rows
from crossinfer.spec.nodes import ModelNode

#: Batching when a spec sets none: Beam's default starts adaptive batching at
#: one element. crossinfer batches a fixed 256 elements unless the spec sets
#: ``min_batch_size`` (then adaptive between min and max): a fixed size keeps
#: per-batch overhead off small models and spares Beam's batch-size
#: regression, which runs after every adaptive batch (measured: +10-20%
#: elements/s on small models, see bench/README.md).
DEFAULT_MIN_BATCH = 32
DEFAULT_MAX_BATCH = 256

Record = Item | Failure


class ModelNodeHandler(ModelHandler[Record, Record, Any]):
    """Runs one model node on batches of :class:`Item` (failures pass through)."""

    def __init__(self, node: ModelNode, adapter: FrameworkAdapter, path: str) -> None:
        b = node.batching
        max_batch = b.max_batch_size or max(DEFAULT_MAX_BATCH, b.min_batch_size or 0)
        min_batch = b.min_batch_size or max_batch
        super().__init__(
            min_batch_size=min_batch,
            max_batch_size=max_batch,
            max_batch_duration_secs=b.max_wait_secs,
            large_model=node.memory.large_model,
            model_copies=node.memory.model_copies,
        )
        self.node = node
        self.adapter = adapter
        self.path = path
        self.namespace = f"crossinfer/{path}"
        self._dtype = np.dtype(node.dtype)
        self._shape = tuple(node.input_shape) if node.input_shape else None
        self._pre: list[BuiltOp] | None = None
        self._post: list[BuiltOp] | None = None
        #: True when each element is already a batch (an ItemBatch that
        #: crossinfer made, see crossinfer.patterns.to_records).
        self.prebatched = False
        #: True for bounded input: batches then end with the bundle, and
        #: max_wait_secs (streaming only) is not passed on (see batch_kwargs).
        self.bounded = False

    # --- Beam ModelHandler interface -------------------------------------

    def load_model(self) -> LoadedModel:
        """The model, or why it could not be loaded (never raises: see LoadedModel)."""
        return LoadedModel(self.adapter)

    def run_inference(self, batch: Sequence[Record], model: Any,
                      inference_args: dict[str, Any] | None = None) -> list[Record]:
        # Inference args are the model node's own (node.inference_args); crossinfer
        # never passes RunInference any.
        return self.infer(batch, model)

    def get_num_bytes(self, batch: Sequence[Record]) -> int:
        stacked = getattr(batch, "stacked", None)  # an ItemBatch: no need to visit each
        if stacked is not None:
            return int(stacked.nbytes)
        return sum(r.features.nbytes for r in batch if type(r) is Item)

    def get_metrics_namespace(self) -> str:
        return self.namespace

    def should_skip_batching(self) -> bool:
        return self.prebatched

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return batch_kwargs(self._batching_kwargs, self.bounded)

    # --- inference ------------------------------------------------------

    def infer(self, batch: Sequence[Record], model: Any) -> list[Record]:
        """Results in input order: an Item with inference, or a Failure.
        ``model`` is a :class:`LoadedModel` or Beam's proxy to one."""
        if self._pre is None:
            self._pre = build_ops(self.node.preprocess, "pre")
            self._post = build_ops(self.node.postprocess, "post")
        error = model.load_error()
        if error is not None:
            return self._fail_all(batch, error)
        out: list[Record | None] = [None] * len(batch)
        stacked = getattr(batch, "stacked", None)  # an ItemBatch of finite Items
        if stacked is not None and not self._pre and \
                (self._shape is None or stacked.shape[1:] == self._shape):
            try:
                outputs, bad = self._predict(stacked, model)
            except Exception:
                pass  # the path below isolates the element(s) that fail
            else:
                failures = self._emit(batch, range(len(batch)), outputs, bad, out)
                if failures:
                    Metrics.counter(self.namespace, "failures").inc(failures)
                return out  # type: ignore[return-value]
        groups: dict[tuple[int, ...], list[int]] = {}
        prepared: list[np.ndarray | None] = [None] * len(batch)
        plain = not self._pre and self._shape is None  # nothing to do per element
        failures = 0
        for i, record in enumerate(batch):
            if type(record) is not Item:
                out[i] = record  # a Failure passes through
                continue
            x = record.features
            if not plain or type(x) is not np.ndarray:
                try:
                    x = self._prepare(x)
                except Exception as exc:  # a bad element must not fail its batch
                    out[i] = Failure(record.original, self.path, error_text(exc))
                    failures += 1
                    continue
            prepared[i] = x
            group = groups.get(x.shape)
            if group is None:
                groups[x.shape] = [i]
            else:
                group.append(i)
        for indices in groups.values():
            failures += self._infer_group(batch, prepared, indices, model, out)
        if failures:
            Metrics.counter(self.namespace, "failures").inc(failures)
        return out  # type: ignore[return-value]

    def _fail_all(self, batch: Sequence[Record], error: str) -> list[Record]:
        """Every Item of ``batch`` fails with ``error``; failures pass through."""
        out = [Failure(r.original, self.path, error) if type(r) is Item else r for r in batch]
        failed = sum(type(r) is Item for r in batch)
        if failed:
            Metrics.counter(self.namespace, "failures").inc(failed)
        return out

    def _prepare(self, features: np.ndarray) -> np.ndarray:
        """Pre-processing and the shape check for one element. The cast to the
        model's dtype happens once per stacked batch (see ``_predict``)."""
        x = features
        for op in self._pre or ():
            assert op.element is not None
            x = op.element(x)
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            x = np.asarray(x, dtype=self._dtype)  # raises for what cannot be cast
        if self._shape is not None and x.shape != self._shape:
            raise ValueError(f"features have shape {list(x.shape)}, but model "
                             f"{self.node.name!r} expects input_shape {list(self._shape)}")
        return x

    def _stack(self, arrays: list[np.ndarray]) -> np.ndarray:
        """One array of equal-shape arrays. Concatenating and reshaping is ~4x
        faster than ``np.stack``, which expands every array in Python first."""
        shape = arrays[0].shape
        if shape:
            return np.concatenate(arrays).reshape((len(arrays), *shape))
        return np.stack(arrays)

    def _infer_group(self, batch: Sequence[Record], prepared: list[np.ndarray | None],
                     indices: list[int], model: Any, out: list[Record | None]) -> int:
        """Infer one group of equal shapes; returns how many elements failed."""
        try:
            stacked = self._stack([prepared[i] for i in indices])  # type: ignore[misc]
            outputs, bad = self._predict(stacked, model)
        except Exception as exc:
            if len(indices) > 1:  # isolate the element(s) that fail
                return sum(self._infer_group(batch, prepared, [i], model, out)
                           for i in indices)
            record = batch[indices[0]]
            out[indices[0]] = Failure(record.original, self.path, error_text(exc))
            return 1
        return self._emit(batch, indices, outputs, bad, out)

    def _predict(self, stacked: np.ndarray, model: Any) -> tuple[Outputs, np.ndarray | None]:
        """The model and the post-processing on one stacked batch, and a mask of
        the rows whose output is not finite (None: all are)."""
        if stacked.dtype != self._dtype:
            stacked = stacked.astype(self._dtype)
        raw = model.predict(stacked)
        outputs = Outputs(raw)
        for op in self._post or ():
            outputs = op.batch(outputs)
        n = len(raw)
        return outputs, nonfinite_rows([raw, outputs.inference, outputs.score, outputs.scores], n)

    def _emit(self, batch: Sequence[Record], indices: Sequence[int], outputs: Outputs,
              bad: np.ndarray | None, out: list[Record | None]) -> int:
        """One finished Item per element, a Failure per element whose output is
        not finite (``bad``); returns the number of failures. Conversions to
        Python values (the output row's lists, labels, scores) are done once
        per batch."""
        failures = 0
        if bad is not None:
            message = nonfinite_message(self.node)
            for row in np.flatnonzero(bad).tolist():
                record = batch[indices[row]]
                out[indices[row]] = Failure(record.original, self.path, message)
            failures = int(bad.sum())
            keep = np.flatnonzero(~bad)
            indices = [indices[row] for row in keep.tolist()]
            outputs = outputs.take(keep)
            if not indices:
                return failures
        inference = outputs.inference
        n = len(inference)
        flat = inference.reshape(n, -1)
        lists = (flat if flat.dtype.kind == "f" else flat.astype(np.float64)).tolist()
        nothing = [None] * n
        label = nothing if outputs.label is None else \
            outputs.label.astype(np.int64, copy=False).tolist()
        score = nothing if outputs.score is None else \
            outputs.score.astype(np.float64, copy=False).tolist()
        labels = nothing if outputs.labels is None else \
            outputs.labels.astype(np.int64, copy=False).tolist()
        scores = nothing if outputs.scores is None else \
            outputs.scores.astype(np.float64, copy=False).tolist()
        name, path = self.node.name, self.path
        for row, i in enumerate(indices):
            source = batch[i]
            result = inference[row]
            out[i] = item_from_fields(source.original, result, source.key,  # type: ignore[union-attr]
                                      name, path, result, lists[row], label[row], score[row],
                                      labels[row], scores[row])
        return failures

    def __repr__(self) -> str:
        return f"ModelNodeHandler({self.path!r}, {self.adapter.framework})"


def batch_kwargs(kwargs: dict[str, Any], bounded: bool) -> dict[str, Any]:
    """Beam's BatchElements arguments for a node's batching. ``max_wait_secs``
    bounds how long a *streaming* pipeline buffers a batch; on bounded input it
    is left out, and batches end with the bundle. (With it, Beam batches in a
    stateful DoFn with timers, and the FnApiRunner - Beam's Python job server -
    fails a bounded job whose elements sit at the end of the global window, as
    held records and batch-transport elements do: "A total of 1 time-pending
    bundles did not execute".)"""
    kwargs = dict(kwargs)
    if bounded or kwargs.get("max_batch_duration_secs") is None:
        kwargs.pop("max_batch_duration_secs", None)
    return kwargs


def nonfinite_message(node: ModelNode) -> str:
    """The failure of an element whose model output holds NaN or infinity."""
    return (f"model {node.name!r} gave a non-finite output (NaN or infinity) for this element; "
            f"an output that is not a number is a failure, not a result (inputs far outside "
            f"the model's range overflow its {node.dtype})")
