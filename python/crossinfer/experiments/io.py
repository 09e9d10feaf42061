"""Writing report input from a pipeline, and reading result files for ``crossinfer report``.

Two file shapes are read (JSON lines ``.jsonl``/``.json``, or Parquet
``.parquet``; a path may be a glob or a directory):

* **report rows**, as :class:`WriteForReport` writes them: the
  :class:`~crossinfer.experiments.schema.ReportInput` fields plus
  ``event_time_ms`` (the element's event time; null in the global window) -
  small, fixed columns, the way to use from a pipeline;
* **result rows** (and failure rows) as a pipeline wrote them with any sink
  (crossinfer's ``results``/``failures`` fields plus the input's, e.g. from
  the Java SDK's ``JsonLinesSink``): projected here exactly as
  :class:`~crossinfer.experiments.ExperimentReport` projects them.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP

from crossinfer.experiments.columns import text
from crossinfer.experiments.combiners import valid_timing
from crossinfer.experiments.schema import ReportInput
from crossinfer.experiments.transform import ToReportInput
from crossinfer.rows import fields_view

#: The event-time column :class:`WriteForReport` adds (milliseconds since the epoch).
EVENT_TIME_FIELD = "event_time_ms"
FORMATS = ("jsonl", "parquet")
_GLOBAL_END = GlobalWindow().max_timestamp()


def _event_time_ms(timestamp: Any) -> int | None:
    """Milliseconds, or None for the global window's ends (no event time)."""
    if timestamp <= MIN_TIMESTAMP or timestamp >= _GLOBAL_END:
        return None
    return int(timestamp.micros) // 1000


class _ReportRecord(beam.DoFn):
    """A result (or failure) row -> a report row as a dict: the ReportInput
    fields and ``event_time_ms``, from ``time_field`` of the row (a failure's
    element) when set, else from the element's Beam timestamp."""

    def __init__(self, ground_truth: str | None, id_field: str | None, failed: bool,
                 time_field: str | None, key_field: str | None) -> None:
        self._project = ToReportInput(ground_truth, id_field, failed, key_field)
        self._failed = failed
        self._time = time_field

    def process(self, row: Any,
                timestamp: Any = beam.DoFn.TimestampParam) -> Iterator[dict[str, Any]]:
        if self._time:
            source = fields_view(row)
            if self._failed:
                element = source.get("element")
                source = fields_view(element) if element is not None else {}
            value = source.get(self._time)
            time = int(value) if isinstance(value, int | float) else None
        else:
            time = _event_time_ms(timestamp)
        for projected in self._project.process(row):
            values = projected._asdict()
            values[EVENT_TIME_FIELD] = time
            yield values


def parquet_schema() -> Any:
    """The pyarrow schema of report rows in Parquet."""
    import pyarrow as pa

    return pa.schema([
        ("path", pa.string()), ("failed", pa.bool_()), ("label", pa.int64()),
        ("score", pa.float64()), ("value", pa.float64()), ("truth", pa.float64()),
        ("id", pa.string()), ("model_ms", pa.list_(pa.float64())),
        ("batch_size", pa.list_(pa.int64())), ("key", pa.string()),
        (EVENT_TIME_FIELD, pa.int64()),
    ])


