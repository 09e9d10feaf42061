"""The keyed handler: per-route chunks in, one bounded model cache per worker.

Beam's KeyedModelHandler receives batches that mix keys, so with a model bound
below the number of models it reloads models inside nearly every batch. Here
elements are grouped by route *before* RunInference (see
:mod:`crossinfer.patterns.keyed`): each element of this handler is a
:class:`Chunk` - elements of one route, sized by that route's own batching -
and consecutive chunks of one route reuse the resident model.

Each route keeps its own model settings: its batching (chunk sizes), its
``inference_args`` and ``output``, and its ``memory``: a route with
``large_model`` or ``model_copies`` is shared by the machine's processes
(:mod:`crossinfer.handlers.sharing`), and a route whose model cannot load
fails its own elements only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from apache_beam import coders
from apache_beam.ml.inference.base import ModelHandler

from crossinfer.handlers.model_cache import ModelCache
from crossinfer.handlers.node_handler import ModelNodeHandler, Record
from crossinfer.handlers.sharing import SharedModel
from crossinfer.records import RecordCoder


class Chunk:
    """Elements routed to one model, inferred together."""

    __slots__ = ("items", "route")

    def __init__(self, route: str, items: list[Record]) -> None:
        self.route = route
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Chunk, (self.route, self.items))


# Without a coder Beam would pickle every sampled chunk whole to measure its size.
coders.registry.register_coder(Chunk, RecordCoder)


class KeyedChunkHandler(ModelHandler[Chunk, Record, ModelCache]):
    """Runs chunks with the handler of their route; RunInference gives it no
    batching of its own (chunks are already batches)."""

    def __init__(self, handlers: dict[str, ModelNodeHandler], max_models: int,
                 namespace: str) -> None:
        super().__init__()
        self.handlers = handlers
        self.max_models = max_models
        self.namespace = namespace
        # Fixed here, when the pipeline is built, so every worker process of a
        # machine finds the same shared copies of a route's model.
        self._share_tag = f"crossinfer_keyed_{uuid.uuid4().hex}"

    def load_model(self) -> ModelCache:
        return ModelCache(
            loaders={route: self._loader(route) for route in self.handlers},
            releasers={route: _release for route in self.handlers},
            max_models=self.max_models,
            namespace=self.namespace)

    def _loader(self, route: str) -> Callable[[], Any]:
        """Loads a route's model in this process, or (``large_model`` /
        ``model_copies``) acquires the machine's shared copies of it."""
        handler = self.handlers[route]
        if not handler.share_model_across_processes():
            return handler.load_model
        tag = f"{self._share_tag}_{route}"
        return lambda: SharedModel(handler.load_model, tag, handler.model_copies())

    def run_inference(self, batch: Any, model: ModelCache,
                      inference_args: dict[str, Any] | None = None) -> list[Record]:
        chunks: Sequence[Chunk] = [batch] if isinstance(batch, Chunk) else batch
        results: list[Record] = []
        for chunk in chunks:
            with model.lease(chunk.route) as loaded:
                results.extend(self.handlers[chunk.route].infer(chunk.items, loaded))
        return results

    def get_num_bytes(self, batch: Any) -> int:
        chunks = [batch] if isinstance(batch, Chunk) else batch
        return sum(self.handlers[c.route].get_num_bytes(c.items) for c in chunks)

    def get_metrics_namespace(self) -> str:
        return self.namespace

    def should_skip_batching(self) -> bool:
        return True


def _release(model: Any) -> None:
    model.release()
