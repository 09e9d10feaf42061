"""Pipeline pieces shared by the benchmarks: a synthetic source, counting sinks,
and a runner call that returns the counted elements.

The source generates its rows inside the pipeline (``Create`` carries only
shard numbers), so no variant pays for encoding the data set into the
pipeline, and every variant sees exactly the rows of :func:`bench.models.dataset`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from bench.models import DIM, ragged_lengths, shard_data, shard_sizes

NAMESPACE = "bench"
SHARDS = 8


class _GenShard(beam.DoFn):
    def __init__(self, n: int, shards: int, seed: int, dim: int, batch: int | None,
                 ragged: tuple[int, int] | None, rows: bool, keys: int | None,
                 runs: int | None = None) -> None:
        self._runs = runs
        self._sizes = shard_sizes(n, shards)
        self._rows = rows
        self._keys = keys
        self._seed = seed
        self._dim = dim
        self._batch = batch
        self._ragged = ragged

    def process(self, shard: int) -> Iterator[np.ndarray]:
        rows = self._sizes[shard]
        if self._ragged is not None:
            low, high = self._ragged
            lengths = ragged_lengths(self._seed, shard, rows, low, high, self._runs)
            values = shard_data(self._seed, shard, rows, high)
            first = sum(self._sizes[:shard])
            for i in range(rows):
                x = values[i, :lengths[i]]
                yield beam.Row(id=first + i, features=x) if self._rows else x
            return
        data = shard_data(self._seed, shard, rows, self._dim)
        first = sum(self._sizes[:shard])
        if self._batch is None:
            if self._keys:
                for i in range(rows):
                    yield beam.Row(id=first + i, key=f"k{(first + i) % self._keys}",
                                   features=data[i])
            elif self._rows:
                for i in range(rows):
                    yield beam.Row(id=first + i, features=data[i])
            else:
                yield from data
        else:
            for start in range(0, rows, self._batch):
                if self._rows:
                    yield beam.Row(id=first + start, features=data[start:start + self._batch])
                else:
                    yield data[start:start + self._batch]


def warm_data(n: int, *, seed: int = 0, dim: int = DIM, ragged: tuple[int, int] | None = None,
              shards: int = SHARDS) -> None:
    """Generate (and cache) the rows a :class:`Synthetic` source of ``n`` reads,
    so no timed run pays for making them."""
    for shard, rows in enumerate(shard_sizes(n, shards)):
        if ragged is None:
            shard_data(seed, shard, rows, dim)
        else:
            shard_data(seed, shard, rows, ragged[1])
            ragged_lengths(seed, shard, rows, *ragged)


class Synthetic(beam.PTransform):
    """``n`` float32 rows of ``dim`` values (one element each), or batches of
    ``batch`` rows (one 2-D array per element), or ragged rows with lengths
    in ``ragged=(low, high)``. With ``rows=True`` (the default) each element
    is a record, ``beam.Row(id=..., features=<the array>)``; otherwise the
    bare array. With ``keys=K`` records also carry ``key`` = ``k<id mod K>``
    (keys round-robin). With ``runs=R`` ragged lengths arrive in runs of R
    rows of one length (:func:`bench.models.ragged_lengths`)."""

    def __init__(self, n: int, *, seed: int = 0, dim: int = DIM, batch: int | None = None,
                 ragged: tuple[int, int] | None = None, shards: int = SHARDS,
                 rows: bool = True, keys: int | None = None, runs: int | None = None) -> None:
        super().__init__()
        self._args = (n, shards, seed, dim, batch, ragged, rows, keys, runs)
        self._shards = shards

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        return (pbegin | "Shards" >> beam.Create(list(range(self._shards)))
                | "Generate" >> beam.ParDo(_GenShard(*self._args)))


class _Count(beam.DoFn):
    """Counts elements (or a weight per element) into a Beam counter, once per bundle."""

    def __init__(self, name: str, weight: Callable[[Any], int] | None) -> None:
        self._name = name
        self._weight = weight

    def setup(self) -> None:
        self._counter = Metrics.counter(NAMESPACE, self._name)

    def start_bundle(self) -> None:
        self._n = 0

    def process(self, element: Any) -> None:
        self._n += 1 if self._weight is None else self._weight(element)

    def finish_bundle(self) -> None:
        self._counter.inc(self._n)


def count(pcoll: beam.PCollection, name: str,
          weight: Callable[[Any], int] | None = None) -> None:
    _ = pcoll | f"Count[{name}]" >> beam.ParDo(_Count(name, weight))


def run(build: Callable[[beam.Pipeline], None]) -> Any:
    """Build and run a pipeline on the in-process FnApiRunner; returns its result."""
    pipeline = beam.Pipeline(runner="FnApiRunner")
    build(pipeline)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def counter(result: Any, name: str, namespace: str = NAMESPACE) -> int:
    found = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    return int(sum(m.committed for m in found["counters"]))


def counters_under(result: Any, namespace_prefix: str, name: str) -> int:
    """Sum a counter over every namespace starting with ``namespace_prefix``
    (crossinfer reports per node path)."""
    found = result.metrics().query(MetricsFilter().with_name(name))
    return int(sum(m.committed for m in found["counters"]
                   if m.key.metric.namespace == namespace_prefix))


def check(result: Any, expected: int, *names: str) -> dict[str, int]:
    """The counted elements of ``names``; raises when they do not add up."""
    got = {n: counter(result, n) for n in names}
    if sum(got.values()) != expected:
        raise RuntimeError(f"expected {expected} elements out, counted {got}")
    return got
