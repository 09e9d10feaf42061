"""One PNG of every benchmark's results: ``bench/results/chart.png``.

Reads the JSON files the benchmarks wrote and draws, per benchmark, grouped
bars of elements/s (log scale) with each bar's ratio to the group's
reference (plain Beam, or equal-length input for the ragged benchmark).

    python -m bench.chart
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.harness import RESULTS

PANELS = [
    ("single_model", "per-element", "1. one model, one row per element"),
    ("single_model", "batched", "1b. one model, batch-native input (64-row batches)"),
    ("xlang", None, "1c. Java -> expansion service -> Python vs Python-direct (Prism)"),
    ("patterns", None, "2. A/B and sequence, torch MLP"),
    ("keyed", None, "3. keyed: 6 models, round-robin keys, bound 2"),
    ("ragged", None, "4. ragged input (lengths 4..64) vs equal length"),
    ("gpu", None, "5. GPU (CUDA)"),
]
COLORS = {"raw": "#9e9e9e", "beam": "#4c72b0", "beam-nogbk": "#8fa8d6", "crossinfer": "#dd8452",
          "equal": "#55a868", "python": "#dd8452", "java-array": "#8172b3",
          "java-packed": "#937860", "java-packed-rows": "#c4ad66",
          # ragged --decompose
          "runs": "#8cc49a", "equal-64": "#64b5cd", "runs-64": "#da8bc3"}
REFS = {"keyed": "beam", "ragged": "equal", "gpu": "raw", "xlang": "python"}


def _rows(doc: dict[str, Any], subset: str | None) -> list[dict[str, Any]]:
    rows = doc["rows"]
    if subset == "batched":
        return [r for r in rows if r["group"].endswith("/batched")]
    if subset == "per-element":
        return [r for r in rows if not r["group"].endswith("/batched")]
    return rows


def _panel(ax: Any, doc: dict[str, Any], subset: str | None, title: str) -> None:
    rows = _rows(doc, subset)
    groups = list(dict.fromkeys(r["group"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    ref = REFS.get(doc["benchmark"], "beam")
    width = 0.8 / max(1, len(kinds))
    for k, kind in enumerate(kinds):
        for g, group in enumerate(groups):
            row = next((r for r in rows if r["group"] == group and r["kind"] == kind), None)
            if row is None:
                continue
            x = g + (k - (len(kinds) - 1) / 2) * width
            value = row["elements_per_s"]
            ax.bar(x, value, width * 0.92, color=COLORS.get(kind, "#c44e52"),
                   label=row["name"] if g == 0 else None)
            ratio = row.get(f"ratio_to_{ref}")
            text = f"{value / 1e3:,.0f}k" if value >= 1e4 else f"{value:,.0f}"
            if ratio is not None and kind != ref:
                text += f"\n{ratio:.2f}x"
            if "model_loads" in row.get("facts", {}):
                text += f"\n{row['facts']['model_loads']} loads"
            ax.text(x, value * 1.08, text, ha="center", va="bottom", fontsize=7)
    values = [r["elements_per_s"] for r in rows]
    ax.set_yscale("log")
    ax.set_ylim(min(values) / 4, max(values) * 40)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g.replace("/batched", "") for g in groups], fontsize=8)
    ax.set_ylabel("elements/s (log)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncol=2, framealpha=0.9)


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = {p.stem: json.loads(p.read_text()) for p in RESULTS.glob("*.json")}
    panels = [(docs[name], subset, title) for name, subset, title in PANELS if name in docs]
    if not panels:
        print("no results yet: run the benchmarks first (see bench/README.md)")
        return 1
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(13, 4.2 * rows), squeeze=False)
    for ax, (doc, subset, title) in zip(axes.flat, panels, strict=False):
        _panel(ax, doc, subset, title)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    env = panels[0][0]["environment"]
    fig.suptitle(f"crossinfer benchmarks - {env.get('cpus')} CPUs, apache-beam "
                 f"{env.get('apache_beam')}, {env.get('runner')}\nbar labels: elements/s and "
                 "the ratio to plain Beam (keyed: Beam + GroupByKey; ragged: equal-length "
                 "input; Java: crossinfer Python-direct), measured in one run", fontsize=10)
    fig.tight_layout()
    out = Path(argv[0]) if argv else RESULTS / "chart.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
