"""What the report keeps per (window, arm) and per (window, arm pair), and their merge.

Accumulators hold counts, :class:`~crossinfer.experiments.stats.Moments` and,
for latency, DDSketches: a few kilobytes per arm whatever the traffic, merged
exactly (counts, moments) or within 1% relative error (latency quantiles), so
the report runs in parallel and per window like any Beam combiner. Rows are
added a chunk of columns at a time (:mod:`crossinfer.experiments.columns`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from ddsketch import DDSketch

from crossinfer.experiments.columns import (
    NO_LABEL,
    Columns,
    Sides,
    label_counts,
    length,
    pair_counts,
)
from crossinfer.experiments.stats import Moments

#: Relative accuracy of latency quantiles (DDSketch's guarantee).
LATENCY_RELATIVE_ACCURACY = 0.01
#: Model stages tracked per route (bounds the accumulator; a row with more is malformed).
MAX_STAGES = 16
#: Largest model time per element and stage counted, in ms (an hour): a row above
#: it is malformed (and no sum of stages can overflow the sketch's key mapping).
MAX_MODEL_MS = 3_600_000.0
#: Largest batch size counted (an int32: far above any batch a model runs).
MAX_BATCH_SIZE = 2**31 - 1


def _sketch() -> DDSketch:
    return DDSketch(relative_accuracy=LATENCY_RELATIVE_ACCURACY)


@dataclass
class StageAcc:
    """One model stage: per-element model time, and the batch sizes elements were in."""

    ms: DDSketch = field(default_factory=_sketch)
    batch_n: int = 0
    batch_sum: int = 0
    batch_max: int = 0

    def merge(self, other: StageAcc) -> None:
        self.ms.merge(other.ms)
        self.batch_n += other.batch_n
        self.batch_sum += other.batch_sum
        self.batch_max = max(self.batch_max, other.batch_max)


class _Summaries:
    """Merging of an accumulator's summaries, field by field: counts (int)
    add, Counters and :class:`Moments` merge. Lists (the ``new_*`` values, empty
    once compacted) are left to the accumulator."""

    def merge(self, other: Any) -> None:
        """``other``'s summaries into these; both compacted."""
        for f in fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            mine = getattr(self, f.name)
            if type(mine) is int:
                setattr(self, f.name, mine + getattr(other, f.name))
            elif isinstance(mine, Counter):
                mine.update(getattr(other, f.name))
            elif isinstance(mine, Moments):
                mine.merge(getattr(other, f.name))


@dataclass
class ArmAcc(_Summaries):
    results: int = 0
    failures: int = 0
    labels: Counter[int] = field(default_factory=Counter)
    score: Moments = field(default_factory=Moments)
    metric_n: int = 0
    correct: int = 0
    abs_error: Moments = field(default_factory=Moments)
    latency: DDSketch | None = None
    stages: list[StageAcc] = field(default_factory=list)
    # Timings added since the last compact(): validated and folded into the
    # sketches once per bundle, when the arm's stage count is known.
    new_timing: list[tuple[Any, Any]] = field(default_factory=list)
    bad_timing: int = 0  # rows whose timing was malformed and left out (valid_timing)

    def add_rows(self, cols: Columns, rows: np.ndarray, accuracy: bool) -> None:
        """Rows ``rows`` of ``cols`` (all of this arm): failures counted; of
        results, the label histogram, score moments, the metric against a
        finite ground truth (``accuracy``: label == truth; else
        ``|value - truth|``) and the timing."""
        failed = cols.failed[rows]
        n_failed = int(np.count_nonzero(failed))
        self.failures += n_failed
        if n_failed:
            rows = rows[~failed]
        if not rows.size:
            return
        self.results += int(rows.size)
        label = cols.label[rows]
        self.labels.update(label_counts(label))
        self.score.merge(moments_of(cols.score[rows]))
        truth = cols.truth[rows]
        known = np.isfinite(truth)
        if known.any():
            if accuracy:
                known &= label != NO_LABEL
                self.metric_n += int(np.count_nonzero(known))
                self.correct += int(np.count_nonzero(label[known] == truth[known]))
            else:
                errors = moments_of(np.abs(cols.value[rows][known] - truth[known]))
                self.metric_n += errors.n
                self.abs_error.merge(errors)
        if cols.model_ms is not None:
            model_ms, batch_size = cols.model_ms, cols.batch_size
            for i in rows.tolist():
                ms = model_ms[i]
                if ms is not None and length(ms) != 0:  # (-1: malformed, counted so)
                    self.new_timing.append((ms, None if batch_size is None else batch_size[i]))

    def compact(self, stages: int | None = None) -> ArmAcc:
        """Fold the timings added since the last call into the sketches;
        ``stages``: the model stages on the arm's route, when known (a timing
        of another length is malformed)."""
        for model_ms, batch_size in self.new_timing:
            if not _add_timing(self, model_ms, batch_size, stages):
                self.bad_timing += 1
        self.new_timing = []
        return self

    def merge(self, other: ArmAcc) -> None:
        super().merge(other)
        if other.latency is not None:
            if self.latency is None:
                self.latency = other.latency
            else:
                self.latency.merge(other.latency)
        for i, stage in enumerate(other.stages):
            if i < len(self.stages):
                self.stages[i].merge(stage)
            else:
                self.stages.append(stage)


