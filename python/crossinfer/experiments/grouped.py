"""The report's steps after its GroupByKeys, and what they share with the
steps before them.

* :class:`PairJoined` - the mirror join: a join bucket's held results from
  every bundle (and every pane) -> pairs per (window, arm pair);
* :class:`CountKeys` - a hash split's keys per join bucket -> how many are
  distinct per (window, arm);
* :class:`Finish` - a window's accumulators -> its ArmReport and PairReport
  rows, where the statistics run (:mod:`crossinfer.experiments.stats`).

Each keeps what a window's panes gave it while late panes may follow
(:mod:`crossinfer.experiments.panes`), so a late pane's rows restate the
window's report. :mod:`crossinfer.experiments.transform` builds the steps
and the per-bundle one before them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.metrics.metric import Metrics
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import WindowedValue

from crossinfer.experiments import columns, panes, stats
from crossinfer.experiments.columns import Sides
from crossinfer.experiments.combiners import ArmAcc, PairAcc, merge_window
from crossinfer.experiments.schema import ArmReport, PairReport
from crossinfer.experiments.settings import ReportSettings

PAIRS_TAG = "pairs"
ARMS_TAG = "arms"
#: The key of rows that reached no arm (failures of malformed input, say).
UNROUTED = ""
_GLOBAL = GlobalWindow()
#: The steps' state (:mod:`~crossinfer.experiments.panes`) and the mirror join's
#: timer at its window's expiry, as the parameters Beam reads them from.
_EARLIER = beam.DoFn.StateParam(panes.bag("earlier"))
_EXPIRY_TIMER = userstate.TimerSpec("expiry", TimeDomain.WATERMARK)
_EXPIRY = beam.DoFn.TimerParam(_EXPIRY_TIMER)


class LeftOut:
    """Rows the report leaves out of a figure (or all of it): a Beam counter,
    and a warning logged once per worker (per DoFn instance), so that a wrong
    setting or malformed rows are never silent."""

    def __init__(self, namespace: str, name: str, message: str) -> None:
        self._counter = Metrics.counter(namespace, name)
        self._message = message
        self._warned = False

    def add(self, count: int, *args: Any) -> None:
        """``count`` more rows; the first call also logs ``message % args``."""
        self._counter.inc(count)
        if not self._warned:
            self._warned = True
            logging.getLogger(__name__).warning(self._message, *args)


def windowed(value: Any, window: Any) -> WindowedValue:
    """``value`` in ``window`` (None: the global window), at the window's end."""
    window = _GLOBAL if window is None else window
    return WindowedValue(value, window.max_timestamp(), (window,))


def add_pair(pairs: dict[tuple[Any, int], PairAcc], window: Any, other: int,
             control: Sides, treated: Sides, accuracy: bool) -> None:
    """n elements' control and ``other`` arm sides, aligned by row, into
    ``pairs[(window, other)]``."""
    pair = pairs.get((window, other))
    if pair is None:
        pair = pairs[(window, other)] = PairAcc()
    pair.add_pairs(control, treated, accuracy)


