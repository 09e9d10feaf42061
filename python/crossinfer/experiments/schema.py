"""The report's rows, with fixed Beam schemas a Java (or any SDK's) pipeline reads.

Three row types, each a NamedTuple registered with Beam's ``RowCoder`` and a
fixed schema id (docs/wire-contract.md, *Experiment report*):

* :class:`ReportInput` - what the report reads: one row per result or failure,
  projected from crossinfer's result and failure rows (the arm's path, the
  prediction, the ground truth and element id when configured, the timing
  fields when the engine writes them). The service's report URN takes these.
* :class:`ArmReport` - one row per (window, arm).
* :class:`PairReport` - one row per (window, control arm, other arm).

No ``from __future__ import annotations`` here: Beam reads these annotations
at run time to build the schemas (string annotations would become opaque
``pythonsdk_any`` fields).
"""

import typing
from typing import NamedTuple, Optional

from apache_beam import coders
from apache_beam.coders.typecoders import registry

# Optional[...] rather than `X | None`: Beam's schema inference reads typing.Optional.
# ruff: noqa: UP045


class ReportInput(NamedTuple):
    """One result (``failed`` false) or failure (``failed`` true) as the report sees it.

    ``path``: a result's ``path`` or a failure's ``node``. ``value``: the
    prediction of a regression output (``inference[0]`` when ``inference``
    has exactly one value), else null. ``truth``: the ground-truth field as a
    float, null when absent. ``id``: the element id field as text (mirror
    joins), null when absent. ``model_ms`` / ``batch_size``: per model stage on
    the element's route, in route order (see :data:`TIMING_FIELDS`). ``key``:
    the key field as text, for a ``hash`` split's sample-ratio-mismatch test on
    distinct keys; null when absent (rows written before it, or another split:
    the test then counts rows). The last field, with a default, so rows and
    clients without it keep working.
    """

    path: str
    failed: bool
    label: Optional[int]
    score: Optional[float]
    value: Optional[float]
    truth: Optional[float]
    id: Optional[str]
    model_ms: Optional[typing.Sequence[float]]
    batch_size: Optional[typing.Sequence[int]]
    key: Optional[str] = None


class ArmReport(NamedTuple):
    """One arm in one window. Counts are elements; ``*_ms`` are milliseconds;
    ``*_ci_low``/``*_ci_high`` bound a two-sided interval at ``confidence``."""

    experiment: str
    window_start_ms: Optional[int]  # null: the global window
    window_end_ms: Optional[int]
    arm: str
    # traffic
    count: int  # type: ignore[assignment]  # results (a field name, shadowing tuple.count)
    failures: int
    failure_rate: Optional[float]  # failures / (count + failures)
    routed: int  # count + failures
    share: Optional[float]  # routed / routed over all arms
    expected_share: Optional[float]  # weight / total weight; null for mirror
    # chi-square, all arms of the window, on distinct keys for a hash split whose
    # rows carry them (else on routed rows); null for mirror
    srm_p_value: Optional[float]
    unrouted_failures: int  # failures of the window before any arm (malformed input...)
    # output distribution
    label_values: typing.Sequence[int]
    label_counts: typing.Sequence[int]
    score_count: int
    score_mean: Optional[float]
    score_ci_low: Optional[float]
    score_ci_high: Optional[float]
    # against ground truth
    metric: Optional[str]  # "accuracy" | "mean_abs_error"; null without ground truth
    metric_count: int  # results with a ground truth
    metric_value: Optional[float]
    metric_ci_low: Optional[float]
    metric_ci_high: Optional[float]
    # latency, from the engine's timing fields (null when the rows carry none)
    latency_count: int
    latency_p50_ms: Optional[float]
    latency_p95_ms: Optional[float]
    latency_p99_ms: Optional[float]
    stages: typing.Sequence[str]
    stage_p50_ms: typing.Sequence[float]
    stage_p95_ms: typing.Sequence[float]
    stage_p99_ms: typing.Sequence[float]
    stage_batch_size_mean: typing.Sequence[float]
    stage_batch_size_max: typing.Sequence[int]
    confidence: float
    # the window's pane these rows are (Beam's PaneInfo): 0, ON_TIME when the window
    # closes (batch: its only pane); a late pane's rows restate the window's report over
    # every result so far, numbered on (1, 2, ...), LATE. Read a window's highest.
    pane_index: int = 0
    pane_timing: str = "ON_TIME"


class PairReport(NamedTuple):
    """Another arm against the control arm in one window: ``difference`` is
    other minus control; ``paired`` is true for a mirror (the same elements
    in both arms, joined on the id field)."""

    experiment: str
    window_start_ms: Optional[int]
    window_end_ms: Optional[int]
    control: str
    treatment: str
    paired: bool
    metric: Optional[str]
    difference: Optional[float]
    difference_ci_low: Optional[float]
    difference_ci_high: Optional[float]
    p_value: Optional[float]
    test: Optional[str]
    # mirror only (0 / null / empty otherwise)
    pairs: int
    agreement: Optional[float]
    flip_from: typing.Sequence[int]
    flip_to: typing.Sequence[int]
    flip_count: typing.Sequence[int]
    mean_abs_score_diff: Optional[float]
    confidence: float
    pane_index: int = 0  # as in ArmReport
    pane_timing: str = "ON_TIME"


#: ReportInput fields a client's rows may lack (added after the first version;
#: nullable, taken as null): rows of older clients keep working.
OPTIONAL_INPUT_FIELDS = ("model_ms", "batch_size", "key")

#: Fixed schema ids (UUIDs: Beam Java parses every schema id as one).
SCHEMA_IDS = {
    ReportInput: "5f0b8a52-3c61-4f4e-9d0a-6b1e7c2d9a01",
    # (a02 and a03 named these rows before pane_index and pane_timing: a schema
    # id names one field list, and Beam Java caches the coder it made per id)
    ArmReport: "5f0b8a52-3c61-4f4e-9d0a-6b1e7c2d9a04",
    PairReport: "5f0b8a52-3c61-4f4e-9d0a-6b1e7c2d9a05",
}
for _type, _id in SCHEMA_IDS.items():
    _type._beam_schema_id = _id  # type: ignore[attr-defined]  # read by Beam's schemas
    registry.register_coder(_type, coders.RowCoder)

#: Result fields the engine is to write with each result (phase 2 of issue #18;
#: docs/experiments.md): ``model_ms`` - for each model stage on the element's
#: route, in route order, the measured time of the model call on the batch the
#: element was in, divided by that batch's size (milliseconds, float64);
#: ``batch_size`` - the size of that batch (int64). Both nullable arrays.
TIMING_FIELDS = ("model_ms", "batch_size")