def moments_of(values: Any) -> Moments:
    """Count, mean and sum of squared deviations of the finite ``values``."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return Moments()
    mean = float(x.mean())
    return Moments(int(x.size), mean, float(np.square(x - mean).sum()))


def valid_timing(model_ms: Any, batch_size: Any, stages: int | None = None) -> bool:
    """Whether a row's timing can be counted: ``model_ms`` 1 to
    :data:`MAX_STAGES` numbers (not booleans or text) from 0 to
    :data:`MAX_MODEL_MS`, as many as ``stages`` when given; ``batch_size`` null,
    empty, or as many integers from 1 to :data:`MAX_BATCH_SIZE`. Anything else
    (a hostile or corrupt row) is left out rather than skewing the quantiles."""
    try:
        times = list(model_ms)
        sizes = [] if batch_size is None else list(batch_size)
    except TypeError:
        return False
    if not 1 <= len(times) <= MAX_STAGES or (stages is not None and len(times) != stages) \
            or (sizes and len(sizes) != len(times)):
        return False
    return all(isinstance(t, _REAL) and not isinstance(t, bool) and 0 <= t <= MAX_MODEL_MS
               for t in times) and \
        all(isinstance(b, _INTEGER) and not isinstance(b, bool) and 1 <= b <= MAX_BATCH_SIZE
            for b in sizes)


_REAL = (int, float, np.integer, np.floating)
_INTEGER = (int, np.integer)


def _add_timing(acc: ArmAcc, model_ms: Any, batch_size: Any, stages: int | None) -> bool:
    """One row's timing into ``acc``; False (nothing added) when it is malformed."""
    if not valid_timing(model_ms, batch_size, stages):
        return False
    times = [float(t) for t in model_ms]
    sizes = [int(b) for b in batch_size or ()]
    if acc.latency is None:
        acc.latency = _sketch()
    acc.latency.add(sum(times))
    while len(acc.stages) < len(times):
        acc.stages.append(StageAcc())
    for i, t in enumerate(times):
        stage = acc.stages[i]
        stage.ms.add(t)
        if sizes:
            stage.batch_n += 1
            stage.batch_sum += sizes[i]
            stage.batch_max = max(stage.batch_max, sizes[i])
    return True


@dataclass
class PairAcc(_Summaries):
    pairs: int = 0
    labeled: int = 0  # pairs with a label in both arms
    agree: int = 0
    flips: Counter[tuple[int, int]] = field(default_factory=Counter)
    score_diff: Moments = field(default_factory=Moments)  # |score other - score control|
    metric_n: int = 0
    only_other: int = 0  # right in the other arm only
    only_control: int = 0
    error_diff: Moments = field(default_factory=Moments)  # |err other| - |err control|

    def add_pairs(self, control: Sides, other: Sides, accuracy: bool) -> None:
        """n elements' two sides, aligned by row. The control's truth is the
        element's; ``accuracy``: compare labels with it, else ``|value - truth|``."""
        self.pairs += len(control.label)
        c_label, o_label = control.label, other.label
        labeled = (c_label != NO_LABEL) & (o_label != NO_LABEL)
        self.labeled += int(np.count_nonzero(labeled))
        agree = labeled & (c_label == o_label)
        self.agree += int(np.count_nonzero(agree))
        flipped = labeled & ~agree
        if flipped.any():
            self.flips.update(pair_counts(c_label[flipped], o_label[flipped]))
        self.score_diff.merge(moments_of(np.abs(other.score - control.score)))
        truth = control.truth
        known = np.isfinite(truth)
        if not known.any():
            return
        if accuracy:
            known &= labeled
            self.metric_n += int(np.count_nonzero(known))
            c_right, o_right = c_label[known] == truth[known], o_label[known] == truth[known]
            self.only_other += int(np.count_nonzero(o_right & ~c_right))
            self.only_control += int(np.count_nonzero(c_right & ~o_right))
        else:
            diffs = moments_of(np.abs(other.value[known] - truth[known])
                               - np.abs(control.value[known] - truth[known]))
            self.metric_n += diffs.n
            self.error_diff.merge(diffs)

    def compact(self) -> PairAcc:
        return self


def merge_window(tagged: Iterable[tuple[str, Any, Any]]) -> dict[str, dict[Any, Any]]:
    """A window's per-bundle accumulators, tagged ``("arm", arm, ArmAcc)``,
    ``("pair", (control, other), PairAcc)`` or ``("keys", arm, distinct keys)``
    -> ``{"arm": {arm: ArmAcc}, "pair": {pair: PairAcc}, "keys": {arm: int}}``:
    one accumulator per arm and pair, the distinct keys summed. (A few per
    bundle: a GroupByKey brings them together, no combiner lifting needed.)"""
    out: dict[str, dict[Any, Any]] = {"arm": {}, "pair": {}, "keys": {}}
    for kind, key, value in tagged:
        mine = out[kind]
        held = mine.get(key)
        if kind == "keys":
            mine[key] = value + (held or 0)
        elif held is None:
            mine[key] = value.compact()
        else:
            held.merge(value.compact())
    return out
