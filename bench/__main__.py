"""``python -m bench``: every benchmark, one after the other, then the chart.

Each benchmark runs in a process of its own (a long-lived process's heap makes
Python's garbage collections dearer for whatever runs late). ``--quick``
shrinks every benchmark (a smoke run, not figures). The GPU benchmark runs
only where CUDA is available.
"""

from __future__ import annotations

import subprocess
import sys

from bench import chart

BENCHMARKS = ("single_model", "xlang", "patterns", "keyed", "ragged", "experiments", "gpu",
              "flink")
QUICK = {
    "single_model": ["--elements", "5000", "--batched-elements", "20000", "--repeats", "1",
                     "--batched-repeats", "1"],
    "xlang": ["--elements", "5000", "--repeats", "1"],
    "patterns": ["--elements", "5000", "--repeats", "1"],
    "keyed": ["--elements", "5000", "--beam-elements", "600", "--repeats", "1"],
    "ragged": ["--elements", "5000", "--repeats", "1"],
    "experiments": ["--elements", "5000", "--repeats", "1"],
    "gpu": ["--elements", "5000", "--big-elements", "2000", "--repeats", "1"],
    "flink": ["--elements", "20000", "--repeats", "1"],
}
#: Arguments of the full run beyond each benchmark's defaults.
FULL = {"ragged": ["--decompose"]}


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    failed = []
    for name in BENCHMARKS:
        print(f"\n===== bench.{name}", flush=True)
        args = QUICK[name] if quick else FULL.get(name, [])
        rc = subprocess.call([sys.executable, "-W", "ignore", "-m", f"bench.{name}", *args])
        if rc not in (0, 2):  # 2: bench.gpu without CUDA
            failed.append(name)
    print("\n===== bench.chart", flush=True)
    chart.main([])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
