"""ExperimentReport: an A/B or mirror result in, report rows per window out.

::

    out = rows | ci.ABTest(experiment)
    report = out | ExperimentReport(experiment, ground_truth="label_true")
    report.arms   # PCollection[ArmReport]: one per (window, arm)
    report.pairs  # PCollection[PairReport]: one per (window, control, other arm)

The steps: each result and failure row's :class:`ReportInput` fields are read
into a chunk, and every few thousand rows the chunk is added to its (window,
arm) accumulators as columns, in the same step (:class:`_Accumulate`, with
:class:`~crossinfer.experiments.combiners.ArmAcc`; one accumulator per bundle
leaves). Results as a crossinfer transform wrote them are read from the blocks
they were written from instead (:class:`_AccumulateBlocks`): a block's outputs
are columns already, and only the ground truth, id and key are read per row.
For a mirror, results are also paired per (window, element id) and
accumulated per arm pair (:class:`~crossinfer.experiments.combiners.PairAcc`);
for a hash split, the rows' keys are made distinct per (window, arm) for the
sample-ratio-mismatch test. A GroupByKey brings a window's accumulators (a few
per bundle) together, and :class:`~.grouped.Finish` merges them
(:func:`~crossinfer.experiments.combiners.merge_window`) and turns them into
rows, where the statistics run (:mod:`crossinfer.experiments.stats`). The
steps after the GroupByKeys (:mod:`crossinfer.experiments.grouped`) keep what
a window's panes gave them while late panes may follow
(:mod:`crossinfer.experiments.panes`), so a late pane's rows restate the
window's report.
The service's report URN runs the same :class:`ReportFromInputs` on rows a
client already projected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import compress
from operator import itemgetter
from typing import Any, NamedTuple, cast

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PCollection, Row
from apache_beam.transforms.trigger import AccumulationMode, DefaultTrigger
from apache_beam.transforms.window import GlobalWindow, GlobalWindows, SlidingWindows
from apache_beam.utils.timestamp import Duration

from crossinfer.engine.block import Block
from crossinfer.experiments import columns, panes
from crossinfer.experiments.columns import (
    Columns,
    Id,
    Sides,
    columns_of,
    columns_of_block,
    label_of,
    number,
    same_ids,
    sides_of,
    text,
    texts_of,
)
from crossinfer.experiments.combiners import (
    MAX_MODEL_MS,
    ArmAcc,
    PairAcc,
)
from crossinfer.experiments.grouped import (
    ARMS_TAG,
    PAIRS_TAG,
    UNROUTED,
    LeftOut,
    add_pair,
    steps,
    windowed,
)
from crossinfer.experiments.schema import ArmReport, PairReport, ReportInput
from crossinfer.experiments.settings import ReportSettings, ReportSettingsError
from crossinfer.patterns.edges import finished_blocks
from crossinfer.rows import fields_view
from crossinfer.wire import OUTPUT_FIELDS, TIMING_FIELDS


class ReportOutputs(NamedTuple):
    arms: PCollection[Any]  # of ArmReport
    pairs: PCollection[Any]  # of PairReport


def read_result(row: Any, ground_truth: str | None, id_field: str | None,
                key_field: str | None = None) -> ReportInput:
    """A result row -> :class:`ReportInput`: its ``path``, ``label``, ``score``,
    ``inference`` (the value of a one-value output), the ground-truth, id and
    key fields, and the optional timing fields ``model_ms`` and ``batch_size``."""
    get = fields_view(row).get
    path = get("path")
    inference = get("inference")
    label = get("label")
    score = get("score")
    model_ms = get("model_ms")
    batch_size = get("batch_size")
    truth = get(ground_truth) if ground_truth else None
    id_ = get(id_field) if id_field else None
    key = get(key_field) if key_field else None
    return ReportInput(
        str(text(path)), False, label_of(label),
        number(score),
        number(inference[0]) if inference is not None and len(inference) == 1 else None,
        number(truth), text(id_),
        None if model_ms is None else _floats(model_ms),
        None if batch_size is None else _ints(batch_size),
        text(key))


_Row = Row


def read_failure(row: Any, ground_truth: str | None, id_field: str | None,
                 key_field: str | None = None) -> ReportInput:
    """A failure row -> :class:`ReportInput`: its ``node`` as the path, the
    ground-truth, id and key fields of its ``element``."""
    fields = fields_view(row)
    try:
        source = fields_view(fields.get("element"))
    except TypeError:
        source = {}
    return ReportInput(str(text(fields.get("node"))), True, None, None, None,
                       number(source.get(ground_truth)) if ground_truth else None,
                       text(source.get(id_field)) if id_field else None, None, None,
                       text(source.get(key_field)) if key_field else None)


class ToReportInput(beam.DoFn):
    """A result row (or, with ``failed``, a failure row) -> :class:`ReportInput`.

    ``key_field``: the field a hash split is sticky on, projected to ``key``
    (None: ``key`` stays null)."""

    def __init__(self, ground_truth: str | None, id_field: str | None, failed: bool,
                 key_field: str | None = None) -> None:
        self._truth = ground_truth
        self._id = id_field
        self._key = key_field
        self._read = read_failure if failed else read_result

    def process(self, row: Any) -> Iterator[ReportInput]:
        yield self._read(row, self._truth, self._id, self._key)


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


class ExperimentReport(beam.PTransform[Any, ReportOutputs]):
    """The experiment report over an A/B or mirror result.

    Args:
      experiment: the A/B spec the results came from (an ``ABTestNode``, an
        ``InferenceSpec``, JSON text or a dict), or ready
        :class:`ReportSettings`.
      **settings: :class:`ReportSettings` fields (``ground_truth``,
        ``id_field``, ``key_field``, ``metric``, ``control``, ``confidence``).

    Input: an :class:`~crossinfer.patterns.InferenceOutputs` (``results``,
    ``failures``) - or the pair ``(results, failures)`` as a tuple, e.g. the
    results after a step of the user's own - in any windowing. Output: :class:`ReportOutputs` -
    ``arms`` (:class:`ArmReport`) and ``pairs`` (:class:`PairReport`), one set
    per window (the global window in batch), emitted when the window closes,
    and again per late pane within the allowed lateness, restating the
    window's report over every result so far (``pane_index`` 1, 2, ...).

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
        _check_schema(results, s)
        id_field = s.id_field if s.mirror else None
        # The unit of a hash split's assignment is the key: SRM counts distinct keys.
        key_field = s.key_field if s.hashed else None
        # Results as crossinfer wrote them: read from their blocks (columns
        # already), not row by row.
        blocks = finished_blocks(results)
        reading = _Reading.of_blocks(s.ground_truth, id_field, key_field, s.metric) \
            if blocks is not None else None
        if reading is not None:
            results = blocks
        else:
            reading = _Reading.of_results(s.ground_truth, id_field, key_field, s.metric)
        return _report(s, [
            ("Results", results, reading),
            ("Failures", failures, _Reading.of_failures(s.ground_truth, id_field, key_field))])


