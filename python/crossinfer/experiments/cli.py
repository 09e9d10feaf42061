"""``crossinfer report``: an experiment report from result files, as HTML and text.

::

    crossinfer report 'out/exp-*.jsonl' --spec ab.json --ground-truth label_true \\
        --window 60 --html report.html --json report.jsonl

argparse (the standard library) rather than click or typer: one subcommand
with a handful of flags needs no dependency, and ``--help`` comes with it.
The report is computed by the same Beam transform a pipeline uses
(:class:`~crossinfer.experiments.ReportFromInputs`, on Beam's in-process
FnApiRunner), so a file report and a pipeline report cannot disagree.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from crossinfer.experiments.io import EVENT_TIME_FIELD, read_rows, to_report_inputs
from crossinfer.experiments.schema import ArmReport, PairReport, ReportInput
from crossinfer.experiments.settings import METRICS, ReportSettings, ReportSettingsError
from crossinfer.experiments.summary import ALPHA, SRM_ALPHA, summary_text
from crossinfer.spec.errors import SpecError

_STORE: dict[str, list[Any]] = defaultdict(list)
_RUNS = itertools.count()


class _Keep:
    """Collects a pipeline's output in this process (the FnApiRunner runs here)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, row: Any) -> None:
        _STORE[self.key].append(row)


class Report(NamedTuple):
    arms: list[ArmReport]  # the whole run (the global window)
    pairs: list[PairReport]
    windows: list[ArmReport]  # per fixed window of event time
    window_pairs: list[PairReport]


def run_report(inputs: Sequence[tuple[ReportInput, int | None]], settings: ReportSettings,
               window_s: float | None = None) -> Report:
    """The report of the whole run, and per fixed window of ``window_s``
    seconds of event time (elements without one are left out of those; none
    without ``window_s``)."""
    import apache_beam as beam
    from apache_beam.transforms.window import FixedWindows, TimestampedValue

    from crossinfer.experiments.transform import ReportFromInputs

    run = f"run{next(_RUNS)}"
    with beam.Pipeline(runner="FnApiRunner") as p:
        rows = p | "Rows" >> beam.Create([row for row, _ in inputs]).with_output_types(
            ReportInput)
        whole = rows | "Whole" >> ReportFromInputs(settings)
        _ = whole.arms | "KeepArms" >> beam.Map(_Keep(f"{run}/arms"))
        _ = whole.pairs | "KeepPairs" >> beam.Map(_Keep(f"{run}/pairs"))
        timed = [TimestampedValue(row, t / 1000) for row, t in inputs if t is not None]
        if window_s and timed:
            windowed = (p | "Timed" >> beam.Create(timed).with_output_types(ReportInput)
                        | "Windows" >> beam.WindowInto(FixedWindows(window_s))
                        | "PerWindow" >> ReportFromInputs(settings))
            _ = windowed.arms | "KeepWindows" >> beam.Map(_Keep(f"{run}/windows"))
            _ = windowed.pairs | "KeepWindowPairs" >> beam.Map(_Keep(f"{run}/window_pairs"))
    order = {arm: i for i, arm in enumerate(settings.arm_names)}
    arms = sorted(_STORE.pop(f"{run}/arms", []), key=lambda a: order[a.arm])
    pairs = sorted(_STORE.pop(f"{run}/pairs", []), key=lambda p: order[p.treatment])
    windows = sorted(_STORE.pop(f"{run}/windows", []),
                     key=lambda a: (a.window_start_ms, order[a.arm]))
    window_pairs = sorted(_STORE.pop(f"{run}/window_pairs", []),
                          key=lambda p: (p.window_start_ms, order[p.treatment]))
    return Report(arms, pairs, windows, window_pairs)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossinfer", description="crossinfer tools")
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser(
        "report", help="an A/B or mirror experiment report from result files",
        description="Reads result rows (JSON lines or Parquet; crossinfer's result rows, or "
                    "the report rows WriteForReport writes) and prints a summary with the "
                    "decision; writes an HTML report with plots and the report rows.")
    report.add_argument("results", help="result file, directory or glob (.jsonl/.json/.parquet)")
    report.add_argument("--failures", help="failure rows (file, directory or glob), when the "
                                           "results are crossinfer's result rows")
    report.add_argument("--spec", required=True,
                        help="the A/B spec the results came from (JSON file): arms, weights")
    report.add_argument("--ground-truth", help="field with the true label or value")
    report.add_argument("--id-field", default="id", help="element id field (mirror joins)")
    report.add_argument("--key-field", default=ReportSettings.key_field,
                        help="the field a hash split is sticky on: its SRM test counts "
                             f"distinct keys per arm (default {ReportSettings.key_field})")
    report.add_argument("--metric", choices=METRICS, default="accuracy")
    report.add_argument("--control", help="the arm others are compared with (default: first)")
    report.add_argument("--confidence", type=float, default=0.95)
    report.add_argument("--time-field", default=EVENT_TIME_FIELD,
                        help="event time field, milliseconds since the epoch "
                             f"(default {EVENT_TIME_FIELD})")
    report.add_argument("--window", type=float, metavar="SECONDS",
                        help="also report per fixed window of event time (share over time)")
    report.add_argument("--alpha", type=float, default=ALPHA,
                        help=f"significance level of the decision (default {ALPHA})")
    report.add_argument("--srm-alpha", type=float, default=SRM_ALPHA,
                        help=f"SRM threshold (default {SRM_ALPHA})")
    report.add_argument("--html", type=Path, help="write the HTML report here")
    report.add_argument("--json", type=Path,
                        help="write the report rows here (JSON lines: arms, pairs, windows)")
    return parser


