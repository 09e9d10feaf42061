"""Beam CombineFns: what the report keeps per (window, arm) and per (window, arm pair).

Accumulators hold counts, :class:`~crossinfer.experiments.stats.Moments` and,
for latency, DDSketches: a few kilobytes per arm whatever the traffic, merged
exactly (counts, moments) or within 1% relative error (latency quantiles), so
the report runs in parallel and per window like any Beam combiner.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar

import apache_beam as beam
import numpy as np
from ddsketch import DDSketch

from crossinfer.experiments.schema import ReportInput
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
    # Values added since the last compact(): appended per element (cheap), folded
    # into the counts, moments and sketches above once per bundle, with numpy.
    new_labels: list[int] = field(default_factory=list)
    new_scores: list[float] = field(default_factory=list)
    new_errors: list[float] = field(default_factory=list)
    new_timing: list[tuple[Any, Any]] = field(default_factory=list)
    bad_timing: int = 0  # rows whose timing was malformed and left out (valid_timing)

    def compact(self, stages: int | None = None) -> ArmAcc:
        """Fold the values added since the last call into the summaries;
        ``stages``: the model stages on the arm's route, when known (a timing
        of another length is malformed)."""
        if self.new_labels:
            self.labels.update(self.new_labels)
            self.new_labels = []
        if self.new_scores:
            self.score.merge(moments_of(self.new_scores))
            self.new_scores = []
        if self.new_errors:
            errors = moments_of(self.new_errors)
            self.metric_n += errors.n
            self.abs_error.merge(errors)
            self.new_errors = []
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


def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None


class _Acc(Protocol):
    def compact(self) -> Any: ...

    def merge(self, other: Any) -> None: ...


AccT = TypeVar("AccT", bound=_Acc)


class _SummaryCombineFn(beam.CombineFn):
    """Merging and output of accumulators with ``compact`` and ``merge``."""

    def merge_accumulators(self, accumulators: Iterable[AccT]) -> AccT:
        it = iter(accumulators)
        out = next(it).compact()
        for acc in it:
            out.merge(acc.compact())
        return out  # type: ignore[no-any-return]

    def extract_output(self, acc: AccT) -> AccT:
        return acc.compact()  # type: ignore[no-any-return]


class ArmCombineFn(_SummaryCombineFn):
    """ReportInput rows of one arm -> :class:`ArmAcc`."""

    def __init__(self, metric: str) -> None:
        self._accuracy = metric == "accuracy"

    def create_accumulator(self) -> ArmAcc:
        return ArmAcc()

    def add_input(self, acc: ArmAcc, row: ReportInput) -> ArmAcc:
        """Per element, so kept to appends and counts (``compact`` does the rest)."""
        if row.failed:
            acc.failures += 1
            return acc
        acc.results += 1
        label = row.label
        if label is not None:
            acc.new_labels.append(label)
        if row.score is not None:
            acc.new_scores.append(row.score)
        truth = row.truth
        if truth is not None and truth - truth == 0:  # finite (NaN - NaN, inf - inf are NaN)
            if self._accuracy:
                if label is not None:
                    acc.metric_n += 1
                    acc.correct += label == truth
            elif row.value is not None:
                acc.new_errors.append(abs(row.value - truth))
        if row.model_ms:
            acc.new_timing.append((row.model_ms, row.batch_size))
        return acc



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
    # Added since the last compact() (see ArmAcc).
    new_flips: list[tuple[int, int]] = field(default_factory=list)
    new_score_diffs: list[float] = field(default_factory=list)
    new_error_diffs: list[float] = field(default_factory=list)

    def compact(self) -> PairAcc:
        if self.new_flips:
            self.flips.update(self.new_flips)
            self.new_flips = []
        if self.new_score_diffs:
            self.score_diff.merge(moments_of(np.abs(self.new_score_diffs)))
            self.new_score_diffs = []
        if self.new_error_diffs:
            diffs = moments_of(self.new_error_diffs)
            self.metric_n += diffs.n
            self.error_diff.merge(diffs)
            self.new_error_diffs = []
        return self


#: What pairing needs of one arm's result: ``(label, score, value, truth)`` of
#: its :class:`ReportInput`. A plain tuple of numbers: a mirror holds one per
#: result until the element's other arms arrive, and CPython's garbage
#: collector stops tracking such tuples, so tens of thousands held cost no
#: collections (a held ``ReportInput``, a tuple subclass, stays tracked: it
#: doubled the report's per-result cost on a 100,000-row mirror), and the join
#: encodes it as primitives.
PairSide = tuple[int | None, float | None, float | None, float | None]


def pair_side(row: ReportInput) -> PairSide:
    """A result's :data:`PairSide`."""
    return (row.label, row.score, row.value, row.truth)


