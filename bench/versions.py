"""Before/after: run a benchmark against two crossinfer source trees, alternately.

Each round runs the benchmark once per tree (a subprocess with that tree first
on ``PYTHONPATH``), so both trees see the same machine load; what is compared
is each run's own ratio of crossinfer to plain Beam (or raw), never absolute
times across processes.

    git archive HEAD python | tar -x -C /tmp/before
    python -m bench.versions --before /tmp/before/python --rounds 3 -- \\
        single_model --elements 50000 --no-batched
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_once(tree: str, bench: str, args: list[str], out: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([tree, str(HERE.parent)])
    cmd = [sys.executable, "-m", f"bench.{bench}", *args, "--repeats", "1",
           "--name", out.stem]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    path = HERE / "results" / f"{out.stem}.json"
    doc = json.loads(path.read_text())
    path.unlink()
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="python/ folder of the old tree")
    parser.add_argument("--after", default=str(HERE.parent / "python"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ref", default="beam", help="ratio reference kind: beam or raw")
    parser.add_argument("--name", default="versions")
    parser.add_argument("bench")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    args = [a for a in ns.args if a != "--"]
    ratios: dict[tuple[str, str], list[float]] = {}
    rates: dict[tuple[str, str], list[float]] = {}
    runs: list[dict] = []  # every run's rows, for figures the summary leaves out
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ns.rounds):
            for label, tree in (("before", ns.before), ("after", ns.after)):
                doc = run_once(tree, ns.bench, args, Path(tmp) / f"_versions_{label}")
                runs.append({"round": r + 1, "tree": label, "load_average": os.getloadavg(),
                             "rows": doc["rows"]})
                for row in doc["rows"]:
                    value = row.get(f"ratio_to_{ns.ref}")
                    if row["kind"] == "crossinfer" and value is not None:
                        ratios.setdefault((row["group"], label), []).append(value)
                        rates.setdefault((row["group"], label), []).append(
                            row["elements_per_s"])
                print(f"round {r + 1} {label} done", flush=True)
    groups = sorted({g for g, _ in ratios})
    summary = []
    print(f"\ncrossinfer / {ns.ref} (median of {ns.rounds} rounds, each measured in one run); "
          "speed-up: crossinfer's elements/s after / before, paired by round")
    print(f"{'group':<20}{'before':>10}{'after':>10}{'speed-up':>10}")
    for g in groups:
        b = statistics.median(ratios.get((g, "before"), [float("nan")]))
        a = statistics.median(ratios.get((g, "after"), [float("nan")]))
        speedup = statistics.median(x / y for x, y in zip(
            rates.get((g, "after"), []), rates.get((g, "before"), []), strict=False)) \
            if rates.get((g, "before")) else float("nan")
        summary.append({"group": g, "before": b, "after": a, "speedup": speedup,
                        "before_all": ratios.get((g, "before")),
                        "after_all": ratios.get((g, "after"))})
        print(f"{g:<20}{b:>10.2f}{a:>10.2f}{speedup:>10.2f}")
    out = HERE / "results" / f"{ns.name}.json"
    out.write_text(json.dumps({"bench": ns.bench, "args": args, "ref": ns.ref,
                               "rounds": ns.rounds, "groups": summary, "runs": runs},
                              indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
