"""The HTML report: the summary, tables and plots, in one self-contained file.

Plots are drawn with matplotlib (Agg, no display) and embedded as PNG data
URIs: the file opens offline, with no script and nothing fetched.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
from collections.abc import Sequence
from typing import Any

from crossinfer.experiments.schema import ArmReport, PairReport

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
pre.summary { background: #f5f5f5; padding: 1em; border-radius: 4px; font-size: 13px; }
div.wide { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td { white-space: nowrap; }
th { background: #eee; } td.name { text-align: left; }
figure { display: inline-block; margin: 1em 1em 1em 0; vertical-align: top; }
figure img { border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #555; max-width: 520px; }
p.note { font-size: 13px; color: #555; margin: 0.3em 0; }
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(plot_id: str, title: str, fig: Any, caption: str) -> str:
    return (f'<figure id="{plot_id}"><img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{_png(fig)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _origin_ms(rows: Sequence[Any]) -> int:
    """The first window's start: time axes count seconds from it."""
    return min(_start_ms(r) for r in rows)


def _start_ms(row: ArmReport | PairReport) -> int:
    """A window row's start (rows of the global window are not plotted over time).

    Raises:
      ValueError: a row of the global window.
    """
    if row.window_start_ms is None:
        raise ValueError("a row of the global window has no window start")
    return row.window_start_ms


def _end_ms(row: ArmReport | PairReport) -> int:
    """A window row's end; ValueError for a row of the global window."""
    if row.window_end_ms is None:
        raise ValueError("a row of the global window has no window end")
    return row.window_end_ms


def _utc(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def _time_label(origin_ms: int) -> str:
    return f"window start, s after {_utc(origin_ms)}"


def metric_plot(arms: Sequence[ArmReport]) -> str | None:
    shown = [a for a in arms if a.metric_value is not None]
    if not shown:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = range(len(shown))
    bounds = [(v, a.metric_ci_low, a.metric_ci_high) for a in shown
              if (v := a.metric_value) is not None]
    values = [v for v, _, _ in bounds]
    # Clipped at 0: an interval computed apart from the value can end a rounding error
    # inside it (Wilson's upper bound of 143 / 143 is 0.999...), and matplotlib refuses
    # negative error bars.
    low = [max(0.0, v - (lo if lo is not None else v)) for v, lo, _ in bounds]
    high = [max(0.0, (hi if hi is not None else v) - v) for v, _, hi in bounds]
    ax.errorbar(xs, values, yerr=[low, high], fmt="o", capsize=8, markersize=8)
    ax.set_xticks(list(xs), [a.arm for a in shown])
    ax.set_xlim(-0.5, len(shown) - 0.5)
    ax.set_ylabel(shown[0].metric)
    ax.set_title(f"{shown[0].metric} per arm ({100 * shown[0].confidence:g}% CI)")
    ax.grid(axis="y", alpha=0.3)
    return _figure("plot-metric", f"{shown[0].metric} per arm", fig,
                   "Each arm's metric against the ground truth, with its interval "
                   "(accuracy: Wilson; mean absolute error: t).")


def latency_plot(arms: Sequence[ArmReport]) -> str | None:
    shown = [a for a in arms if a.latency_p50_ms is not None]
    if not shown:
        return None
    plt = _plt()
    stages = max(len(a.stages) for a in shown)
    fig, axes = plt.subplots(1, 1 + (stages > 1), figsize=(5 + 4 * (stages > 1), 3.2),
                             squeeze=False)
    width = 0.25
    ax = axes[0][0]
    for j, (q, key) in enumerate((("p50", "latency_p50_ms"), ("p95", "latency_p95_ms"),
                                  ("p99", "latency_p99_ms"))):
        ax.bar([i + (j - 1) * width for i in range(len(shown))],
               [getattr(a, key) for a in shown], width, label=q)
    ax.set_xticks(range(len(shown)), [a.arm for a in shown])
    ax.set_ylabel("model ms per element")
    ax.set_title("latency per arm (all stages)")
    ax.legend()
    if stages > 1:
        ax = axes[0][1]
        labels, p50, p95, p99 = [], [], [], []
        for a in shown:
            for s, name in enumerate(a.stages):
                labels.append(f"{a.arm}\n{name}")
                p50.append(a.stage_p50_ms[s])
                p95.append(a.stage_p95_ms[s])
                p99.append(a.stage_p99_ms[s])
        for j, (q, values) in enumerate((("p50", p50), ("p95", p95), ("p99", p99))):
            ax.bar([i + (j - 1) * width for i in range(len(labels))], values, width, label=q)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title("latency per stage")
    return _figure("plot-latency", "latency percentiles", fig,
                   "p50 / p95 / p99 of model time per element (the batch's model time over "
                   "its size), from the rows' model_ms; quantiles within 1% (DDSketch).")


def labels_plot(arms: Sequence[ArmReport]) -> str | None:
    if not any(a.label_counts for a in arms):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    values = sorted({v for a in arms for v in a.label_values})
    width = 0.8 / max(1, len(arms))
    for j, a in enumerate(arms):
        counts = dict(zip(a.label_values, a.label_counts, strict=True))
        total = sum(a.label_counts) or 1
        ax.bar([i + j * width for i in range(len(values))],
               [counts.get(v, 0) / total for v in values], width, label=a.arm)
    ax.set_xticks([i + width * (len(arms) - 1) / 2 for i in range(len(values))],
                  [str(v) for v in values])
    ax.set_xlabel("label")
    ax.set_ylabel("share of the arm's results")
    ax.set_title("label distribution per arm")
    ax.legend()
    return _figure("plot-labels", "label distribution", fig,
                   "How often each arm outputs each label.")


def flips_plot(pairs: Sequence[PairReport]) -> str | None:
    pair = next((p for p in pairs if p.paired and p.pairs), None)
    if pair is None:
        return None
    plt = _plt()
    import numpy as np

    values = sorted({*pair.flip_from, *pair.flip_to}) or [0]
    index = {v: i for i, v in enumerate(values)}
    matrix = np.zeros((len(values), len(values)), dtype=np.int64)
    for a, b, n in zip(pair.flip_from, pair.flip_to, pair.flip_count, strict=True):
        matrix[index[a], index[b]] = n
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    image = ax.imshow(matrix, cmap="Reds")
    top = matrix.max() or 1
    for (i, j), n in np.ndenumerate(matrix):
        if n:
            ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                    color="white" if n > top / 2 else "black")
    ax.set_xticks(range(len(values)), [str(v) for v in values])
    ax.set_yticks(range(len(values)), [str(v) for v in values])
    ax.set_xlabel(f"label from {pair.treatment}")
    ax.set_ylabel(f"label from {pair.control}")
    ax.set_title(f"label flips ({sum(pair.flip_count):,} of {pair.pairs:,} elements)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _figure("plot-flips", "label-flip matrix", fig,
                   f"Elements whose label differs between {pair.control} and {pair.treatment}"
                   f", joined on the element id; agreement "
                   f"{100 * (pair.agreement or 0):.1f}%.")


