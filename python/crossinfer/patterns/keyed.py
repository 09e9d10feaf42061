"""A keyed node: route keys to models without thrashing a bounded model cache.

Beam's remedy for thrashing is a GroupByKey the user writes before
RunInference. Here it is built in: each block's rows are split by *route*
(keys sharing a model share a route, so they share blocks) and a shard of it
(:mod:`crossinfer.patterns.shards`: one route's work spreads over workers),
grouped, joined into blocks of each route's own ``max_batch_size`` and handed
to RunInference as they are. A worker then sees all blocks of a group
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
import numpy as np
from apache_beam import pvalue
from apache_beam.ml.inference.base import RunInference

from crossinfer.engine.block import Block, concat
from crossinfer.handlers.keyed import KeyedHandler
from crossinfer.handlers.node_handler import batch_bounds
from crossinfer.handlers.registry import model_handler
from crossinfer.patterns.context import ExpandContext, Flow, child_path
from crossinfer.patterns.shards import ShardRuns, shards_of
from crossinfer.spec.nodes import KeyedNode, ModelNode
from crossinfer.wire import FAILURES_TAG

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


class _Route(beam.DoFn):
    """Each block's rows as ((route, shard), block of those rows); rows without
    a route, and the block's failures, tagged FAILURES_TAG."""

    def __init__(self, key_to_route: dict[str, str], default: str | None, path: str,
                 shards: ShardRuns) -> None:
        self._key_to_route = key_to_route
        self._default = default
        self._path = path
        self._shards = shards

    def start_bundle(self) -> None:
        self._shards.reset()

    def process(self, block: Block) -> list[Any]:
        failures = list(block.failures)
        by_route: dict[str, list[int]] = {}
        for i, key in enumerate(block.keys or [None] * len(block)):
            route = self._default if key is None else self._key_to_route.get(key, self._default)
            if route is None:
                why = "the element has no key" if key is None else f"no route for key {key!r}"
                failures.append(block.failure(
                    i, self._path, f"{why} and the keyed node has no default route"))
            else:
                by_route.setdefault(route, []).append(i)
        out: list[Any] = []
        for route, rows in by_route.items():
            positions, lo = np.asarray(rows), 0
            for shard, count in self._shards.runs(route, block.features[rows[0]], len(rows)):
                part = block.take(positions[lo:lo + count])
                part.route = route
                out.append(((route, shard), part))
                lo += count
        if failures:
            out.append(pvalue.TaggedOutput(FAILURES_TAG, Block.of_failures(failures)))
        return out


class _Join(beam.DoFn):
    """((route, shard), blocks) -> blocks of the route of at most its max_batch_size
    rows each, one feature shape each."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self._sizes = sizes

    def process(self, group: tuple[tuple[str, int], Iterable[Block]]) -> Iterator[Block]:
        (route, _), blocks = group
        size = self._sizes[route]
        held: dict[tuple[int, ...], list[Block]] = {}
        rows: dict[tuple[int, ...], int] = {}
        for block in blocks:
            shape = block.features.shape[1:]
            held.setdefault(shape, []).append(block)
            rows[shape] = rows.get(shape, 0) + len(block)
            if rows[shape] >= size:
                pieces = concat(held[shape]).cut(size)
                rest = [pieces.pop()] if len(pieces[-1]) < size else []
                yield from pieces
                held[shape], rows[shape] = rest, sum(len(b) for b in rest)
        for waiting in held.values():
            if waiting:
                yield from concat(waiting).cut(size)


def expand_keyed(flow: Flow, node: KeyedNode, parent: str, ctx: ExpandContext) -> Flow:
    path = child_path(parent, node.name)
    key_to_route, models, default = routes_of(node)
    handlers = {route: model_handler(model, ctx.policy, child_path(path, model.name))
                for route, model in models.items()}
    sizes = {route: batch_bounds(model.batching)[1] for route, model in models.items()}
    bound = node.max_models_per_worker or len(models)

    routed = flow.blocks | f"Route[{path}]" >> beam.ParDo(
        _Route(key_to_route, default, path, ShardRuns(shards_of(node, len(models)), sizes))
    ).with_outputs(FAILURES_TAG, main="routed")
    by_route = routed.routed
    by_route.element_type = beam.typehints.Tuple[beam.typehints.Tuple[str, int], Block]
    if by_route.is_bounded:
        groups = by_route | f"GroupByRoute[{path}]" >> beam.GroupByKey()
    else:
        waits = [m.batching.max_wait_secs for m in models.values() if m.batching.max_wait_secs]
        groups = by_route | f"BatchByRoute[{path}]" >> beam.GroupIntoBatches(
            batch_size=max(sizes.values()),
            max_buffering_duration_secs=min(waits) if waits else DEFAULT_STREAMING_WAIT_SECS)
    joined = groups | f"Join[{path}]" >> beam.ParDo(_Join(sizes)).with_output_types(Block)
    inferred = joined | f"RunInference[{path}]" >> RunInference(
        KeyedHandler(handlers, bound, f"crossinfer/{path}"))
    failed = routed[FAILURES_TAG]
    failed.element_type = inferred.element_type = Block
    merged = (failed, inferred) | f"Merge[{path}]" >> beam.Flatten()
    merged.element_type = Block
    # Blocks leave each a route's: as many rows as its max_batch_size.
    if flow.max_rows is None:
        return Flow(merged, None, multirow=True)
    return Flow(merged, max(sizes.values()), flow.multirow)
