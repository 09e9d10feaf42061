"""An A/B node: split blocks' rows between arms (random, hash-sticky) or mirror them.

* ``random``: each row's arm is drawn from a uniform number fixed by the
  spec's ``seed``, the split's salt, the row's features and its key when it
  has one (:func:`element_points`: keyed BLAKE2b): distinct rows land in arms
  independently with probability weight / total, however the runner bundles
  them and on however many workers, and the same seed and data give the same
  assignment on every run. Rows alike in features and key land in the same
  arm. (A generator seeded from the seed alone, per split instance, replayed
  the same draws in every instance - new bundles, workers, streaming windows -
  so a 50/50 split came out 43/57.)
* ``hash``: sticky on the row's key: ``sha256(salt + key)`` picks the arm, so a
  key always lands in the same arm. A row without a key fails, naming the split.
* ``mirror``: every row reaches every arm (the same block: blocks are never
  changed once made).

Upstream failures leave once, before the split: a mirror must not copy them.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.metrics.metric import Metrics

from crossinfer.engine.block import Block
from crossinfer.patterns.context import Expand, ExpandContext, Flow, child_path
from crossinfer.spec.nodes import ABTestNode
from crossinfer.wire import FAILURES_TAG


def hash_bucket(salt: str, key: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, key): the sticky split."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def pick_arm(point: float, cumulative: Sequence[float]) -> int:
    """The arm whose share of [0, 1) contains ``point``."""
    return min(bisect.bisect_right(cumulative, point), len(cumulative) - 1)


def split_key(seed: int, salt: str) -> bytes:
    """The BLAKE2b key of a random split: its seed and salt."""
    return hashlib.sha256(f"{seed}\x00{salt}".encode("utf-8", "surrogatepass")).digest()


def element_points(features: np.ndarray, keys: Sequence[str | None] | None,
                   key: bytes) -> np.ndarray:
    """A uniform number in [0, 1) per row of ``features`` (n, ...), fixed by
    the row's feature bytes, its key in ``keys`` (None: no key) and ``key``
    (:func:`split_key`)."""
    n = len(features)
    data = np.ascontiguousarray(features).tobytes()
    width = len(data) // n if n else 0
    blake, as_int = hashlib.blake2b, int.from_bytes
    points = np.empty(n)
    for i in range(n):
        digest = blake(data[i * width:(i + 1) * width], digest_size=8, key=key)
        key_i = None if keys is None else keys[i]
        if key_i is not None:
            digest.update(b"\x00" + key_i.encode("utf-8", "surrogatepass"))
        points[i] = as_int(digest.digest(), "big") / 2.0**64
    return points


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
        self._key = split_key(self._seed, self._salt)
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
            return element_points(block.features, block.keys, self._key), failures
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