@dataclass(frozen=True)
class _Reading:
    """How :class:`_Accumulate` reads its input's rows: ``names``, the fields
    it takes from each (in order), each with its ``roles`` (a
    :class:`ReportInput` field, or ``inference``: a result's inference list,
    read as ``value``); with ``failures``, failure rows (read with
    :func:`read_failure`); ``truth``: the ground-truth field whose absence is
    counted (results only). With ``blocks``, the input is finished blocks
    (:class:`_AccumulateBlocks`), ``truth``, ``id_field`` and ``key_field``
    read from each row's input element, the one-value inference with ``value``."""

    names: tuple[str, ...]
    roles: tuple[str, ...]
    failures: bool = False
    truth: str | None = None
    id_field: str | None = None
    key_field: str | None = None
    blocks: bool = False
    value: bool = False

    @staticmethod
    def of_results(ground_truth: str | None, id_field: str | None, key_field: str | None,
                   metric: str) -> _Reading:
        """A result's fields; its inference list only where the metric reads
        the value (a row's tuple of numbers and text, without a list, is one
        the garbage collector stops tracking: a chunk of them costs no
        collections)."""
        inference = columns.INFERENCE if metric == "mean_abs_error" else None
        fields = [("path", "path"), ("label", "label"), ("score", "score"),
                  (inference, columns.INFERENCE), (ground_truth, "truth"),
                  (id_field, "id"), (key_field, "key"), ("model_ms", "model_ms"),
                  ("batch_size", "batch_size")]
        names, roles = zip(*((name, role) for name, role in fields if name), strict=True)
        return _Reading(names, roles, truth=ground_truth)

    @staticmethod
    def of_blocks(ground_truth: str | None, id_field: str | None, key_field: str | None,
                  metric: str) -> _Reading | None:
        """Finished blocks' rows; None where a field the report reads is one
        the result rows' output fields would shadow (those are read from rows)."""
        shadowed = set(OUTPUT_FIELDS) | set(TIMING_FIELDS)
        if any(name in shadowed for name in (ground_truth, id_field, key_field)):
            return None
        return _Reading((), (), truth=ground_truth, id_field=id_field, key_field=key_field,
                        blocks=True, value=metric == "mean_abs_error")

    @staticmethod
    def of_failures(ground_truth: str | None, id_field: str | None,
                 key_field: str | None) -> _Reading:
        return _Reading(columns.FIELDS, columns.FIELDS, failures=True, truth=ground_truth,
                        id_field=id_field, key_field=key_field)

    @staticmethod
    def of_inputs() -> _Reading:
        return _Reading(columns.FIELDS, columns.FIELDS)