class WriteForReport(beam.PTransform[Any, Any]):
    """Write an A/B result's report rows to files ``crossinfer report`` reads.

    ``outputs | WriteForReport("out/exp", ground_truth="label_true")`` writes
    ``out/exp-00000-of-0000N.jsonl`` (or ``.parquet`` with
    ``file_format="parquet"``): one row per result and per failure, with the
    :class:`ReportInput` fields and ``event_time_ms``: milliseconds since the
    epoch, from the input field ``time_field`` when given, else the result's
    Beam timestamp - which inference sets to the end of the element's window
    (the last millisecond of a fixed window; null in the global window), not
    the element's own time: give a ``time_field`` whenever the report is to
    have windows (``crossinfer report --window``). ``key``: the input field
    ``key_field`` (default ``key``, as :class:`~crossinfer.ABTest`'s), which a
    hash split's sample-ratio-mismatch test counts distinct (None: null).
    Bounded or windowed unbounded input: Beam's file sinks write one set of
    files per window in streaming (``<prefix>-[start, end)-...``); to report
    a stream as it runs, apply :class:`~crossinfer.experiments.ExperimentReport`
    in the pipeline.

    Raises:
      ValueError: an unknown ``file_format``.
    """

    def __init__(self, path_prefix: str, file_format: str = "jsonl",
                 ground_truth: str | None = None, id_field: str | None = "id",
                 time_field: str | None = None, key_field: str | None = "key") -> None:
        super().__init__()
        if file_format not in FORMATS:
            raise ValueError(f"file_format: {file_format!r} is not one of {', '.join(FORMATS)}")
        self._prefix = path_prefix
        self._format = file_format
        self._truth = ground_truth
        self._id = id_field
        self._time = time_field
        self._key = key_field

    def expand(self, outputs: Any) -> Any:
        results, failures = outputs
        rows = ((results | "ResultsIn" >> beam.ParDo(
                    _ReportRecord(self._truth, self._id, False, self._time, self._key)),
                 failures | "FailuresIn" >> beam.ParDo(
                     _ReportRecord(self._truth, self._id, True, self._time, self._key)))
                | "Flatten" >> beam.Flatten())
        if self._format == "parquet":
            return rows | "Parquet" >> beam.io.WriteToParquet(
                self._prefix, parquet_schema(), file_name_suffix=".parquet")
        return (rows | "Json" >> beam.Map(json.dumps)
                | "Text" >> beam.io.WriteToText(self._prefix, file_name_suffix=".jsonl"))


# ---------------------------------------------------------------- reading


def expand_paths(pattern: str) -> list[str]:
    """A file, a directory (its .jsonl/.json/.parquet files) or a glob, sorted."""
    if os.path.isdir(pattern):
        paths = [os.path.join(pattern, n) for n in os.listdir(pattern)
                 if n.endswith((".jsonl", ".json", ".parquet"))]
    else:
        paths = glob.glob(pattern)
    if not paths:
        raise FileNotFoundError(f"no result files match {pattern!r}")
    return sorted(paths)


def read_rows(pattern: str) -> list[dict[str, Any]]:
    """Every row of the files ``pattern`` names, as dicts.

    Raises:
      FileNotFoundError: nothing matches. ValueError: a line that is not a JSON
      object (naming the file and line).
    """
    rows: list[dict[str, Any]] = []
    for path in expand_paths(pattern):
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            rows.extend(pq.read_table(path).to_pylist())
            continue
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{number}: not a JSON object")
                rows.append(row)
    return rows


def to_report_inputs(rows: list[dict[str, Any]], ground_truth: str | None,
                     id_field: str | None, failed: bool, time_field: str | None,
                     key_field: str | None = None) -> list[tuple[ReportInput, int | None]]:
    """Rows read from files -> (ReportInput, event time in ms or None).

    Report rows (with a ``failed`` column) are taken as they are (``key`` null
    when they have none: written before it); result rows (or failure rows,
    ``failed``) are projected like the PTransform does, ``key`` from
    ``key_field``.

    Raises:
      ValueError: a row that is neither (no ``path``, nor ``node``).
    """
    project = ToReportInput(ground_truth, id_field, failed, key_field)
    out: list[tuple[ReportInput, int | None]] = []
    for row in rows:
        time = row.get(time_field) if time_field else None
        time = int(time) if isinstance(time, int | float) else None
        if "failed" in row and "path" in row:
            # ids and keys are text in ReportInput (a file may hold numbers)
            read = [ReportInput._make(
                text(row.get(f)) if f in ("id", "key") else row.get(f)
                for f in ReportInput._fields)]
        elif ("node" if failed else "path") not in row:
            raise ValueError(f"a {'failure' if failed else 'result'} row without "
                             f"{'node' if failed else 'path'}: fields {sorted(row)[:12]}")
        else:
            read = list(project.process(row))
        out.extend((_timing_checked(r), time) for r in read)
    return out


def _timing_checked(row: ReportInput) -> ReportInput:
    """``row``, its timing nulled when malformed (a file may hold anything,
    e.g. integers no coder takes): the report then leaves it out, as the
    pipeline's report does (``combiners.valid_timing``; the route's stage count
    is checked there)."""
    if row.model_ms is None or valid_timing(row.model_ms, row.batch_size):
        return row
    return row._replace(model_ms=None, batch_size=None)
