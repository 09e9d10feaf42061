"""An A/B node: split elements between arms (random, hash-sticky) or mirror them."""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from crossinfer.patterns.context import ExpandContext, child_path
from crossinfer.records import Failure
from crossinfer.spec.nodes import ABTestNode

_FAILED = "__failed__"


def hash_bucket(salt: str, key: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, key): the sticky split."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def pick_arm(point: float, cumulative: Sequence[float]) -> int:
    """The arm whose share of [0, 1) contains ``point``."""
    return min(bisect.bisect_right(cumulative, point), len(cumulative) - 1)


class _SplitDoFn(beam.DoFn):
    """Tags each record with the arm it goes to; failures go to their own tag."""

    def __init__(self, node: ABTestNode, path: str) -> None:
        total = sum(arm.weight for arm in node.arms)
        acc, cumulative = 0.0, []
        for arm in node.arms:
            acc += arm.weight / total
            cumulative.append(acc)
        self._cumulative = cumulative
        self._arms = [arm.name for arm in node.arms]
        self._split = node.split
        self._seed = node.seed
        self._salt = node.salt if node.salt is not None else node.name
        self._path = path
        self._rng: random.Random | None = None

    def setup(self) -> None:
        self._rng = random.Random(self._seed)
        self._counters = [Metrics.counter(f"crossinfer/{self._path}/{arm}", "routed")
                          for arm in self._arms]

    def process(self, record: Any) -> Iterator[Any]:
        if isinstance(record, Failure):
            yield pvalue.TaggedOutput(_FAILED, record)
            return
        if self._split == "mirror":
            for counter, arm_name in zip(self._counters, self._arms, strict=False):
                counter.inc()
                yield pvalue.TaggedOutput(arm_name, record)
            return
        if self._split == "hash":
            if record.key is None:
                yield pvalue.TaggedOutput(_FAILED, Failure(
                    record.original, self._path,
                    "split 'hash' needs a key, but the element has none (set the key field, "
                    "or use split 'random')"))
                return
            point = hash_bucket(self._salt, record.key)
        else:
            assert self._rng is not None
            point = self._rng.random()
        arm = pick_arm(point, self._cumulative)
        self._counters[arm].inc()
        yield pvalue.TaggedOutput(self._arms[arm], record)


def expand_ab_test(records: beam.PCollection, node: ABTestNode, parent: str,
                   ctx: ExpandContext) -> beam.PCollection:
    from crossinfer.patterns.graph import expand_node

    path = child_path(parent, node.name)
    # Upstream failures leave once, before the split: a mirror must not copy them.
    split = records | f"Split[{path}]" >> beam.ParDo(_SplitDoFn(node, path)).with_outputs(
        _FAILED, *[arm.name for arm in node.arms])
    outputs: list[beam.PCollection] = [split[_FAILED]]
    for arm in node.arms:
        outputs.append(expand_node(split[arm.name], arm.node, child_path(path, arm.name), ctx))
    return tuple(outputs) | f"Merge[{path}]" >> beam.Flatten()

