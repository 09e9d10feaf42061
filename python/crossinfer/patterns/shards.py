"""Shards of a keyed node's routes: how one route's work spreads over workers.

A keyed node groups its elements by ``(route, shard)`` before inference (see
:mod:`crossinfer.patterns.keyed`). With one shard a route is one
``GroupByKey`` group, so its whole work runs on one worker; with ``S`` shards
the runner spreads a route over up to ``S`` workers.

**Which shard.** Per bundle, a counter per route hands out shards in *runs of
the route's* ``max_batch_size``: the first ``max_batch_size`` elements of a
route go to one shard, the next run to the next shard, and so on, wrapping
around. The first shard of a bundle is a hash (CRC-32) of the route's first
element's feature bytes in that bundle, so bundles that each hold fewer than a
batch (streaming) still spread, and the same bundles give the same shards.
Why runs and not a hash of every element: a group is cut into batches of
``max_batch_size``, and a per-element hash would split a route's elements
across all shards, leaving ``S`` partly filled batches where one full batch
would do. With runs a shard receives whole batches, and only the last run of
a bundle is partial.

**The default** (``shards`` unset): :data:`DEFAULT_SHARDS` when every model
of the node fits the node's model cache (``max_models_per_worker`` unset or at
least the number of models). Then a worker process loads each route's model at
most once, however many shards it receives, so a node's loads stay at most
*worker processes x routes*, and 16 shards spread a hot route over up to 16
workers (a route that fills its 16 shards lands on one of 2 workers with a
chance of 2^-15, for uniformly hashed keys).
When the cache holds fewer models than the node has, the default is 1 shard:
a worker then sees one group per route, and each extra group of a route
interleaved with other routes' could cost one more load.
"""

from __future__ import annotations

import zlib

import numpy as np

from crossinfer.spec.nodes import KeyedNode

#: Shards per route when the spec sets none and the node's cache holds all its models.
DEFAULT_SHARDS = 16


def shards_of(node: KeyedNode, models: int) -> int:
    """The node's shards per route: its ``shards``, else the default above.

    ``models``: the number of distinct models of the node (routes plus default).
    """
    if node.shards is not None:
        return node.shards
    bound = node.max_models_per_worker
    return DEFAULT_SHARDS if bound is None or bound >= models else 1


class ShardRuns:
    """Hands out shards for one bundle: runs of each route's batch size.

    ``sizes``: route -> its ``max_batch_size``. Call :meth:`reset` at the start
    of every bundle; :meth:`runs` for each block's rows of a route, in order
    (:meth:`shard` for one element).
    """

    def __init__(self, shards: int, sizes: dict[str, int]) -> None:
        self._shards = shards
        self._sizes = sizes
        # route -> [shard of the current run, elements already in it]
        self._runs: dict[str, list[int]] = {}

    def reset(self) -> None:
        self._runs = {}

    def runs(self, route: str, first: np.ndarray, n: int) -> list[tuple[int, int]]:
        """The shards of the next ``n`` elements of ``route`` (``first``: the
        first one's features), as (shard, elements) runs in order."""
        if self._shards == 1:
            return [(0, n)]
        run = self._runs.get(route)
        if run is None:
            run = self._runs[route] = [_first_shard(first, self._shards), 0]
        size, out = self._sizes[route], []
        while n:
            if run[1] >= size:
                run[0] = (run[0] + 1) % self._shards
                run[1] = 0
            take = min(n, size - run[1])
            out.append((run[0], take))
            run[1] += take
            n -= take
        return out

    def shard(self, route: str, features: np.ndarray) -> int:
        """The shard (0 to shards - 1) of the next element of ``route``."""
        return self.runs(route, features, 1)[0][0]


def _first_shard(features: np.ndarray, shards: int) -> int:
    """A stable hash of an element's features (CRC-32: the same in every process,
    unlike Python's ``hash`` of bytes, which is salted per process)."""
    return zlib.crc32(np.ascontiguousarray(features).tobytes()) % shards