def _check_schema(results: PCollection[Any], s: ReportSettings) -> None:
    """Where the results' schema is known at construction (a schema'd
    PCollection), a ground-truth field it lacks is refused; otherwise
    :class:`_Accumulate` logs it and counts ``missing_ground_truth``.

    Raises:
      ReportSettingsError: naming the field and the results' fields.
    """
    from apache_beam.typehints.row_type import RowTypeConstraint

    t = results.element_type
    if s.ground_truth is None or not isinstance(t, RowTypeConstraint):
        return
    fields = [name for name, _ in t._fields]
    if s.ground_truth not in fields:
        raise ReportSettingsError(f"ground_truth: the results have no field "
                                  f"{s.ground_truth!r} (fields: {', '.join(fields)})")


class ReportFromInputs(beam.PTransform[PCollection[ReportInput], ReportOutputs]):
    """The report over :class:`ReportInput` rows (what the service's URN expands to).

    For a ``hash`` split, the sample-ratio-mismatch test counts the distinct
    ``key`` values per arm when the rows carry them, rows otherwise."""

    def __init__(self, settings: ReportSettings) -> None:
        super().__init__()
        self.settings = settings

    def expand(self, inputs: PCollection[Any]) -> ReportOutputs:
        return _report(self.settings, [("Inputs", inputs, _Reading.of_inputs())])


_JOIN_TAG = "join"
#: The keys of the report's GroupByKeys, typed: the steps after them keep state
#: across panes, per key (Beam's state needs a deterministic key coder): a join
#: bucket, the experiment's name.
_BUCKET = beam.typehints.KV[int, Any]
_WINDOW = beam.typehints.KV[str, Any]
_KEYS_TAG = "keys"


def _report(s: ReportSettings, parts: list[tuple[str, PCollection[Any], _Reading]]
            ) -> ReportOutputs:
    """The report's steps: per element only :class:`_Accumulate` (and, for a
    mirror, the join on the id; for a hash split, the distinct keys per arm);
    everything after works on a few accumulators per window."""
    pipeline = parts[0][1].pipeline
    accs, joins, keys = [], [], []
    lateness, bounded = Duration(), True
    for name, pcoll, read in parts:
        pcoll = _closing_windows(pcoll, name)
        lateness = max(lateness, Duration.of(pcoll.windowing.allowed_lateness))
        bounded = bounded and pcoll.is_bounded
        accumulate = _AccumulateBlocks if read.blocks else \
            _Accumulate if pcoll.windowing.is_default() else _AccumulateWindowed
        out = pcoll | f"Accumulate{name}" >> beam.ParDo(
            accumulate(s, read, s.mirror)).with_outputs(_JOIN_TAG, _KEYS_TAG, main="accs")
        accs.append(out.accs)
        joins.append(out[_JOIN_TAG])
        keys.append(out[_KEYS_TAG])
    late = panes.late_panes(bounded, lateness)
    pair_joined, count_keys, finish = steps(late)  # (with state only where late panes can come)
    if s.mirror:
        accs.append(joins | "JoinRows" >> beam.Flatten(pipeline=pipeline).with_output_types(_BUCKET)
                    | "ByIdBucket" >> beam.GroupByKey()
                    | "Pairs" >> beam.ParDo(pair_joined(s, late, lateness)))
    if s.hashed:
        accs.append(keys | "Keys" >> beam.Flatten(pipeline=pipeline).with_output_types(_BUCKET)
                    | "KeysByBucket" >> beam.GroupByKey()
                    | "CountKeys" >> beam.ParDo(count_keys(s, late)))
    rows = (accs | "Accumulators" >> beam.Flatten(pipeline=pipeline).with_output_types(_WINDOW)
            | "PerWindow" >> beam.GroupByKey()
            | "Finish" >> beam.ParDo(finish(s, late)).with_outputs(PAIRS_TAG, main=ARMS_TAG))
    arm_rows, pair_rows = rows[ARMS_TAG], rows[PAIRS_TAG]
    arm_rows.element_type = ArmReport
    pair_rows.element_type = PairReport
    return ReportOutputs(arm_rows, pair_rows)


