"""The one-screen text summary of a report, and its decision."""

from __future__ import annotations

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
    srm_ok: bool | None  # None: mirror (no split to check)
    srm_p_value: float | None
    verdicts: tuple[str, ...]  # one sentence per compared arm

    @property
    def text(self) -> str:
        srm = ("SRM not applicable (mirror)" if self.srm_ok is None else
               f"SRM ok (p={_p(self.srm_p_value)})" if self.srm_ok else
               f"SRM FAILED (p={_p(self.srm_p_value)}): the split does not follow its weights; "
               "do not trust the comparison")
        return "; ".join((*self.verdicts, srm))


def _p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def decide(arms: Sequence[ArmReport], pairs: Sequence[PairReport], alpha: float = ALPHA,
           srm_alpha: float = SRM_ALPHA) -> Decision:
    """The decision for one window's rows (the global window's, in batch)."""
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
    return Decision(srm_ok, srm_p, tuple(verdicts))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def summary_text(arms: Sequence[ArmReport], pairs: Sequence[PairReport],
                 windows: int = 1, alpha: float = ALPHA, srm_alpha: float = SRM_ALPHA) -> str:
    """A screen of text: the arms, the comparisons, the decision."""
    if not arms:
        return "no rows: nothing to report\n"
    first = arms[0]
    total = sum(a.routed for a in arms)
    lines = [f"Experiment {first.experiment}: {total:,} routed elements"
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
