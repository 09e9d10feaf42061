"""A keyed node: route keys to models without thrashing a bounded model cache.

Beam's remedy for thrashing is a GroupByKey the user writes before
RunInference. Here it is built in: elements are keyed by *route* (keys sharing
a model share a route, so they share batches) and a shard of it
(:mod:`crossinfer.patterns.shards`: one route's work spreads over workers),
grouped, cut into chunks of each route's own ``max_batch_size`` and handed to
RunInference as pre-made batches. A worker then sees all chunks of a group
together and loads each model once per group instead of once per batch.

* Bounded input: ``GroupByKey`` on (route, shard) (per window).
* Unbounded input: ``GroupIntoBatches`` on (route, shard), flushing after the
  smallest ``max_wait_secs`` of the routes (default 1 s), so streaming
  pipelines need no trigger of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.ml.inference.base import RunInference

from crossinfer.handlers.keyed import Chunk, KeyedChunkHandler
from crossinfer.handlers.node_handler import DEFAULT_MAX_BATCH, ModelNodeHandler
from crossinfer.handlers.registry import model_handler
from crossinfer.patterns.context import ExpandContext, child_path
from crossinfer.patterns.shards import ShardRuns, shards_of
from crossinfer.records import Failure
from crossinfer.spec.nodes import KeyedNode, ModelNode

_FAILED = "__failed__"
DEFAULT_STREAMING_WAIT_SECS = 1.0


def routes_of(node: KeyedNode) -> tuple[dict[str, str], dict[str, ModelNode], str | None]:
    """key -> route id, route id -> model node, and the default route id."""
    key_to_route: dict[str, str] = {}
    models: dict[str, ModelNode] = {}
    for route in node.routes:
        models[route.node.name] = route.node
        for key in route.keys:
            key_to_route[key] = route.node.name
    default = None
    if node.default is not None:
        models[node.default.name] = node.default
        default = node.default.name
    return key_to_route, models, default


class _RouteDoFn(beam.DoFn):
    """record -> ((route, shard), record), or a failure."""

    def __init__(self, key_to_route: dict[str, str], default: str | None, path: str,
                 shards: ShardRuns) -> None:
        self._key_to_route = key_to_route
        self._default = default
        self._path = path
        self._shards = shards

    def start_bundle(self) -> None:
        self._shards.reset()

    def process(self, record: Any) -> Iterator[Any]:
        if isinstance(record, Failure):
            yield pvalue.TaggedOutput(_FAILED, record)
            return
        route = self._key_to_route.get(record.key, self._default) if record.key is not None \
            else self._default
        if route is None:
            why = ("the element has no key" if record.key is None
                   else f"no route for key {record.key!r}")
            yield pvalue.TaggedOutput(_FAILED, Failure(
                record.original, self._path, f"{why} and the keyed node has no default route"))
            return
        yield (route, self._shards.shard(route, record)), record


class _ChunkDoFn(beam.DoFn):
    """((route, shard), records) -> chunks of at most the route's own max_batch_size."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self._sizes = sizes

    def process(self, group: tuple[tuple[str, int], Iterable[Any]]) -> Iterator[Chunk]:
        (route, _), records = group
        size = self._sizes[route]
        chunk: list[Any] = []
        for record in records:
            chunk.append(record)
            if len(chunk) >= size:
                yield Chunk(route, chunk)
                chunk = []
        if chunk:
            yield Chunk(route, chunk)


def expand_keyed(records: beam.PCollection, node: KeyedNode, parent: str,
                 ctx: ExpandContext) -> beam.PCollection:
    path = child_path(parent, node.name)
    key_to_route, models, default = routes_of(node)
    handlers: dict[str, ModelNodeHandler] = {
        route: model_handler(model, ctx.policy, child_path(path, model.name))
        for route, model in models.items()}
    sizes = {route: model.batching.max_batch_size or DEFAULT_MAX_BATCH
             for route, model in models.items()}
    bound = node.max_models_per_worker or len(models)

    routed = records | f"Route[{path}]" >> beam.ParDo(
        _RouteDoFn(key_to_route, default, path, ShardRuns(shards_of(node, len(models)), sizes))
    ).with_outputs(_FAILED, main="routed")
    if routed.routed.is_bounded:
        groups = routed.routed | f"GroupByRoute[{path}]" >> beam.GroupByKey()
    else:
        waits = [m.batching.max_wait_secs for m in models.values() if m.batching.max_wait_secs]
        groups = routed.routed | f"BatchByRoute[{path}]" >> beam.GroupIntoBatches(
            batch_size=max(sizes.values()),
            max_buffering_duration_secs=min(waits) if waits else DEFAULT_STREAMING_WAIT_SECS)
    chunks = groups | f"Chunk[{path}]" >> beam.ParDo(_ChunkDoFn(sizes)).with_output_types(Chunk)
    inferred = chunks | f"RunInference[{path}]" >> RunInference(
        KeyedChunkHandler(handlers, bound, f"crossinfer/{path}"))
    return (routed[_FAILED], inferred) | f"Merge[{path}]" >> beam.Flatten()