class PairJoined(beam.DoFn):
    """A join bucket's held results from every bundle -> pairs, accumulated per
    (window, arm pair) and bundle. Every copy of an id is in its bucket, so an
    element's arms meet here however the runner bundled them, and in any of
    the window's panes: a pane that may not be the window's last keeps its
    results (:mod:`~crossinfer.experiments.panes`) for the late ones to pair
    with, and each pane adds only the pairs it completes. The control is
    paired with each other arm apart: an element another arm failed on still
    pairs the arms that have it. Ids seen twice in one of the two arms are not
    paired; results left without a pair when the window's last pane is in
    (or, after late panes, when it expires) are counted
    (``unpaired_results``) and logged once per worker."""

    def __init__(self, settings: ReportSettings, late: bool, lateness: Duration) -> None:
        self._s = settings
        self._late = late  # (late panes can come: panes.late_panes)
        self._lateness = lateness

    def setup(self) -> None:
        s = self._s
        self._control, self._others = s.control_index, s.other_indices
        self._accuracy = s.metric == "accuracy"
        self._left = LeftOut(
            f"crossinfer/{s.name}/report", "unpaired_results", "experiment report %r: %d mirror "
            "result(s) found no result of the same id (id_field %r) in the arm they are "
            "compared with: that arm failed on their element, or the id is not unique in an "
            "arm (an id met twice is not paired); they are in no pair row")

    def start_bundle(self) -> None:
        self._pairs: dict[tuple[Any, int], PairAcc] = {}
        self._unpaired = 0

    def process(self, kv: tuple[int, Iterable[list[tuple[int, list[bytes], Sides]]]],
                window: Any = beam.DoFn.WindowParam,
                pane: Any = beam.DoFn.PaneInfoParam) -> None:
        self._join(kv, window, pane, None, None)

    def _join(self, kv: tuple[int, Iterable[list[tuple[int, list[bytes], Sides]]]],
              window: Any, pane: Any, held: Any, expiry: Any) -> None:
        parts = [held_part for part in kv[1] for held_part in part]
        final = pane.is_last or not self._late
        earlier = [p for kept in panes.earlier(held, pane, self._late) for p in kept]
        if not final:
            panes.keep(held, pane, parts, self._late)
            expiry.set(window.max_timestamp() + self._lateness)
        elif earlier:
            held.clear()  # (a last pane after late ones: the expiry finds nothing to count)
        self._pair(earlier, parts, window, final)

    def _pair(self, earlier: list[tuple[int, list[bytes], Sides]],
              parts: list[tuple[int, list[bytes], Sides]], window: Any, final: bool) -> None:
        """Pairs ``earlier`` panes' results and this pane's ``parts``, per arm
        ``(arm, ids, sides)``: adds the pairs with a result of this pane; with
        ``final``, counts the results left without a pair."""
        names = self._s.arm_names
        ids: list[list[bytes]] = [[] for _ in names]
        sides_of_arm: list[list[Sides]] = [[] for _ in names]
        for arm, arm_ids, arm_sides in earlier:
            ids[arm].extend(arm_ids)
            sides_of_arm[arm].append(arm_sides)
        old = [len(arm_ids) for arm_ids in ids]  # an arm's rows from here on are this pane's
        for arm, arm_ids, arm_sides in parts:
            ids[arm].extend(arm_ids)
            sides_of_arm[arm].append(arm_sides)
        sides = [Sides.concat(p) if p else None for p in sides_of_arm]
        control = self._control
        paired_control = np.zeros(len(ids[control]), dtype=bool)
        for other in self._others:
            if not ids[control] or not ids[other]:
                if final:
                    self._unpaired += len(ids[other])
                continue
            (mine, theirs), (_, left) = columns.pair_rows([ids[control], ids[other]])
            if final:
                self._unpaired += len(left)
            paired_control[mine] = True
            new = (mine >= old[control]) | (theirs >= old[other])
            if new.any():
                add_pair(self._pairs, window, other,
                         sides[control].take(mine[new]),  # type: ignore[union-attr]
                         sides[other].take(theirs[new]), self._accuracy)  # type: ignore[union-attr]
        if final:
            self._unpaired += int(np.count_nonzero(~paired_control))

    def finish_bundle(self) -> Iterator[WindowedValue]:
        names, control = self._s.arm_names, self._s.control
        for (window, other), acc in self._pairs.items():
            yield windowed((self._s.name, ("pair", (control, names[other]), acc)), window)
        self._pairs = {}
        if self._unpaired:
            self._left.add(self._unpaired, self._s.name, self._unpaired, self._s.id_field)
            self._unpaired = 0


class StatefulPairJoined(PairJoined):
    """:class:`PairJoined` where late panes can come: the window's unpaired
    results in state, and a timer at its expiry that counts those left."""

    def process(self, kv: tuple[int, Iterable[list[tuple[int, list[bytes], Sides]]]],
                window: Any = beam.DoFn.WindowParam, pane: Any = beam.DoFn.PaneInfoParam,
                held: Any = _EARLIER, expiry: Any = _EXPIRY) -> None:
        self._join(kv, window, pane, held, expiry)

    @userstate.on_timer(_EXPIRY_TIMER)
    def expire(self, window: Any = beam.DoFn.WindowParam,
               held: Any = _EARLIER) -> None:
        """The window expired: what its panes left unpaired is counted."""
        self._pair([p for kept in panes.kept(held) for p in kept], [], window, final=True)
        held.clear()


class CountKeys(beam.DoFn):
    """A join bucket's keys per arm from every bundle -> how many are distinct,
    per (window, arm), summed per bundle. Every copy of a key is in its
    bucket, so a key counts once per arm and window however the runner
    bundled its rows - and once however many of the window's panes it comes
    in: a pane that may not be the last keeps the keys it counted
    (:mod:`~crossinfer.experiments.panes`), and a later pane counts only keys
    new to the window. The buckets' counts add up in
    :func:`~crossinfer.experiments.combiners.merge_window`."""

    def __init__(self, settings: ReportSettings, late: bool) -> None:
        self._s = settings
        self._late = late  # (late panes can come: panes.late_panes)

    def start_bundle(self) -> None:
        self._counts: dict[tuple[Any, str], int] = {}

    def process(self, kv: tuple[int, Iterable[list[tuple[str, list[bytes]]]]],
                window: Any = beam.DoFn.WindowParam,
                pane: Any = beam.DoFn.PaneInfoParam) -> None:
        self._count(kv, window, pane, None)

    def _count(self, kv: tuple[int, Iterable[list[tuple[str, list[bytes]]]]], window: Any,
               pane: Any, held: Any) -> None:
        distinct: dict[str, set[bytes]] = {}
        for part in kv[1]:
            for arm, keys in part:
                distinct.setdefault(arm, set()).update(keys)
        for counted in panes.earlier(held, pane, self._late):
            for arm, keys in counted.items():
                if arm in distinct:
                    distinct[arm] -= keys
        panes.keep(held, pane, distinct, self._late)
        for arm, found in distinct.items():
            self._counts[(window, arm)] = self._counts.get((window, arm), 0) + len(found)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for (window, arm), count in self._counts.items():
            yield windowed((self._s.name, ("keys", arm, count)), window)
        self._counts = {}


