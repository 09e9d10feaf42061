"""The Python examples run and print what they say (examples/python; ``make examples``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from crossinfer.demo import DemoModels

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "python"


def _run_example(name: str, models: DemoModels) -> str:
    env = {**os.environ, "CROSSINFER_DEMO_DIR": str(models.root), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=EXAMPLES, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_experiment_streaming_reports_every_window(models: DemoModels) -> None:
    """experiment_streaming.py: 1,797 digits at 20 per second of event time in 30 s
    fixed windows -> one report per window when it closes, holding exactly the
    window's digits (600, 600, 597: digit j arrives at j / 20 s), each with its
    arms, the comparison and the decision."""
    out = _run_example("experiment_streaming.py", models)
    windows = re.findall(r"^== window (\d+)s - (\d+)s$", out, re.MULTILINE)
    assert windows == [("0", "30"), ("30", "60"), ("60", "90")], out
    blocks = re.split(r"^== window .*$", out, flags=re.MULTILINE)[1:]
    routed = [int(re.search(r"Experiment live_ab: ([\d,]+) routed", b).group(1).replace(",", ""))
              for b in blocks]
    assert routed == [600, 600, 597], out
    for block in blocks:
        # per arm: results, failures, share; both arms' results add up to the window's
        arms = re.findall(r"^(control|treatment)\s+([\d,]+)\s+(\d+)\s", block, re.MULTILINE)
        assert [a for a, _, _ in arms] == ["control", "treatment"], block
        assert sum(int(n.replace(",", "")) for _, n, _ in arms) == routed[blocks.index(block)]
        assert all(f == "0" for _, _, f in arms), block
        assert re.search(r"^treatment - control: accuracy [+-]\d", block, re.MULTILINE), block
        assert re.search(r"^Decision: .*SRM (ok|FAILED) \(p=", block, re.MULTILINE), block
