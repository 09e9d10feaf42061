"""The keyed handler: blocks of one route in, one bounded model cache per worker.

Beam's KeyedModelHandler receives batches that mix keys, so with a model bound
below the number of models it reloads models inside nearly every batch. Here
rows are grouped by route *before* RunInference (see
:mod:`crossinfer.patterns.keyed`): each element of this handler is a
:class:`~crossinfer.engine.block.Block` of one route (its ``route``), sized by
that route's own batching, and consecutive blocks of one route reuse the
resident model.

Each route keeps its own model settings: its batching (block sizes), its
``inference_args`` and ``output``, and its ``memory``: a route with
``large_model`` or ``model_copies`` is shared by the machine's processes
(:mod:`crossinfer.handlers.sharing`), and a route whose model cannot load
fails its own rows only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

from crossinfer.engine.block import Block
from crossinfer.handlers.model_cache import ModelCache
from crossinfer.handlers.node_handler import ModelNodeHandler, as_blocks
from crossinfer.handlers.sharing import SharedModel


class KeyedHandler(ModelHandler[Block, Block, ModelCache]):
    """Runs each block with the model node of its route; RunInference gives
    it no batching of its own (the blocks are made per route already)."""

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

    def run_inference(self, batch: Block | Sequence[Block], model: ModelCache,
                      inference_args: dict[str, Any] | None = None) -> list[Block]:
        finished: list[Block] = []
        for block in as_blocks(batch):
            if block.route is None:  # failures only: nothing to route
                finished.append(block)
                continue
            with model.lease(block.route) as loaded:
                finished.extend(self.handlers[block.route].runner.run([block], loaded))
        return finished

    def get_num_bytes(self, batch: Block | Sequence[Block]) -> int:
        return sum(int(b.features.nbytes) for b in as_blocks(batch))

    def get_metrics_namespace(self) -> str:
        return self.namespace

    def should_skip_batching(self) -> bool:
        return True


def _release(model: Any) -> None:
    model.release()
