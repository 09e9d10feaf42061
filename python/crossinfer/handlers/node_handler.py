"""ModelNodeHandler: the Beam ModelHandler behind every crossinfer model node.

It extends Beam's RunInference rather than replacing it: RunInference batches,
loads (shared per process, or across processes for ``large_model`` /
``model_copies``), times and counts; this handler adds what Beam lacks:

* ragged batches: elements are grouped by feature shape and each group is
  stacked separately, so unequal lengths never hit "stack expects each tensor
  to be equal size";
* per-element failures: pre-processing errors, wrong shapes and model errors
  become :class:`~crossinfer.records.Failure` records for exactly the elements
  that caused them (a failing batch is retried element by element), never a
  crashed bundle or a silently dropped element;
* vectorised post-processing over the whole batch;
* a cheap ``get_num_bytes`` (Beam's PyTorch handler walks every scalar).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from crossinfer.handlers.adapter import FrameworkAdapter
from crossinfer.processing.ops import BuiltOp, Outputs, build_ops
from crossinfer.records import Failure, Item, error_text
from crossinfer.spec.nodes import ModelNode

_LOG = logging.getLogger(__name__)

#: Batching when a spec sets none: Beam's default starts adaptive batching at
#: one element; starting at 32 keeps per-batch overhead off small models.
DEFAULT_MIN_BATCH = 32
DEFAULT_MAX_BATCH = 256

Record = Item | Failure


class ModelNodeHandler(ModelHandler[Record, Record, Any]):
    """Runs one model node on batches of :class:`Item` (failures pass through)."""

    def __init__(self, node: ModelNode, adapter: FrameworkAdapter, path: str) -> None:
        b = node.batching
        max_batch = b.max_batch_size or max(DEFAULT_MAX_BATCH, b.min_batch_size or 0)
        min_batch = b.min_batch_size or min(DEFAULT_MIN_BATCH, max_batch)
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

    # --- Beam ModelHandler interface -------------------------------------

    def load_model(self) -> Any:
        start = time.perf_counter()
        model = self.adapter.load()
        _LOG.info("crossinfer: loaded model %r (%s) in %.1f ms", self.node.name,
                  self.adapter.framework, (time.perf_counter() - start) * 1e3)
        return model

    def run_inference(self, batch: Sequence[Record], model: Any,
                      inference_args: dict[str, Any] | None = None) -> list[Record]:
        return self.infer(batch, model, inference_args or {})

    def get_num_bytes(self, batch: Sequence[Record]) -> int:
        return sum(r.features.nbytes for r in batch if isinstance(r, Item))

    def get_metrics_namespace(self) -> str:
        return self.namespace

    def batch_elements_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._batching_kwargs)
        if kwargs.get("max_batch_duration_secs") is None:
            kwargs.pop("max_batch_duration_secs", None)
        return kwargs

    # --- inference ------------------------------------------------------

    def infer(self, batch: Sequence[Record], model: Any, inference_args: dict[str, Any]
              ) -> list[Record]:
        """Results in input order: an Item with inference, or a Failure."""
        if self._pre is None:
            self._pre = build_ops(self.node.preprocess, "pre")
            self._post = build_ops(self.node.postprocess, "post")
        out: list[Record | None] = [None] * len(batch)
        groups: dict[tuple[int, ...], list[int]] = {}
        prepared: list[np.ndarray | None] = [None] * len(batch)
        for i, record in enumerate(batch):
            if isinstance(record, Failure):
                out[i] = record
                continue
            try:
                prepared[i] = self._prepare(record.features)
            except Exception as exc:  # a bad element must not fail its batch
                out[i] = Failure(record.original, self.path, error_text(exc))
                continue
            groups.setdefault(prepared[i].shape, []).append(i)  # type: ignore[union-attr]
        for indices in groups.values():
            self._infer_group(batch, prepared, indices, model, inference_args, out)
        failures = sum(1 for r, given in zip(out, batch, strict=True)
                       if isinstance(r, Failure) and r is not given)
        if failures:
            Metrics.counter(self.namespace, "failures").inc(failures)
        return out  # type: ignore[return-value]

    def _prepare(self, features: np.ndarray) -> np.ndarray:
        x = features
        for op in self._pre or ():
            assert op.element is not None
            x = op.element(x)
        x = np.asarray(x, dtype=self._dtype)
        if self._shape is not None and x.shape != self._shape:
            raise ValueError(f"features have shape {list(x.shape)}, but model "
                             f"{self.node.name!r} expects input_shape {list(self._shape)}")
        return x

    def _infer_group(self, batch: Sequence[Record], prepared: list[np.ndarray | None],
                     indices: list[int], model: Any, inference_args: dict[str, Any],
                     out: list[Record | None]) -> None:
        try:
            stacked = np.stack([prepared[i] for i in indices])  # type: ignore[misc]
            outputs = Outputs(self.adapter.predict(model, stacked, inference_args))
            for op in self._post or ():
                outputs = op.batch(outputs)
        except Exception as exc:
            if len(indices) > 1:  # isolate the element(s) that fail
                for i in indices:
                    self._infer_group(batch, prepared, [i], model, inference_args, out)
                return
            record = batch[indices[0]]
            out[indices[0]] = Failure(record.original, self.path, error_text(exc))
            return
        self._emit(batch, indices, outputs, out)

    def _emit(self, batch: Sequence[Record], indices: list[int], outputs: Outputs,
              out: list[Record | None]) -> None:
        inference = outputs.inference
        for row, i in enumerate(indices):
            source = batch[i]
            assert isinstance(source, Item)
            item = Item(source.original, inference[row], source.key)
            item.model = self.node.name
            item.path = self.path
            item.inference = inference[row]
            if outputs.label is not None:
                item.label = int(outputs.label[row])
            if outputs.score is not None:
                item.score = float(outputs.score[row])
            if outputs.labels is not None:
                item.labels = [int(v) for v in outputs.labels[row]]
            if outputs.scores is not None:
                item.scores = [float(v) for v in outputs.scores[row]]
            out[i] = item

    def __repr__(self) -> str:
        return f"ModelNodeHandler({self.path!r}, {self.adapter.framework})"