def _closing_windows(pcoll: PCollection[Any], name: str) -> PCollection[Any]:
    """``pcoll`` in the same windows, under the default trigger, discarding,
    when its own windowing fires otherwise or accumulates: the report's
    GroupByKeys then give one set of rows per window when it closes, and one
    per late pane within the allowed lateness holding only the late results -
    not partial rows per early pane, nor panes that a later GroupByKey adds up
    again.

    Raises:
      ReportSettingsError: ``pcoll`` is unbounded in the global window, which
        never closes; or it is in session windows (a merging WindowFn) under
        another trigger or accumulating (sessions cannot be assigned again:
        an A/B test's results carry their window's end as their timestamp).
    """
    windowing = pcoll.windowing
    windowfn = windowing.windowfn
    what = name.lower()
    if not pcoll.is_bounded and isinstance(windowfn, GlobalWindows):
        raise ReportSettingsError(
            f"windowing: the {what} are unbounded, in the global window: the report gives "
            "its rows when a window closes, and that one never does; window the input "
            "(FixedWindows, SlidingWindows, Sessions) before the A/B test or the report")
    if windowing.triggerfn == DefaultTrigger() and \
            windowing.accumulation_mode == AccumulationMode.DISCARDING:
        return pcoll
    if windowfn.is_merging():
        raise ReportSettingsError(
            f"windowing: the {what} are in merging windows ({type(windowfn).__name__}) under a "
            "trigger other than Beam's default, or accumulating panes: the report gives one "
            "set of rows per window when it closes, and cannot assign sessions again; apply "
            "it to results windowed under the default trigger (discarding)")
    retrigger = beam.WindowInto(windowfn, allowed_lateness=windowing.allowed_lateness)
    if not isinstance(windowfn, SlidingWindows):  # one window per element, found again
        out: PCollection[Any] = pcoll | f"Windows{name}" >> retrigger
        return out
    # Sliding windows put each (element, window) copy in all of its windows
    # again: only the copy in the window it came from is kept.
    out = (pcoll | f"TagWindows{name}" >> beam.Map(_tag_window)
           | f"Windows{name}" >> retrigger
           | f"SameWindows{name}" >> beam.FlatMap(_in_its_window))
    return out


def _tag_window(element: Any, window: Any = beam.DoFn.WindowParam) -> tuple[Any, Any]:
    """An element -> (its window, the element), once per window."""
    return window, element


def _in_its_window(tagged: tuple[Any, Any], window: Any = beam.DoFn.WindowParam
                   ) -> Iterator[Any]:
    """(window, element) -> the element, in that window only."""
    if tagged[0] == window:
        yield tagged[1]


#: Paths whose arm is remembered per worker (paths are few: one per model node).
_MAX_CACHED_PATHS = 4096
#: Rows read per chunk before they are added to the accumulators (columns of
#: this many rows: the per-chunk numpy calls cost < 0.1 us per row; the
#: chunk's tuples are the only objects held per row, for the garbage
#: collector to see).
_CHUNK = 4096
#: Mirror results held per bundle waiting for their other arms, beyond those
#: held at the last pairing (then they go to the join).
_MAX_HELD = 200_000
#: Buckets of the mirror join and of a hash split's distinct keys: their
#: GroupByKeys' keys per window (CRC-32 of the id or key, mod this); each
#: bundle sends its unpaired results (its keys) as columns, one record per
#: bucket it has any of, so these steps cost per bucket and bundle, not per
#: result, and a window's results spread over this many groups (for the
#: runner to share among workers).
_JOIN_BUCKETS = 64


def _bucketed(texts: list[str]) -> Iterator[tuple[int, np.ndarray, list[bytes]]]:
    """Ids or keys per join bucket (:func:`columns.join_buckets`): ``(bucket,
    their rows, their UTF-8)`` - what a bundle sends the join and the distinct
    keys step, for buckets that have any."""
    encoded = columns.utf8(texts)
    for bucket, rows in columns.join_buckets(encoded, _JOIN_BUCKETS):
        yield bucket, rows, [encoded[i] for i in rows.tolist()]


class _Held:
    """One arm's mirror results of one window waiting for their other arms:
    ids, and sides as arrays (nothing the garbage collector walks per row)."""

    def __init__(self) -> None:
        self.ids: list[Id] = []
        self.sides: list[Sides] = []

    def add(self, ids: list[Id], sides: Sides) -> None:
        self.ids.extend(ids)
        self.sides.append(sides)