def agreement_plot(windowed_pairs: Sequence[PairReport]) -> str | None:
    rows = [p for p in windowed_pairs if p.window_start_ms is not None
            and p.agreement is not None]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    origin = _origin_ms(rows)
    for other in sorted({p.treatment for p in rows}):
        mine = sorted((p for p in rows if p.treatment == other), key=_start_ms)
        ax.plot([(_start_ms(p) - origin) / 1000 for p in mine], [p.agreement for p in mine],
                marker="o", label=f"{other} vs {mine[0].control}")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(_time_label(origin))
    ax.set_ylabel("label agreement")
    ax.set_title("agreement over time")
    ax.legend(fontsize=8)
    return _figure("plot-agreement", "agreement over time", fig,
                   "Each window's share of elements whose label is the same in both arms.")


def share_plot(windowed: Sequence[ArmReport]) -> str | None:
    rows = [a for a in windowed if a.window_start_ms is not None and a.share is not None
            and a.expected_share is not None]  # a mirror has no split to follow
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    arms = sorted({a.arm for a in rows}, key=[a.arm for a in rows].index)
    origin = _origin_ms(rows)
    for arm in arms:
        mine = sorted((a for a in rows if a.arm == arm), key=_start_ms)
        xs = [(_start_ms(a) - origin) / 1000 for a in mine]
        line, = ax.plot(xs, [a.share for a in mine], marker="o", label=f"{arm} share")
        if mine[0].expected_share is not None:
            ax.axhline(mine[0].expected_share, color=line.get_color(), linestyle="--",
                       label=f"{arm} weight")
    flagged = sorted({(_start_ms(a) - origin) / 1000 for a in rows
                      if a.srm_p_value is not None and a.srm_p_value < 0.001})
    for x in flagged:
        ax.axvline(x, color="red", alpha=0.3)
    ax.set_ylim(0, 1)
    ax.set_xlabel(_time_label(origin))
    ax.set_ylabel("share of routed elements")
    ax.set_title("share vs weights over time")
    ax.legend(fontsize=8)
    return _figure("plot-share", "share vs weights over time", fig,
                   "Each window's share of routed elements per arm; dashed: the configured "
                   "weight; red: a window whose SRM test fails (p < 0.001).")


def _table(rows: Sequence[Any], fields: Sequence[str]) -> str:
    # Headers with spaces, not underscores, so a wide table wraps them instead of
    # pushing its last columns out of view.
    head = "".join(f"<th>{html.escape(f.replace('_', ' '))}</th>" for f in fields)
    body = []
    for r in rows:
        cells = []
        for f in fields:
            v = getattr(r, f)
            text = f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)
            cls = ' class="name"' if isinstance(v, str) else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<div class=\"wide\"><table><tr>{head}</tr>{''.join(body)}</table></div>"