class StatefulCountKeys(CountKeys):
    """:class:`CountKeys` where late panes can come: the keys each pane
    counted, in state."""

    def process(self, kv: tuple[int, Iterable[list[tuple[str, list[bytes]]]]],
                window: Any = beam.DoFn.WindowParam, pane: Any = beam.DoFn.PaneInfoParam,
                held: Any = _EARLIER) -> None:
        self._count(kv, window, pane, held)


def _window_ms(window: Any) -> tuple[int | None, int | None]:
    if isinstance(window, GlobalWindow):
        return None, None
    return window.start.micros // 1000, window.end.micros // 1000


class Finish(beam.DoFn):
    """One window's accumulators -> its ArmReport rows and PairReport rows, per
    pane: a late pane's rows restate the window's report over the
    accumulators of every pane so far (:mod:`~crossinfer.experiments.panes`),
    with the pane's index and timing."""

    def __init__(self, settings: ReportSettings, late: bool) -> None:
        self._s = settings
        self._late = late  # (late panes can come: panes.late_panes)

    def process(self, kv: Any, window: Any = beam.DoFn.WindowParam,
                pane: Any = beam.DoFn.PaneInfoParam) -> Iterator[Any]:
        return self._rows(kv, window, pane, None)

    def _rows(self, kv: Any, window: Any, pane: Any, held: Any) -> Iterator[Any]:
        s = self._s
        values = list(kv[1])
        earlier = [v for kept in panes.earlier(held, pane, self._late) for v in kept]
        panes.keep(held, pane, values, self._late)  # (pickled now: merge_window merges in place)
        merged = merge_window(earlier + values)
        at = _Pane(pane.index, panes.timing(pane))
        arms: dict[str, ArmAcc] = merged["arm"]
        pairs: dict[tuple[str, str], PairAcc] = merged["pair"]
        start, end = _window_ms(window)
        unrouted = arms.pop(UNROUTED, ArmAcc()).failures
        accs = {name: arms.get(name, ArmAcc()) for name in s.arm_names}
        routed = {name: acc.results + acc.failures for name, acc in accs.items()}
        total = sum(routed.values())
        expected = s.expected_shares
        # A hash split assigns keys, not elements: its SRM counts distinct keys
        # per arm when the rows carry them (rows written without keys: routed rows).
        keys = merged.get("keys") or {}
        units = {a: keys.get(a, 0) for a in s.arm_names} if keys else routed
        srm = None if expected is None else stats.srm_p_value(
            [units[a] for a in s.arm_names], [expected[a] for a in s.arm_names])
        for name, acc in accs.items():
            yield _arm_row(s, name, acc, start, end, routed[name], total, expected, srm, unrouted,
                           at)
        for other in s.others:
            yield pvalue.TaggedOutput(PAIRS_TAG, _pair_row(
                s, other, accs[s.control], accs[other], pairs.get((s.control, other)),
                start, end, at))


class StatefulFinish(Finish):
    """:class:`Finish` where late panes can come: each pane's accumulators, in
    state."""

    def process(self, kv: Any, window: Any = beam.DoFn.WindowParam,
                pane: Any = beam.DoFn.PaneInfoParam,
                held: Any = _EARLIER) -> Iterator[Any]:
        return self._rows(kv, window, pane, held)


def steps(late: bool) -> tuple[type[PairJoined], type[CountKeys], type[Finish]]:
    """The report's steps after its GroupByKeys: with Beam state where late
    panes can come (``late``: :func:`~crossinfer.experiments.panes.late_panes`),
    else without - a stateful DoFn costs a runner more (Beam inspects its state
    and timers at construction and each bundle; a runner may key its input),
    and batch or streaming without lateness would keep nothing in it."""
    if late:
        return StatefulPairJoined, StatefulCountKeys, StatefulFinish
    return PairJoined, CountKeys, Finish


@dataclass(frozen=True)
class _Pane:
    """The pane report rows are for (their ``pane_index``, ``pane_timing``)."""

    index: int
    timing: str


