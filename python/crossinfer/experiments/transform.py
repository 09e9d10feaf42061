"""ExperimentReport: an A/B or mirror result in, report rows per window out.

::

    out = rows | ci.ABTest(experiment)
    report = out | ExperimentReport(experiment, ground_truth="label_true")
    report.arms   # PCollection[ArmReport]: one per (window, arm)
    report.pairs  # PCollection[PairReport]: one per (window, control, other arm)

The steps: result and failure rows are projected to :class:`ReportInput` rows
(:class:`ToReportInput`), combined per (window, arm) (:class:`ArmCombineFn`)
and, for a mirror, joined per (window, element id) and combined per arm pair
(:class:`PairCombineFn`); each window's few accumulators are then gathered
under one key and turned into rows (:class:`_Finish`), where the statistics
run (:mod:`crossinfer.experiments.stats`). The service's report URN runs the
same :class:`ReportFromInputs` on rows a client already projected.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.window import GlobalWindow

from crossinfer.experiments import stats
from crossinfer.experiments.combiners import ArmAcc, ArmCombineFn, PairAcc, PairCombineFn
from crossinfer.experiments.schema import ArmReport, PairReport, ReportInput
from crossinfer.experiments.settings import ReportSettings
from crossinfer.rows import fields_view

PAIRS_TAG = "pairs"
ARMS_TAG = "arms"
#: The key of rows that reached no arm (failures of malformed input, say).
_UNROUTED = ""


class ReportOutputs(NamedTuple):
    arms: beam.PCollection  # of ArmReport
    pairs: beam.PCollection  # of PairReport


class ToReportInput(beam.DoFn):
    """A result row (or, with ``failed``, a failure row) -> :class:`ReportInput`.

    Reads ``path``/``node``, ``label``, ``score``, ``inference``, the
    configured ground-truth and id fields (a failure's from its ``element``)
    and the optional timing fields ``model_ms`` and ``batch_size``."""

    def __init__(self, ground_truth: str | None, id_field: str | None, failed: bool) -> None:
        self._truth = ground_truth
        self._id = id_field
        self._failed = failed

    def process(self, row: Any) -> Iterator[ReportInput]:
        fields = fields_view(row)
        if self._failed:
            try:
                source = fields_view(fields.get("element"))
            except TypeError:
                source = {}
            yield ReportInput(str(fields.get("node")), True, None, None, None,
                              _number(source.get(self._truth)) if self._truth else None,
                              _text(source.get(self._id)) if self._id else None, None, None)
            return
        inference = fields.get("inference")
        value = _number(inference[0]) if inference is not None and len(inference) == 1 else None
        label = fields.get("label")
        yield ReportInput(
            str(fields.get("path")), False, None if label is None else int(label),
            _number(fields.get("score")), value,
            _number(fields.get(self._truth)) if self._truth else None,
            _text(fields.get(self._id)) if self._id else None,
            _floats(fields.get("model_ms")), _ints(fields.get("batch_size")))


def _number(x: Any) -> float | None:
    if x is None or isinstance(x, (str, bytes)):
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _text(x: Any) -> str | None:
    return None if x is None else str(x)


def _floats(xs: Any) -> list[float] | None:
    if xs is None:
        return None
    try:
        return [float(x) for x in xs]
    except (TypeError, ValueError):
        return None


def _ints(xs: Any) -> list[int] | None:
    if xs is None:
        return None
    try:
        return [int(x) for x in xs]
    except (TypeError, ValueError):
        return None


class ExperimentReport(beam.PTransform):
    """The experiment report over an A/B or mirror result.

    Args:
      experiment: the A/B spec the results came from (an ``ABTestNode``, an
        ``InferenceSpec``, JSON text or a dict), or ready
        :class:`ReportSettings`.
      **settings: :class:`ReportSettings` fields (``ground_truth``,
        ``id_field``, ``metric``, ``control``, ``confidence``).

    Input: an :class:`~crossinfer.patterns.InferenceOutputs` (``results``,
    ``failures``), in any windowing. Output: :class:`ReportOutputs` -
    ``arms`` (:class:`ArmReport`) and ``pairs`` (:class:`PairReport`), one set
    per window (the global window in batch), emitted when the window closes.

    Raises:
      ReportSettingsError: at construction, naming the setting.
    """

    def __init__(self, experiment: Any, label: str | None = None, **settings: Any) -> None:
        super().__init__(label)
        self.settings = experiment if isinstance(experiment, ReportSettings) else \
            ReportSettings.from_spec(experiment, **settings)

    def expand(self, outputs: Any) -> ReportOutputs:
        results, failures = outputs
        s = self.settings
        id_field = s.id_field if s.mirror else None
        inputs = (
            results | "ResultsIn" >> beam.ParDo(
                ToReportInput(s.ground_truth, id_field, False)).with_output_types(ReportInput),
            failures | "FailuresIn" >> beam.ParDo(
                ToReportInput(s.ground_truth, id_field, True)).with_output_types(ReportInput),
        ) | "Inputs" >> beam.Flatten()
        inputs.element_type = ReportInput
        return inputs | "Report" >> ReportFromInputs(s)


class ReportFromInputs(beam.PTransform):
    """The report over :class:`ReportInput` rows (what the service's URN expands to)."""

    def __init__(self, settings: ReportSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, inputs: beam.PCollection) -> ReportOutputs:
        s = self.settings
        arms = (inputs
                | "ByArm" >> beam.Map(_by_arm, s).with_output_types(tuple[str, ReportInput])
                | "PerArm" >> beam.CombinePerKey(ArmCombineFn(s.metric))
                | "TagArms" >> beam.Map(lambda kv: ("arm", kv[0], kv[1])))
        parts = [arms]
        if s.mirror:
            parts.append(
                inputs
                | "Joinable" >> beam.FlatMap(_joinable, s).with_output_types(
                    tuple[str, tuple[str, ReportInput]])
                | "ById" >> beam.GroupByKey()
                | "Pairs" >> beam.FlatMap(_pairs, s)
                | "PerPair" >> beam.CombinePerKey(PairCombineFn(s.metric))
                | "TagPairs" >> beam.Map(lambda kv: ("pair", kv[0], kv[1])))
        rows = (tuple(parts) | "Accumulators" >> beam.Flatten()
                | "OneKey" >> beam.Map(lambda x: (s.name, x))
                | "PerWindow" >> beam.GroupByKey()
                | "Finish" >> beam.ParDo(_Finish(s)).with_outputs(PAIRS_TAG, main=ARMS_TAG))
        arm_rows, pair_rows = rows[ARMS_TAG], rows[PAIRS_TAG]
        arm_rows.element_type = ArmReport
        pair_rows.element_type = PairReport
        return ReportOutputs(arm_rows, pair_rows)


def _by_arm(row: ReportInput, s: ReportSettings) -> tuple[str, ReportInput]:
    return (s.arm_of(row.path) or _UNROUTED, row)


def _joinable(row: ReportInput, s: ReportSettings) -> Iterator[tuple[str, tuple[str, ReportInput]]]:
    if row.failed or row.id is None:
        return
    arm = s.arm_of(row.path)
    if arm is not None:
        yield row.id, (arm, row)


def _pairs(kv: tuple[str, Iterable[tuple[str, ReportInput]]],
           s: ReportSettings) -> Iterator[tuple[tuple[str, str], tuple[ReportInput, ReportInput]]]:
    """One element's rows -> (control, other) pairs; an id seen twice in one arm
    is not unique and is not paired."""
    by_arm: dict[str, ReportInput | None] = {}
    for arm, row in kv[1]:
        by_arm[arm] = None if arm in by_arm else row
    control = by_arm.get(s.control)
    if control is None:
        return
    for other in s.others:
        row = by_arm.get(other)
        if row is not None:
            yield (s.control, other), (control, row)


def _window_ms(window: Any) -> tuple[int | None, int | None]:
    if isinstance(window, GlobalWindow):
        return None, None
    return window.start.micros // 1000, window.end.micros // 1000


class _Finish(beam.DoFn):
    """One window's accumulators -> its ArmReport rows and PairReport rows."""

    def __init__(self, settings: ReportSettings) -> None:
        self._s = settings

    def process(self, kv: Any, window: Any = beam.DoFn.WindowParam) -> Iterator[Any]:
        s = self._s
        arms: dict[str, ArmAcc] = {}
        pairs: dict[tuple[str, str], PairAcc] = {}
        for kind, key, acc in kv[1]:
            if kind == "arm":
                arms[key] = acc
            else:
                pairs[tuple(key)] = acc
        start, end = _window_ms(window)
        unrouted = arms.pop(_UNROUTED, ArmAcc()).failures
        accs = {name: arms.get(name, ArmAcc()) for name in s.arm_names}
        routed = {name: acc.results + acc.failures for name, acc in accs.items()}
        total = sum(routed.values())
        expected = s.expected_shares
        srm = None if expected is None else stats.srm_p_value(
            [routed[a] for a in s.arm_names], [expected[a] for a in s.arm_names])
        for name, acc in accs.items():
            yield _arm_row(s, name, acc, start, end, routed[name], total, expected, srm, unrouted)
        for other in s.others:
            yield pvalue.TaggedOutput(PAIRS_TAG, _pair_row(
                s, other, accs[s.control], accs[other], pairs.get((s.control, other)),
                start, end))


def _arm_row(s: ReportSettings, name: str, acc: ArmAcc, start: int | None, end: int | None,
             routed: int, total: int, expected: dict[str, float] | None,
             srm: float | None, unrouted: int) -> ArmReport:
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
        confidence=float(conf))


def _quantile(sketch: Any, q: float) -> float | None:
    if sketch is None or sketch.count == 0:
        return None
    value = sketch.get_quantile_value(q)
    return None if value is None else float(value)


def _pair_row(s: ReportSettings, other: str, control: ArmAcc, treated: ArmAcc,
              joined: PairAcc | None, start: int | None, end: int | None) -> PairReport:
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
        confidence=float(conf))
