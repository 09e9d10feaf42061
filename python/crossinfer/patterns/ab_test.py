"""An A/B node: split blocks' rows between arms (random, hash-sticky) or mirror them.

* ``random``: each row lands in an arm with probability weight / total,
  independently of every other row, however the runner bundles elements and
  on however many workers. Each instance of the split step draws from its own
  generator, seeded from the spec's ``seed`` *and* 128 random bits of its own
  (:func:`instance_rng`): instances seeded from the seed alone all replayed the
  same draws, so every new instance (new bundles, new workers, streaming) took
  the same arms for its first elements, biasing the shares (a 50/50 split came
  out 43/57 in every window of a streaming run). What remains reproducible is
  the distribution, not the assignment: two runs assign the same elements
  differently. For assignments that repeat - in tests, across runs, in batch
  and streaming alike - use ``hash`` on a key.
* ``hash``: sticky on the row's key: ``sha256(salt + key)`` picks the arm, so a
  key always lands in the same arm. A row without a key fails, naming the split.
* ``mirror``: every row reaches every arm (the same block: blocks are never
  changed once made).

Upstream failures leave once, before the split: a mirror must not copy them.
"""

from __future__ import annotations

import bisect
import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.metrics import Metrics

from crossinfer.engine.block import Block
from crossinfer.patterns.context import Expand, ExpandContext, Flow, child_path
from crossinfer.spec.nodes import ABTestNode
from crossinfer.wire import FAILURES_TAG

#: Bits of randomness of each split instance's own, mixed into its generator's seed.
NONCE_BITS = 128


def hash_bucket(salt: str, key: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, key): the sticky split."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def pick_arm(point: float, cumulative: Sequence[float]) -> int:
    """The arm whose share of [0, 1) contains ``point``."""
    return min(bisect.bisect_right(cumulative, point), len(cumulative) - 1)


def instance_rng(seed: int, nonce: int | None = None) -> np.random.Generator:
    """A generator for one split instance: seeded from the spec's ``seed`` and
    ``nonce`` (default: :data:`NONCE_BITS` fresh random bits), so no two
    instances draw alike."""
    if nonce is None:
        nonce = secrets.randbits(NONCE_BITS)
    words = [(seed % 2**64) >> 32, seed % 2**32]
    words += [(nonce >> (32 * i)) % 2**32 for i in range(NONCE_BITS // 32)]
    return np.random.default_rng(np.random.SeedSequence(words))


def arm_tag(index: int) -> str:
    """The output tag of arm ``index`` (arm names are the user's: they could
    collide with the failures' tag)."""
    return f"arm{index}"


class _Split(beam.DoFn):
    """Each block's rows, tagged by arm; its failures, and rows that cannot be
    split, tagged FAILURES_TAG."""

    def __init__(self, node: ABTestNode, path: str) -> None:
        total = sum(arm.weight for arm in node.arms)
        acc, cumulative = 0.0, []
        for arm in node.arms:
            acc += arm.weight / total
            cumulative.append(acc)
        self._cumulative = np.asarray(cumulative)
        self._arms = [arm.name for arm in node.arms]
        self._split = node.split
        self._seed = node.seed
        self._salt = node.salt if node.salt is not None else node.name
        self._path = path

    def setup(self) -> None:
        self._rng = instance_rng(self._seed)
        self._counters = [Metrics.counter(f"crossinfer/{self._path}/{arm}", "routed")
                          for arm in self._arms]

    def process(self, block: Block) -> list[Any]:
        out: list[Any] = []
        failures = block.failures
        n = len(block)
        if n and self._split == "mirror":
            block = block.with_failures([]) if failures else block
            for i, counter in enumerate(self._counters):
                counter.inc(n)
                out.append(pvalue.TaggedOutput(arm_tag(i), block))
        elif n:
            points, failures = self._points(block, list(failures))
            arms = np.minimum(np.searchsorted(self._cumulative, points, side="right"),
                              len(self._arms) - 1)
            arms[points > 1.0] = -1  # rows that failed to get a point go to no arm
            for i, counter in enumerate(self._counters):
                rows = np.flatnonzero(arms == i)
                if rows.size:
                    counter.inc(int(rows.size))
                    out.append(pvalue.TaggedOutput(arm_tag(i), block.take(rows)))
        if failures:
            out.append(pvalue.TaggedOutput(FAILURES_TAG, Block.of_failures(failures)))
        return out

    def _points(self, block: Block, failures: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """Each row's point in [0, 1) (a row that cannot have one: 2.0, with
        its failure added to ``failures``)."""
        n = len(block)
        if self._split != "hash":
            return self._rng.random(n), failures
        keys = block.keys or [None] * n
        points = np.empty(n)
        for i, key in enumerate(keys):
            if key is None:
                points[i] = 2.0  # in no arm
                failures.append(block.failure(
                    i, self._path, "split 'hash' needs a key, but the element has none (set "
                                   "the key field, or use split 'random')"))
            else:
                points[i] = hash_bucket(self._salt, key)
        return points, failures


def expand_ab_test(flow: Flow, node: ABTestNode, parent: str, ctx: ExpandContext,
                   expand: Expand) -> Flow:
    path = child_path(parent, node.name)
    tags = [arm_tag(i) for i in range(len(node.arms))]
    split = flow.blocks | f"Split[{path}]" >> beam.ParDo(_Split(node, path)).with_outputs(
        FAILURES_TAG, *tags)
    failed = split[FAILURES_TAG]
    failed.element_type = Block
    arms: list[Flow] = []
    for tag, arm in zip(tags, node.arms, strict=True):
        arm_blocks = split[tag]
        arm_blocks.element_type = Block
        arms.append(expand(flow.with_blocks(arm_blocks), arm.node, child_path(path, arm.name),
                           ctx))
    merged = (failed, *(a.blocks for a in arms)) | f"Merge[{path}]" >> beam.Flatten()
    merged.element_type = Block
    return Flow(merged, merged_rows(flow, arms), flow.multirow)


def merged_rows(flow: Flow, parts: list[Flow]) -> int | None:
    """The most rows a block of ``parts`` merged may have (None: Beam batches)."""
    if flow.max_rows is None:
        return None
    return max((p.max_rows or flow.max_rows for p in parts), default=flow.max_rows)
