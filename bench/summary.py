"""Markdown tables of the results in ``bench/results/*.json`` (for the README).

    python -m bench.summary
"""

from __future__ import annotations

import json
import sys

from bench.harness import RESULTS

ORDER = ("single_model", "single_model_per_element", "xlang", "patterns", "keyed", "ragged",
         "ragged_held", "experiments", "gpu")
REFS = {"experiments": ("beam",), "keyed": ("beam", "beam-nogbk"), "ragged": ("equal",),
        "gpu": ("raw",), "xlang": ("raw", "beam", "python")}
#: Facts shown as a column where a results file records them.
FACTS = {"model_loads": "model loads", "full_collections": "full collections"}


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def render(name: str, doc: dict) -> str:
    # a results file named after its benchmark, or NAME_SOMETHING for another run of it
    refs = next((v for k, v in REFS.items() if name == k or name.startswith(k + "_")),
                ("raw", "beam"))
    facts = [f for f in FACTS if any(f in row.get("facts", {}) for row in doc["rows"])]
    head = ["group", "variant", "elements", "elements/s"]
    head += [f"x {r} (wall / cpu)" for r in refs]
    head += [FACTS[f] for f in facts]
    lines = [f"#### `{name}` ({doc['when']})", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for row in doc["rows"]:
        cells = [row["group"], row["name"], f"{row['elements']:,}",
                 f"{row['elements_per_s']:,.0f}"]
        for r in refs:
            wall, cpu = row.get(f"ratio_to_{r}"), row.get(f"cpu_ratio_to_{r}")
            cells.append("" if wall is None else _fmt(wall) if cpu is None
                         else f"{_fmt(wall)} / {_fmt(cpu)}")
        cells += [str(row.get("facts", {}).get(f, "")) for f in facts]
        lines.append("| " + " | ".join(cells) + " |")
    if doc.get("targets"):
        lines += ["", "| target | value (wall) | cpu | goal | |", "|---|---|---|---|---|"]
        for t in doc["targets"]:
            state = {True: "met", False: "**not met**", None: "n/a"}[t["met"]]
            lines.append(f"| {t['target']} | {_fmt(t['value'])} | {_fmt(t.get('cpu_value'))} "
                         f"| {t['goal']} | {state} |")
    for note in doc.get("notes", []):
        lines += ["", f"_{note}_"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    for name in ORDER:
        path = RESULTS / f"{name}.json"
        if path.exists():
            print(render(name, json.loads(path.read_text())))
            print()
    for path in sorted(RESULTS.glob("versions_*.json")):
        doc = json.loads(path.read_text())
        print(f"#### before/after: `{doc['bench']} {' '.join(doc['args'])}` "
              f"(crossinfer / {doc['ref']}, median of {doc['rounds']} rounds)")
        print("\n| group | before | after | crossinfer el/s after / before |\n|---|---|---|---|")
        for g in doc["groups"]:
            speedup = g.get("speedup")
            print(f"| {g['group']} | {g['before']:.2f} | {g['after']:.2f} | "
                  f"{'' if speedup is None else f'{speedup:.2f}'} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