class _Accumulate(beam.DoFn):
    """Rows -> one accumulator per (window, arm) and bundle, emitted when the
    bundle ends: Beam's combiner lifting by hand, fused with reading the row,
    so the report costs one step per element - and per element only the read
    (one ``itemgetter`` call into a chunk); every :data:`_CHUNK` rows the chunk
    is added to the accumulators as columns (:mod:`crossinfer.experiments.columns`).

    For a mirror each result's side is held per (window, arm) until the
    element's other arms arrive in the same bundle (a mirror's arms usually
    run in one fused stage; on the FnApiRunner they arrive in runs of tens of
    thousands per arm): held results are paired (:func:`columns.pair_rows`)
    when the bundle ends, or once :data:`_MAX_HELD` more are held; those left
    unpaired when the bundle ends, or more than ``_MAX_HELD`` after a pairing,
    leave on ``join`` as columns per join bucket (:meth:`_unhold`) for the
    GroupByKey, so pairing works however the runner splits or orders them
    (:class:`~.grouped.PairJoined`). An id seen twice in an arm of a bundle leaves for
    the join too (which does not pair it).

    For a hash split each row's ``(arm, key)`` is kept once per (window, bundle)
    and leaves on ``keys`` when the bundle ends (or past ``_MAX_HELD``), to be
    made distinct across bundles."""

    def __init__(self, settings: ReportSettings, reading: _Reading, join: bool) -> None:
        self._s = settings
        self._reading = reading
        self._join = join

    def setup(self) -> None:
        s, reading = self._s, self._reading
        self._arm_names = (*s.arm_names, UNROUTED)
        self._unrouted = len(s.arm_names)
        self._control, self._others = s.control_index, s.other_indices
        self._arm_cache: dict[Any, int] = {}
        self._accuracy = s.metric == "accuracy"
        self._names, self._roles = reading.names, reading.roles
        self._chunk_values = _CHUNK * len(self._names)
        # Which of the fields rows have is learnt from the first row read (a
        # result without timing has no model_ms): a row with the same ones is
        # read with one itemgetter (its missing fields: None); any other field
        # by field (see _learn_fields).
        self._learnt = reading.failures
        self._fast = False  # (then _get: an itemgetter of the first row's fields)
        self._absent: tuple[str, ...] = ()
        self._nones: tuple[None, ...] = ()
        self._truth = reading.truth if not reading.failures else None
        self._hashed = s.hashed
        namespace = f"crossinfer/{s.name}/report"
        self._paired_counter = Metrics.counter(namespace, "paired_in_bundle")
        self._joined_counter = Metrics.counter(namespace, "sent_to_join")
        self._missing_truth = LeftOut(
            namespace, "missing_ground_truth", "experiment report %r: ground_truth: the "
            "results have no field %r (fields: %s); they count as without ground truth")
        self._bad_timing = LeftOut(
            namespace, "bad_timing", "experiment report %r: %d row(s) with malformed timing "
            "left out of the latency (model_ms must hold one number from 0 to %g ms per model "
            "stage of the row's arm, batch_size as many integers from 1)")
        self._missing_key = LeftOut(
            namespace, "missing_key", "experiment report %r: %d routed row(s) without a key "
            "(key_field %r): a hash split's SRM counts the distinct keys of the rows that carry "
            "one, and elements only when none does; pass the report the key_field given to "
            "ABTest")
        self._missing_id_rows = LeftOut(
            namespace, "missing_id", "experiment report %r: id_field: %d mirror result(s) "
            "without a field %r (or a null one) are in no pair row; pass the report the field "
            "that identifies an element in every arm")
        self._unrouted_rows = LeftOut(
            namespace, "unrouted_results", "experiment report %r: %d result(s) in no arm of the "
            "experiment (path %r; arms: %s) left out of the report: is it given the spec its "
            "results came from?")
        self._stage_counts = {arm: len(s.stages(arm)) for arm in s.arm_names}

    def start_bundle(self) -> None:
        # The global window's rows read since the last chunk, their fields one
        # after another (a row's tuple is freed as soon as it is read: nothing
        # is held per row but its values, which the garbage collector does not
        # count, so a chunk costs no collections); other windows' in _bufs.
        self._buf: list[Any] = []
        self._bufs: dict[Any, list[Any]] = {}
        self._accs: dict[tuple[Any, int], ArmAcc] = {}
        self._pairs: dict[tuple[Any, int], PairAcc] = {}
        self._held: dict[Any, list[_Held]] = {}  # per window, per arm
        self._n_held = 0
        self._pair_at = _MAX_HELD  # pair the held results once this many are held
        self._keys: dict[tuple[Any, str], set[str]] = {}  # per (window, arm): its keys
        self._paired = self._joined = self._keyless = self._unrouted_results = 0
        self._missing_id = 0
        self._unrouted_path: Any = None  # one of them, for the log

    def process(self, element: Any) -> Any:
        # The global window (batch): no WindowParam, which would make Beam call
        # process through its slower per-window invoker (_AccumulateWindowed),
        # and None stands for the window in the keys below (GlobalWindow's hash
        # is Python code; None's is not).
        buf = self._buf
        if type(element) is _Row and self._fast:
            fields = element.__dict__
            try:
                if not fields.keys().isdisjoint(self._absent):
                    raise KeyError  # a field the first row lacked: read field by field
                buf.extend(self._get(fields))
                buf.extend(self._nones)
            except KeyError:  # (or a field the first row had is missing)
                self._read(element, buf)
        else:
            self._read(element, buf)
        if len(buf) < self._chunk_values:
            return ()
        self._buf = []
        return self._add_chunk(buf, None)

    def _read(self, element: Any, buf: list[Any]) -> None:
        """``element``'s fields (None where it has none) onto ``buf``: any row type."""
        r = self._reading
        if r.failures:
            buf.extend(read_failure(element, r.truth, r.id_field, r.key_field))
            return
        try:
            fields = fields_view(element)
        except TypeError:  # not a row: no path, so in no arm (counted there)
            fields = {}
        if not self._learnt and fields:  # (learnt from a row, not from a value without fields)
            self._learn_fields(fields)
        buf.extend(map(fields.get, self._names))
        if self._truth is not None and self._truth not in fields:
            self._count_missing_truth(fields)

    def _learn_fields(self, fields: Mapping[str, Any]) -> None:
        """The fields the first row has come first (one itemgetter reads them
        from a row with the same ones), those it lacks last (None for such a
        row; a row that has one is read field by field). Without the ground
        truth in the first row, every row is read field by field (its absence
        is counted per row)."""
        self._learnt = True
        fields_roles = list(zip(self._names, self._roles, strict=True))
        present = [(n, r) for n, r in fields_roles if n in fields]
        absent = [(n, r) for n, r in fields_roles if n not in fields]
        self._names, self._roles = zip(*present, *absent, strict=True)
        self._absent = tuple(n for n, _ in absent)
        self._nones = (None,) * len(absent)
        # (an itemgetter of one name gives no tuple)
        self._fast = len(present) > 1 and (self._truth is None or self._truth in fields)
        if self._fast:
            self._get = itemgetter(*(n for n, _ in present))

    def _count_missing_truth(self, fields: Iterable[str], count: int = 1) -> None:
        """``count`` results without the ground-truth field (a null value is
        fine), one of whose fields are ``fields``: counted, and logged once per
        worker, naming the field and the row's."""
        self._missing_truth.add(count, self._s.name, self._s.ground_truth, ", ".join(fields))

    def _arm_index(self, paths: list[Any]) -> list[int]:
        cache = self._arm_cache
        try:
            return list(map(cache.__getitem__, paths))  # the common case: paths seen before
        except (KeyError, TypeError):  # a new path; an unhashable one
            pass
        try:
            return [cache[p] if p in cache else self._learn_path(p) for p in paths]
        except TypeError:
            return [self._learn_path(p) for p in paths]

    def _learn_path(self, path: Any) -> int:
        arm = self._s.arm_of(path if type(path) is str else str(text(path)))
        index = self._unrouted if arm is None else self._s.arm_names.index(arm)
        if len(self._arm_cache) < _MAX_CACHED_PATHS and type(path) is str:
            self._arm_cache[path] = index
        return index

    def _add_chunk(self, values: list[Any], window: Any) -> list[Any]:
        """A chunk of one window's rows (their field values one after another)
        into the accumulators; see :meth:`_add_columns`."""
        path_at = None
        if self._unrouted_path is None and "path" in self._roles:
            k, at = len(self._roles), self._roles.index("path")
            path_at = lambda row: values[row * k + at]  # noqa: E731
        return self._add_columns(columns_of(values, self._roles, self._arm_index), window,
                                 path_at)

    def _add_columns(self, cols: Columns, window: Any,
                     path_at: Callable[[int], Any] | None = None) -> list[Any]:
        """A chunk of one window's rows into the accumulators (and, for a
        mirror, its results held for pairing); what leaves for the join and
        the key distinct step. ``path_at``: a row's path, for the log of
        unrouted results (None: the path is known already)."""
        arms = cols.arm
        present = np.bincount(arms, minlength=len(self._arm_names))
        for arm in np.flatnonzero(present).tolist():
            mine = np.flatnonzero(arms == arm) if present[arm] != len(arms) else \
                np.arange(len(arms))
            if arm == self._unrouted:
                self._count_unrouted(cols, mine, path_at)
            acc = self._accs.get((window, arm))
            if acc is None:
                acc = self._accs[(window, arm)] = ArmAcc()
            acc.add_rows(cols, mine, self._accuracy)
            if self._join and arm != self._unrouted:
                self._hold(cols, mine, arm, window)
        out: list[Any] = []
        if self._hashed and cols.key is not None:
            out += self._add_keys(cols, window)
        if self._n_held >= self._pair_at:
            out += self._pair(final=False)
        return out

    def _add_keys(self, cols: Columns, window: Any) -> list[Any]:
        """The chunk's keys into their (window, arm)'s set - per arm, not per
        row (a chunk has a few arms) -; routed rows without a key counted."""
        keys: list[Any] = cols.key or []
        arms = cols.arm
        present = np.unique(arms).tolist()
        for arm in present:
            if arm == self._unrouted:
                continue
            mine = keys if len(present) == 1 else list(compress(keys, (arms == arm).tolist()))
            found = self._keys.setdefault((window, self._arm_names[arm]), set())
            found.update(mine)
            if None in found:
                self._keyless += mine.count(None)
                found.discard(None)
        held = sum(map(len, self._keys.values()))
        return list(self._unkey()) if held > _MAX_HELD else []

    def _hold(self, cols: Columns, rows: np.ndarray, arm: int, window: Any) -> None:
        """An arm's results in ``rows`` with an id, held for pairing; those
        without one counted (:meth:`_count_missing_id`)."""
        rows = rows[~cols.failed[rows]]
        if cols.id is None:  # no row of the chunk has the id field
            self._missing_id += len(rows)
            return
        ids = cols.id
        # (a chunk of one arm's results, the common case on a runner that
        # sends each arm's results in runs: its ids as they are)
        mine = ids if len(rows) == len(ids) else [ids[i] for i in rows.tolist()]
        if None in mine:
            keep = [i for i, id_ in enumerate(mine) if id_ is not None]
            self._missing_id += len(mine) - len(keep)
            rows, mine = rows[keep], [mine[i] for i in keep]
        if not mine:
            return
        held = self._held.get(window)
        if held is None:
            held = self._held[window] = [_Held() for _ in self._s.arm_names]
        held[arm].add(cast(list[Id], mine), sides_of(cols, rows))  # (None left out above)
        self._n_held += len(mine)

    def _pair(self, final: bool) -> list[Any]:
        """Pair the held results of every window whose arms all arrived; the
        rest stay held, or (``final``, or more than :data:`_MAX_HELD`) leave
        for the join."""
        out: list[Any] = []
        held_windows, self._held = self._held, {}
        self._n_held = 0
        for window, held in held_windows.items():
            ids = [h.ids for h in held]
            if not all(ids):  # an arm has none yet: nothing pairs (a runner that
                # sends each arm's results in runs), so nothing is looked up
                self._held[window] = held
                self._n_held += sum(map(len, ids))
                continue
            ids = same_ids(ids)
            sides = [Sides.concat(h.sides) if h.sides else None for h in held]
            paired, left = _add_pairs(self._pairs, window, ids, sides, self._control,
                                      self._others, self._accuracy)
            self._paired += paired
            kept = [_Held() for _ in held]
            for arm, rows in enumerate(left):
                if len(rows):
                    kept[arm].add([ids[arm][i] for i in rows.tolist()],
                                  sides[arm].take(rows))  # type: ignore[union-attr]
                    self._n_held += len(rows)
            if any(h.ids for h in kept):
                self._held[window] = kept
        if final or self._n_held > _MAX_HELD:
            out += self._unhold()
        self._pair_at = self._n_held + _MAX_HELD
        return out

    def _unhold(self) -> Iterator[Any]:
        """The held results, as columns per (window, join bucket): one
        ``(bucket, [(arm, ids, sides), ...])`` each, for the GroupByKey that
        brings every bundle's copies of an id together (:class:`~.grouped.PairJoined`)."""
        held_windows, self._held = self._held, {}
        self._joined += self._n_held
        self._n_held = 0
        for window, held in held_windows.items():
            parts: dict[int, list[tuple[int, list[bytes], Sides]]] = {}
            for arm, h in enumerate(held):
                if not h.ids:
                    continue
                sides = Sides.concat(h.sides)
                for bucket, rows, ids in _bucketed(cast(list[str], texts_of(h.ids))):
                    parts.setdefault(bucket, []).append((arm, ids, sides.take(rows)))
            for bucket, part in parts.items():
                yield pvalue.TaggedOutput(_JOIN_TAG, windowed((bucket, part), window))

    def _count_unrouted(self, cols: Columns, rows: np.ndarray,
                        path_at: Callable[[int], Any] | None) -> None:
        """Results (not failures: those of elements no arm took are the
        report's ``unrouted_failures``) whose path is no arm of the experiment:
        counted, one path kept for the log (``path_at``: a row's path)."""
        results = rows[~cols.failed[rows]]
        if results.size:
            self._unrouted_results += int(results.size)
            if self._unrouted_path is None and path_at is not None:
                self._unrouted_path = path_at(int(results[0]))

    def _log_unrouted(self) -> None:
        """Results in no arm: counted (``unrouted_results``) and logged once per
        worker - the report was given another experiment's spec, or rows that
        are no results of it (they are in no report row)."""
        self._unrouted_rows.add(self._unrouted_results, self._s.name, self._unrouted_results,
                                self._unrouted_path, ", ".join(self._s.arm_names))
        self._unrouted_results, self._unrouted_path = 0, None

    def _count_keyless(self) -> None:
        """A hash split's rows without a key: counted, and logged once per
        worker (the SRM counts the distinct keys of the rows that carry one,
        elements only when none does - a key_field other than ABTest's would
        otherwise turn a sound split into a false alarm without a word)."""
        self._missing_key.add(self._keyless, self._s.name, self._keyless, self._s.key_field)
        self._keyless = 0

    def _count_missing_id(self) -> None:
        """A mirror's results without the id field (or with a null one): in no
        pair. Counted (``missing_id``) and logged once per worker - a wrong
        ``id_field`` would otherwise give pair rows of 0 pairs without a word."""
        self._missing_id_rows.add(self._missing_id, self._s.name, self._missing_id,
                                  self._s.id_field)
        self._missing_id = 0

    def _count_bad_timing(self, bad: int) -> None:
        """Rows whose timing was malformed (``combiners.valid_timing``): counted,
        and logged once per worker."""
        self._bad_timing.add(bad, self._s.name, bad, MAX_MODEL_MS)

    def _unkey(self) -> Iterator[Any]:
        """The bundle's distinct ``(arm, key)`` per window, as lists per join
        bucket: one ``(bucket, [(arm, keys), ...])`` each, for the GroupByKey
        that makes them distinct across bundles (:class:`~.grouped.CountKeys`)."""
        per_window: dict[Any, dict[str, list[str]]] = {}
        for (window, arm), keys in self._keys.items():
            per_window.setdefault(window, {})[arm] = list(keys)
        self._keys = {}
        for window, arms in per_window.items():
            parts: dict[int, list[tuple[str, list[bytes]]]] = {}
            for arm, texts in arms.items():
                for bucket, _, encoded in _bucketed(texts):
                    parts.setdefault(bucket, []).append((arm, encoded))
            for bucket, part in parts.items():
                yield pvalue.TaggedOutput(_KEYS_TAG, windowed((bucket, part), window))

    def finish_bundle(self) -> Iterator[Any]:
        if self._buf:
            yield from self._add_chunk(self._buf, None)
        for window, buf in self._bufs.items():
            yield from self._add_chunk(buf, window)
        self._buf, self._bufs = [], {}
        if self._held:
            yield from self._pair(final=True)
        name = self._s.name
        bad = 0
        for (window, arm), acc in self._accs.items():
            arm_name = self._arm_names[arm]
            acc.compact(self._stage_counts.get(arm_name))
            bad += acc.bad_timing
            yield windowed((name, ("arm", arm_name, acc)), window)
        if bad:
            self._count_bad_timing(bad)
        if self._keyless:
            self._count_keyless()
        if self._missing_id:
            self._count_missing_id()
        if self._unrouted_results:
            self._log_unrouted()
        control = self._s.control
        for (window, other), pair in self._pairs.items():
            yield windowed((name, ("pair", (control, self._arm_names[other]), pair)), window)
        yield from self._unkey()
        self._accs, self._pairs = {}, {}
        if self._paired:
            self._paired_counter.inc(self._paired)
        if self._joined:
            self._joined_counter.inc(self._joined)


