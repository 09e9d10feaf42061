"""The keyed handler: per-route chunks in, one bounded model cache per worker.

Beam's KeyedModelHandler receives batches that mix keys, so with a model bound
below the number of models it reloads models inside nearly every batch. Here
elements are grouped by route *before* RunInference (see
:mod:`crossinfer.patterns.keyed`): each element of this handler is a
:class:`Chunk` - elements of one route, sized by that route's own batching -
and consecutive chunks of one route reuse the resident model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apache_beam import coders
from apache_beam.ml.inference.base import ModelHandler

from crossinfer.handlers.model_cache import ModelCache
from crossinfer.handlers.node_handler import ModelNodeHandler, Record
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

    def load_model(self) -> ModelCache:
        return ModelCache(
            loaders={route: h.load_model for route, h in self.handlers.items()},
            releasers={route: h.adapter.release for route, h in self.handlers.items()},
            max_models=self.max_models,
            namespace=self.namespace)

    def run_inference(self, batch: Any, model: ModelCache,
                      inference_args: dict[str, Any] | None = None) -> list[Record]:
        chunks: Sequence[Chunk] = [batch] if isinstance(batch, Chunk) else batch
        results: list[Record] = []
        for chunk in chunks:
            with model.lease(chunk.route) as loaded:
                results.extend(self.handlers[chunk.route].infer(chunk.items, loaded,
                                                                inference_args or {}))
        return results

    def get_num_bytes(self, batch: Any) -> int:
        chunks = [batch] if isinstance(batch, Chunk) else batch
        return sum(self.handlers[c.route].get_num_bytes(c.items) for c in chunks)

    def get_metrics_namespace(self) -> str:
        return self.namespace

    def should_skip_batching(self) -> bool:
        return True