def _arm_row(s: ReportSettings, name: str, acc: ArmAcc, start: int | None, end: int | None,
             routed: int, total: int, expected: dict[str, float] | None,
             srm: float | None, unrouted: int, pane: _Pane) -> ArmReport:
    conf = s.confidence
    score_lo, score_hi = stats.mean_interval(acc.score, conf)
    metric = s.metric if s.ground_truth is not None else None
    value = lo = hi = None
    if metric == "accuracy" and acc.metric_n:
        value = acc.correct / acc.metric_n
        lo, hi = stats.proportion_interval(acc.correct, acc.metric_n, conf)
    elif metric == "mean_abs_error" and acc.metric_n:
        value = acc.abs_error.mean
        lo, hi = stats.mean_interval(acc.abs_error, conf)
    labels = sorted(acc.labels)
    stage_names = list(s.stages(name))
    while len(stage_names) < len(acc.stages):
        stage_names.append(f"stage{len(stage_names)}")
    stage_names = stage_names[:len(acc.stages)]
    lat = acc.latency
    return ArmReport(
        experiment=s.name, window_start_ms=start, window_end_ms=end, arm=name,
        count=acc.results, failures=acc.failures,
        failure_rate=acc.failures / routed if routed else None,
        routed=routed, share=routed / total if total else None,
        expected_share=None if expected is None else expected[name],
        srm_p_value=srm, unrouted_failures=unrouted,
        label_values=labels, label_counts=[acc.labels[v] for v in labels],
        score_count=acc.score.n, score_mean=acc.score.mean if acc.score.n else None,
        score_ci_low=score_lo, score_ci_high=score_hi,
        metric=metric, metric_count=acc.metric_n if metric else 0, metric_value=value,
        metric_ci_low=lo, metric_ci_high=hi,
        latency_count=int(lat.count) if lat is not None else 0,
        latency_p50_ms=_quantile(lat, 0.50), latency_p95_ms=_quantile(lat, 0.95),
        latency_p99_ms=_quantile(lat, 0.99),
        stages=stage_names,
        stage_p50_ms=[_quantile(st.ms, 0.50) or 0.0 for st in acc.stages],
        stage_p95_ms=[_quantile(st.ms, 0.95) or 0.0 for st in acc.stages],
        stage_p99_ms=[_quantile(st.ms, 0.99) or 0.0 for st in acc.stages],
        stage_batch_size_mean=[st.batch_sum / st.batch_n if st.batch_n else 0.0
                               for st in acc.stages],
        stage_batch_size_max=[st.batch_max for st in acc.stages],
        confidence=float(conf), pane_index=pane.index, pane_timing=pane.timing)


def _quantile(sketch: Any, q: float) -> float | None:
    if sketch is None or sketch.count == 0:
        return None
    value = sketch.get_quantile_value(q)
    return None if value is None else float(value)


def _pair_row(s: ReportSettings, other: str, control: ArmAcc, treated: ArmAcc,
              joined: PairAcc | None, start: int | None, end: int | None, pane: _Pane
              ) -> PairReport:
    conf = s.confidence
    metric = s.metric if s.ground_truth is not None else None
    comparison = None
    if s.mirror:
        joined = joined or PairAcc()
        if metric == "accuracy":
            comparison = stats.paired_proportions(joined.only_other, joined.only_control,
                                                  joined.metric_n, conf)
        elif metric == "mean_abs_error":
            comparison = stats.paired_mean(joined.error_diff, conf)
    elif metric == "accuracy":
        comparison = stats.two_proportions(treated.correct, treated.metric_n, control.correct,
                                           control.metric_n, conf)
    elif metric == "mean_abs_error":
        comparison = stats.welch(treated.abs_error, control.abs_error, conf)
    flips = sorted(joined.flips.items()) if joined is not None else []
    return PairReport(
        experiment=s.name, window_start_ms=start, window_end_ms=end, control=s.control,
        treatment=other, paired=s.mirror, metric=metric,
        difference=comparison.difference if comparison else None,
        difference_ci_low=comparison.low if comparison else None,
        difference_ci_high=comparison.high if comparison else None,
        p_value=comparison.p_value if comparison else None,
        test=comparison.test if comparison else None,
        pairs=joined.pairs if joined is not None else 0,
        agreement=joined.agree / joined.labeled if joined is not None and joined.labeled
        else None,
        flip_from=[a for (a, _), _ in flips], flip_to=[b for (_, b), _ in flips],
        flip_count=[n for _, n in flips],
        mean_abs_score_diff=joined.score_diff.mean if joined is not None and joined.score_diff.n
        else None,
        confidence=float(conf), pane_index=pane.index, pane_timing=pane.timing)
