"""The one-screen text summary of a report, and its decision.

::

    from crossinfer.experiments import decide, summary_text

    decision = decide(arm_rows, pair_rows)       # one window's ArmReport / PairReport rows
    decision.text    # "control better than treatment at p=1.2e-05;
                     #  SRM ok (p=0.41, threshold 0.001)"
    print(summary_text(arm_rows, pair_rows))     # the table and the decision
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from crossinfer.experiments.schema import ArmReport, PairReport

#: SRM threshold: a sample-ratio mismatch this unlikely means the split is
#: broken and no comparison can be trusted (experimentation platforms use
#: 0.001 or 0.0005: a real mismatch is usually far below either).
SRM_ALPHA = 0.001
#: Significance level of the arm comparisons.
ALPHA = 0.05


@dataclass(frozen=True)
class Decision:
    """One window's decision: ``srm_ok`` (None for a mirror: no split to
    check), the SRM p-value, one sentence per arm compared with the
    control (``verdicts``) and the SRM threshold it was held to; ``text``
    joins them, naming the threshold (an "ok" at p=0.004 reads as a mistake
    without it)."""

    srm_ok: bool | None  # None: mirror (no split to check)
    srm_p_value: float | None
    verdicts: tuple[str, ...]  # one sentence per compared arm
    srm_alpha: float = SRM_ALPHA

    @property
    def text(self) -> str:
        srm = ("SRM not applicable (mirror)" if self.srm_ok is None else
               f"SRM ok (p={_p(self.srm_p_value)}, threshold {self.srm_alpha:g})"
               if self.srm_ok else
               f"SRM FAILED (p={_p(self.srm_p_value)} < {self.srm_alpha:g}): the split does "
               "not follow its weights; do not trust the comparison")
        return "; ".join((*self.verdicts, srm))


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def decide(arms: Sequence[ArmReport], pairs: Sequence[PairReport], alpha: float = ALPHA,
           srm_alpha: float = SRM_ALPHA) -> Decision:
    """The decision for one window's rows (the global window's, in batch).

    Args:
      arms / pairs: one window's :class:`ArmReport` and :class:`PairReport` rows.
      alpha: significance level of each comparison (keep it ``1 -
        confidence`` for the verdict to agree with the reported interval).
      srm_alpha: the sample-ratio-mismatch threshold.

    A per-window decision is for monitoring: deciding "as soon as a window is
    significant" tests again and again, and the chance of a false winner
    grows with the number of looks (docs/experiments.md).
    """
    srm_p = arms[0].srm_p_value if arms else None
    srm_ok = None if not arms or arms[0].expected_share is None else \
        (srm_p is None or srm_p >= srm_alpha)
    verdicts = []
    for pair in pairs:
        if pair.metric is None or pair.p_value is None or pair.difference is None:
            verdicts.append(f"{pair.treatment} vs {pair.control}: no ground truth to compare")
            continue
        # accuracy: higher is better; mean absolute error: lower is better
        better = pair.difference > 0 if pair.metric == "accuracy" else pair.difference < 0
        if pair.p_value < alpha:
            winner, loser = (pair.treatment, pair.control) if better else \
                (pair.control, pair.treatment)
            verdicts.append(f"{winner} better than {loser} at p={_p(pair.p_value)}")
        else:
            verdicts.append(f"no significant difference between {pair.treatment} and "
                            f"{pair.control} (p={_p(pair.p_value)})")
    return Decision(srm_ok, srm_p, tuple(verdicts), srm_alpha)


def _window(arm: ArmReport) -> str:
    """", window <start> - <end> UTC" (event time), or "" for the global window."""
    if arm.window_start_ms is None or arm.window_end_ms is None:
        return ""

    def utc(ms: int) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)

    start, end = utc(arm.window_start_ms), utc(arm.window_end_ms)
    end_text = end.strftime("%H:%M:%S" if end.date() == start.date() else "%Y-%m-%d %H:%M:%S")
    return f", window {start:%Y-%m-%d %H:%M:%S} - {end_text} UTC"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def summary_text(arms: Sequence[ArmReport], pairs: Sequence[PairReport],
                 windows: int = 1, alpha: float = ALPHA, srm_alpha: float = SRM_ALPHA) -> str:
    """A screen of text: the arms, the comparisons, the decision (one
    window's rows; ``windows``: how many windows the run also has, said in
    the header). Same arguments as :func:`decide`."""
    if not arms:
        return "no rows: nothing to report\n"
    first = arms[0]
    total = sum(a.routed for a in arms)
    if first.expected_share is None:  # a mirror: every element reaches every arm
        count = (f"{max(a.routed for a in arms):,} mirrored elements "
                 f"({total:,} results and failures over {len(arms)} arms)")
    else:
        count = f"{total:,} routed elements"
    lines = [f"Experiment {first.experiment}: {count}" + _window(first)
             + (f", {windows} windows" if windows > 1 else "")
             + (f", {first.unrouted_failures:,} failed before any arm"
                if first.unrouted_failures else "")]
    metric = first.metric
    conf = f"{100 * first.confidence:g}% CI"
    header = (f"{'arm':<14}{'results':>9}{'failures':>10}{'share':>8}{'weight':>8}"
              f"  {(metric or 'metric') + ' (' + conf + ')':<30}{'p50/p95/p99 ms':>22}")
    lines += ["", header]
    for a in arms:
        value = "-" if a.metric_value is None else \
            f"{a.metric_value:.3f} [{_num(a.metric_ci_low)}, {_num(a.metric_ci_high)}]"
        latency = "-" if a.latency_p50_ms is None else \
            f"{a.latency_p50_ms:.3g}/{a.latency_p95_ms:.3g}/{a.latency_p99_ms:.3g}"
        lines.append(f"{a.arm:<14}{a.count:>9,}{a.failures:>10,}{_pct(a.share):>8}"
                     f"{_pct(a.expected_share):>8}  {value:<30}{latency:>22}")
    lines.append("")
    for p in pairs:
        if p.difference is not None:
            lines.append(f"{p.treatment} - {p.control}: {p.metric} {p.difference:+.4f} "
                         f"({conf} {_num(p.difference_ci_low, 4)} .. "
                         f"{_num(p.difference_ci_high, 4)}), p={_p(p.p_value)} [{p.test}]")
        if p.paired:
            lines.append(f"{p.treatment} vs {p.control}: {p.pairs:,} pairs, agreement "
                         f"{_pct(p.agreement)}, mean |score difference| "
                         f"{_num(p.mean_abs_score_diff, 4)}, "
                         f"{sum(p.flip_count):,} label flips")
    lines += ["", "Decision: " + decide(arms, pairs, alpha, srm_alpha).text]
    return "\n".join(lines) + "\n"