class _AccumulateWindowed(_Accumulate):
    """:class:`_Accumulate` for input in windows other than the global one."""

    def process(self, element: Any, window: Any = beam.DoFn.WindowParam) -> Any:
        buf = self._bufs.get(window)
        if buf is None:
            buf = self._bufs[window] = []
        self._read(element, buf)
        if len(buf) < self._chunk_values:
            return ()
        del self._bufs[window]
        return self._add_chunk(buf, window)


class _AccumulateBlocks(_Accumulate):
    """:class:`_Accumulate` over the finished blocks a crossinfer transform
    wrote its result rows from (:func:`~crossinfer.patterns.edges.finished_blocks`):
    a block's outputs are columns already
    (:func:`~crossinfer.experiments.columns.columns_of_block`), so only the
    ground truth, id and key are read per row, from its input element. A
    window's blocks are held until :data:`_CHUNK` rows (streaming's are small),
    then added as one chunk."""

    def start_bundle(self) -> None:
        super().start_bundle()
        self._blocks: dict[Any, list[Columns]] = {}  # per window
        self._rows: dict[Any, int] = {}

    def process(self, block: Block, window: Any = beam.DoFn.WindowParam) -> Any:
        n = len(block)
        if not n:
            return ()
        if isinstance(window, GlobalWindow):
            window = None  # (as _Accumulate keys it)
        arm = self._arm_index([block.path])[0]
        if arm == self._unrouted and self._unrouted_path is None:
            self._unrouted_path = block.path
        r = self._reading
        cols, missing, example = columns_of_block(block, arm, r.truth, r.id_field, r.key_field,
                                                  r.value)
        if missing:
            self._count_missing_truth(example, missing)
        held = self._blocks.setdefault(window, [])
        held.append(cols)
        self._rows[window] = rows = self._rows.get(window, 0) + n
        if rows < _CHUNK:
            return ()
        del self._blocks[window], self._rows[window]
        return self._add_columns(Columns.concat(held), window)

    def finish_bundle(self) -> Iterator[Any]:
        for window, held in self._blocks.items():
            yield from self._add_columns(Columns.concat(held), window)
        self._blocks, self._rows = {}, {}
        yield from super().finish_bundle()


def _add_pairs(pairs: dict[tuple[Any, int], PairAcc], window: Any,
               ids: list[list[Id]], sides: list[Sides | None], control: int,
               others: list[int], accuracy: bool) -> tuple[int, list[np.ndarray]]:
    """Pair one window's results held in a bundle by id - the elements every
    arm has, once (:func:`columns.pair_rows`) - into ``pairs``, one
    :class:`PairAcc` per (window, other arm).

    ``ids``, ``sides``: per arm (in the settings' order), its results' ids and
    sides, aligned by row (``sides`` None where an arm has none). Returns how
    many elements were paired, and per arm the rows left unpaired (for the
    join, which pairs the control with each other arm apart)."""
    paired, left = columns.pair_rows(ids)
    n = len(paired[0])
    if n:
        control_sides = sides[control].take(paired[control])  # type: ignore[union-attr]
        for other in others:
            add_pair(pairs, window, other, control_sides,
                     sides[other].take(paired[other]), accuracy)  # type: ignore[union-attr]
    return n, left


