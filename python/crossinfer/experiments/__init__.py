"""Experiment reports over A/B and mirror results (issue #18; docs/experiments.md).

* :class:`ExperimentReport` - the Beam PTransform: per window and arm, traffic
  and sample-ratio mismatch, output distribution, accuracy (or mean absolute
  error) with intervals, latency percentiles; per arm pair, the difference with
  its interval and p-value, and for a mirror the agreement and label flips.
* :class:`ReportSettings` - its settings; :class:`ArmReport`,
  :class:`PairReport`, :class:`ReportInput` - its rows (fixed Beam schemas).
* :func:`decide`, :func:`summary_text` - a window's decision, and its
  one-screen text (:class:`Decision`; levels :data:`ALPHA`, :data:`SRM_ALPHA`).
* ``crossinfer report`` (:mod:`crossinfer.experiments.cli`) - the HTML report.
"""

from crossinfer.experiments.schema import TIMING_FIELDS, ArmReport, PairReport, ReportInput
from crossinfer.experiments.settings import ReportSettings, ReportSettingsError
from crossinfer.experiments.summary import ALPHA, SRM_ALPHA, Decision, decide, summary_text
from crossinfer.experiments.transform import (
    ExperimentReport,
    ReportFromInputs,
    ReportOutputs,
    ToReportInput,
)

__all__ = [
    "ALPHA",
    "SRM_ALPHA",
    "TIMING_FIELDS",
    "ArmReport",
    "Decision",
    "ExperimentReport",
    "PairReport",
    "ReportFromInputs",
    "ReportInput",
    "ReportOutputs",
    "ReportSettings",
    "ReportSettingsError",
    "ToReportInput",
    "decide",
    "summary_text",
]