class PairCombineFn(_SummaryCombineFn):
    """The (control, other) sides (:data:`PairSide`) of one element -> :class:`PairAcc`."""

    def __init__(self, metric: str) -> None:
        self._accuracy = metric == "accuracy"

    def create_accumulator(self) -> PairAcc:
        return PairAcc()

    def add_input(self, acc: PairAcc, pair: tuple[PairSide, PairSide]) -> PairAcc:
        """``pair``: the element's (control, other) sides; per element, so
        kept to appends and counts. The control's truth is the element's."""
        (c_label, c_score, c_value, truth), (o_label, o_score, o_value, _) = pair
        acc.pairs += 1
        labeled = False
        if c_label is not None and o_label is not None:
            labeled = True
            acc.labeled += 1
            if c_label == o_label:
                acc.agree += 1
            else:
                acc.new_flips.append((c_label, o_label))
        if c_score is not None and o_score is not None:
            acc.new_score_diffs.append(o_score - c_score)
        if truth is None or truth - truth != 0:  # no ground truth, or not finite
            return acc
        if self._accuracy:
            if labeled:
                acc.metric_n += 1
                c_right, o_right = c_label == truth, o_label == truth
                if c_right != o_right:
                    if o_right:
                        acc.only_other += 1
                    else:
                        acc.only_control += 1
        elif c_value is not None and o_value is not None:
            acc.new_error_diffs.append(abs(o_value - truth) - abs(c_value - truth))
        return acc



class _Sum:
    """Distinct keys per arm (a hash split): counts, summed."""

    def merge_accumulators(self, counts: Any) -> int:
        return sum(counts)

    def extract_output(self, count: int) -> int:
        return count


class WindowCombineFn(beam.CombineFn):
    """A window's per-bundle accumulators, tagged ``("arm", arm, ArmAcc)``,
    ``("pair", (control, other), PairAcc)`` or ``("keys", arm, distinct keys)``
    -> ``{"arm": {arm: ArmAcc}, "pair": {pair: PairAcc}, "keys": {arm: int}}``,
    one accumulator per arm and pair (merged with :class:`ArmCombineFn` and
    :class:`PairCombineFn`). Beam lifts it: each bundle sends one on."""

    def __init__(self, metric: str) -> None:
        self._fns: dict[str, Any] = {"arm": ArmCombineFn(metric), "pair": PairCombineFn(metric),
                                     "keys": _Sum()}

    def create_accumulator(self) -> dict[str, dict[Any, Any]]:
        return {"arm": {}, "pair": {}, "keys": {}}

    def add_input(self, acc: dict[str, dict[Any, Any]], tagged: tuple[str, Any, Any]
                  ) -> dict[str, dict[Any, Any]]:
        kind, key, value = tagged
        self._merge_into(acc, kind, key, value)
        return acc

    def _merge_into(self, acc: dict[str, dict[Any, Any]], kind: str, key: Any, value: Any) -> None:
        held = acc[kind].get(key)
        acc[kind][key] = value if held is None else self._fns[kind].merge_accumulators(
            [held, value])

    def merge_accumulators(self, accumulators: Any) -> dict[str, dict[Any, Any]]:
        it = iter(accumulators)
        out: dict[str, dict[Any, Any]] = next(it)
        for acc in it:
            for kind, values in acc.items():
                for key, value in values.items():
                    self._merge_into(out, kind, key, value)
        return out

    def extract_output(self, acc: dict[str, dict[Any, Any]]) -> dict[str, dict[Any, Any]]:
        for kind, values in acc.items():
            for value in values.values():
                self._fns[kind].extract_output(value)
        return acc