def _check_ground_truth(rows: list[dict[str, Any]], field: str | None) -> None:
    """A ``--ground-truth`` that no result row has is a typo, not "no ground truth".

    Raises:
      ValueError: naming the field and the rows' fields.
    """
    raw = [row for row in rows if "failed" not in row]  # report rows carry ``truth``
    if field and raw and not any(field in row for row in raw):
        fields = sorted(set().union(*(row.keys() for row in raw[:100])))
        raise ValueError(f"--ground-truth: no result row has the field {field!r} "
                         f"(fields: {', '.join(fields)})")


def _check_experiment(inputs: Sequence[tuple[ReportInput, int | None]],
                      settings: ReportSettings) -> None:
    """Rows of another experiment than the spec's would all be "unrouted".

    Raises:
      ValueError: naming the spec's experiment and the rows'.
    """
    paths = [row.path for row, _ in inputs if not row.failed]
    if paths and not any(settings.arm_of(path) for path in paths):
        found = sorted({path.split("/", 1)[0] for path in paths})
        raise ValueError(f"--spec: the spec's experiment is {settings.name!r}, but the "
                         f"results are of {', '.join(map(repr, found[:5]))}")


def _check_times(inputs: Sequence[tuple[ReportInput, int | None]], time_field: str) -> None:
    """``--window`` reads the event time in ``time_field``; rows without it
    are left out of the windows (not of the whole-run report).

    Raises:
      ValueError: no row has it.
    """
    missing = sum(1 for _, time in inputs if time is None)
    if missing == len(inputs):
        raise ValueError(f"--window: no row has the event time field {time_field!r} "
                         "(name the field with --time-field)")
    if missing:
        sys.stderr.write(f"warning: --window: {missing:,} of {len(inputs):,} rows have no "
                         f"event time in {time_field!r} and are left out of the windows "
                         "(name the field with --time-field)\n")


def report_main(args: argparse.Namespace) -> int:
    try:
        settings = ReportSettings.from_spec(
            Path(args.spec).read_text(encoding="utf-8"), ground_truth=args.ground_truth,
            id_field=args.id_field, key_field=args.key_field, metric=args.metric,
            control=args.control or "", confidence=args.confidence)
    except (OSError, json.JSONDecodeError, SpecError) as exc:  # the file, not a flag
        raise ValueError(f"--spec {args.spec}: {exc}") from None
    rows = read_rows(args.results)
    _check_ground_truth(rows, args.ground_truth)
    inputs = to_report_inputs(rows, args.ground_truth, args.id_field, False, args.time_field,
                              args.key_field)
    if args.failures:
        inputs += to_report_inputs(read_rows(args.failures), args.ground_truth,
                                   args.id_field, True, args.time_field, args.key_field)
    _check_experiment(inputs, settings)
    if args.window:
        _check_times(inputs, args.time_field)
    if settings.ground_truth is None and any(r.truth is not None for r, _ in inputs):
        # report rows carry the ground truth already projected, under "truth"
        settings = dataclasses.replace(settings, ground_truth="truth")
    keyless = sum(1 for r, _ in inputs if r.key is None and not r.failed)
    if settings.hashed and inputs and keyless == sum(1 for r, _ in inputs if not r.failed):
        sys.stderr.write(
            f"warning: no row has a key ({args.key_field!r}): SRM counts elements, but a hash "
            "split assigns keys: the test assumes independent elements and fires on a sound "
            "split when few keys carry many elements (name the key field with --key-field, "
            "or write the rows with WriteForReport's key_field)\n")
    elif settings.hashed and keyless:
        sys.stderr.write(
            f"warning: {keyless:,} result rows have no key ({args.key_field!r}): the SRM counts "
            "the distinct keys of the rows that have one and leaves these out\n")
    arms, pairs, windows, window_pairs = run_report(inputs, settings, args.window)
    n_windows = len({a.window_start_ms for a in windows})
    text = summary_text(arms, pairs, windows=max(1, n_windows), alpha=args.alpha,
                        srm_alpha=args.srm_alpha)
    sys.stdout.write(text)
    if args.html:
        from crossinfer.experiments.html import render

        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(render(arms, pairs, windows, window_pairs, text), encoding="utf-8")
        print(f"HTML report: {args.html.resolve()}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("w", encoding="utf-8") as f:
            tables: tuple[tuple[str, Sequence[ArmReport | PairReport]], ...] = (
                ("arm", arms), ("pair", pairs), ("window", windows),
                ("window_pair", window_pairs))
            for kind, table in tables:
                for row in table:
                    f.write(json.dumps({"kind": kind, **row._asdict()}) + "\n")
        print(f"report rows: {args.json.resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return report_main(args)
    except (ReportSettingsError, FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"crossinfer {args.command}: error: {exc}\n")
    return 0  # pragma: no cover - parser.exit raises


if __name__ == "__main__":  # pragma: no cover
    # Run the module's own copy, not __main__'s: Beam pickles classes of __main__
    # by value, and _Keep would then fill a copy of _STORE.
    from crossinfer.experiments.cli import main as _main

    sys.exit(_main())