def _windows_table(windowed: Sequence[ArmReport], windowed_pairs: Sequence[PairReport]) -> str:
    """Per window: its start (seconds after the first window, and UTC) and each
    arm's routed count, share and SRM p-value; each comparison's pairs (mirror),
    difference and p-value - how much each point on the time plots stands on."""
    rows = [a for a in windowed if a.window_start_ms is not None]
    if not rows:
        return ""
    origin = _origin_ms(rows)
    pairs = {(p.window_start_ms, p.treatment): p for p in windowed_pairs}
    mirror = any(p.paired for p in windowed_pairs)
    head = ["window (s)", "start", "arm", "routed", "share", "SRM p", "metric"]
    head += ["vs control", "pairs", "agreement", "p"] if mirror else ["vs control", "p"]
    body = []
    for a in rows:
        pair = pairs.get((a.window_start_ms, a.arm))
        cells = [f"{(_start_ms(a) - origin) / 1000:g}-{(_end_ms(a) - origin) / 1000:g}",
                 _utc(_start_ms(a)), a.arm, f"{a.routed:,}", _fmt(a.share),
                 _fmt(a.srm_p_value), _fmt(a.metric_value)]
        cells.append("-" if pair is None else _fmt(pair.difference))
        if mirror:
            cells += ["-" if pair is None else f"{pair.pairs:,}",
                      "-" if pair is None else _fmt(pair.agreement)]
        cells.append("-" if pair is None else _fmt(pair.p_value))
        body.append("<tr>" + "".join(
            f"<td{_NAME if i == 2 else ''}>{html.escape(c)}</td>"
            for i, c in enumerate(cells)) + "</tr>")
    return ("<h2>Windows</h2><div class=\"wide\"><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join(body) + "</table></div>")


_NAME = ' class="name"'


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


_ARM_FIELDS = ("arm", "count", "failures", "failure_rate", "share", "expected_share",
               "srm_p_value", "score_mean", "metric_value", "metric_ci_low", "metric_ci_high",
               "latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
_PAIR_FIELDS = ("treatment", "control", "metric", "difference", "difference_ci_low",
                "difference_ci_high", "p_value", "test")
#: Only a mirror pairs elements: a split's comparison has no pairs to show.
_MIRROR_FIELDS = ("pairs", "agreement", "mean_abs_score_diff")


def _missing(arms: Sequence[ArmReport], pairs: Sequence[PairReport],
             windowed: Sequence[ArmReport], windowed_pairs: Sequence[PairReport]) -> list[str]:
    """Why a plot a reader may look for is not there (the rows lack its input)."""
    notes = []
    if arms and not any(a.metric_value is not None for a in arms):
        notes.append("No metric plot: no ground truth (--ground-truth names the field with "
                     "the true label or value).")
    if arms and not any(a.latency_p50_ms is not None for a in arms):
        notes.append("No latency plot: the result rows carry no timing (model_ms, "
                     "batch_size).")
    mirror = any(p.paired for p in pairs)
    over_time = windowed_pairs if mirror else windowed
    if arms and not any(r.window_start_ms is not None for r in over_time):
        what = "agreement" if mirror else "share vs weights"
        notes.append(f"No {what} over time plot: no per-window rows (--window SECONDS, over "
                     "the event time in --time-field).")
    return notes


def render(arms: Sequence[ArmReport], pairs: Sequence[PairReport],
           windowed: Sequence[ArmReport], windowed_pairs: Sequence[PairReport],
           summary: str) -> str:
    """The report page: ``arms``/``pairs`` of the whole run (the global
    window), ``windowed``/``windowed_pairs`` rows per window (may be empty),
    the text summary."""
    title = f"crossinfer experiment report: {arms[0].experiment}" if arms else \
        "crossinfer experiment report"
    plots = [p for p in (metric_plot(arms), latency_plot(arms), labels_plot(arms),
                         flips_plot(pairs), share_plot(windowed),
                         agreement_plot(windowed_pairs)) if p]
    pair_fields = _PAIR_FIELDS + (_MIRROR_FIELDS if any(p.paired for p in pairs) else ())
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            f"<pre class=\"summary\">{html.escape(summary)}</pre>"
            "<h2>Plots</h2>" + "".join(plots)
            + "".join(f'<p class="note">{html.escape(n)}</p>'
                      for n in _missing(arms, pairs, windowed, windowed_pairs))
            + "<h2>Arms</h2>" + _table(arms, _ARM_FIELDS)
            + "<h2>Comparisons</h2>" + _table(pairs, pair_fields)
            + _windows_table(windowed, windowed_pairs)
            + "</body></html>\n")
