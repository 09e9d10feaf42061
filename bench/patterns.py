"""Benchmark 2: A/B test and sequence with the torch MLP, crossinfer vs the
plain Beam patterns.

* ``ab-split``: half the elements to each of two MLPs. Plain Beam, as Beam's
  docs build it: ``Partition`` into two, a RunInference per part, ``Flatten``.
  crossinfer: ``ABTest`` with a seeded random 50/50 split.
* ``ab-mirror``: every element to both MLPs (2 results per element). Plain
  Beam: the same PCollection into two RunInference, ``Flatten``. crossinfer:
  ``ABTest`` with ``split: mirror``.
* ``sequence``: MLP 32-256-256-10 -> softmax -> MLP 10-64-10 -> argmax.
  Plain Beam: ``RunInference -> Map -> RunInference``; crossinfer: ``Sequence``.

The raw loop runs the same models on the same rows (batch 64) for reference.

    python -m bench.patterns --elements 100000
"""

from __future__ import annotations

import argparse
import random
import sys
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference

import crossinfer as ci
from bench import harness
from bench.harness import Variant
from bench.models import MLP_SIZES, STAGE2_SIZES, BenchModels, dataset, prepare
from bench.pipelines import SHARDS, Synthetic, check, count, run
from bench.variants import MLP_CLASS, Runner, apply_beam, beam_handler

FW = "pytorch"


def mlp_node(name: str, path: str, sizes: list[int], post: tuple[ci.Op, ...]) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="pytorch", format="state_dict", uri=path,
                        model_class=MLP_CLASS, model_params={"sizes": sizes}, postprocess=post)


# ------------------------------------------------------------------ raw


def _torch_mlp(path: str, sizes: list[int]) -> Any:
    import torch

    from crossinfer.models import MLP

    model = MLP(sizes)
    model.load_state_dict(torch.load(path))
    return model.eval()


def raw_pattern(kind: str, models: BenchModels, data: np.ndarray, batch: int) -> Runner:
    import torch

    a = _torch_mlp(models.path("mlp.pt"), MLP_SIZES)
    b = (_torch_mlp(models.path("mlp_stage2.pt"), STAGE2_SIZES) if kind == "sequence"
         else _torch_mlp(models.path("mlp_0.pt"), MLP_SIZES))
    half = len(data) // 2

    def once() -> None:
        with torch.inference_mode():
            for start in range(0, len(data), batch):
                x = torch.from_numpy(data[start:start + batch])
                if kind == "sequence":
                    b(torch.softmax(a(x), dim=1)).argmax(dim=1).numpy()
                elif kind == "ab-mirror":
                    a(x).argmax(dim=1).numpy()
                    b(x).argmax(dim=1).numpy()
                else:
                    (a if start < half else b)(x).argmax(dim=1).numpy()

    return once


# ------------------------------------------------------------------ plain Beam


class RandomArm:
    """Beam Partition fn: a seeded random 50/50 split."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rng: random.Random | None = None

    def __call__(self, element: Any, partitions: int) -> int:
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return 0 if self._rng.random() < 0.5 else 1


def _softmax(result: Any) -> Any:
    import torch

    return torch.softmax(result.inference, dim=0)


def beam_pattern(kind: str, models: BenchModels, n: int) -> Runner:
    out_count = 2 * n if kind == "ab-mirror" else n

    def build(p: beam.Pipeline) -> None:
        records = p | Synthetic(n)
        if kind == "sequence":
            out = (records
                   | "Input" >> beam.Map(lambda r: __import__("torch").from_numpy(r.features))
                   | "Stage1" >> RunInference(beam_handler(FW, models))
                   | "Softmax" >> beam.Map(_softmax)
                   | "Stage2" >> RunInference(_stage2_handler(models))
                   | "Post" >> beam.Map(lambda r: int(r.inference.argmax())))
        else:
            if kind == "ab-mirror":
                parts = [records, records]
            else:
                parts = records | beam.Partition(RandomArm(0), 2)
            paths = [models.path("mlp.pt"), models.path("mlp_0.pt")]
            arms = [apply_beam(parts[i], FW, models, label=f"Arm{i}", path=paths[i])
                    for i in range(2)]
            out = arms | beam.Flatten()
        count(out, "out")

    return lambda: check(run(build), out_count, "out")


def _stage2_handler(models: BenchModels) -> Any:
    from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

    from crossinfer.models import MLP

    return PytorchModelHandlerTensor(state_dict_path=models.path("mlp_stage2.pt"),
                                     model_class=MLP, model_params={"sizes": STAGE2_SIZES})


# ------------------------------------------------------------------ crossinfer


def crossinfer_spec(kind: str, models: BenchModels) -> ci.ABTestNode | ci.SequenceNode:
    argmax = (ci.Op("argmax"),)
    a = mlp_node("mlp_a", models.path("mlp.pt"), MLP_SIZES, argmax)
    if kind == "sequence":
        first = mlp_node("stage1", models.path("mlp.pt"), MLP_SIZES, (ci.Op("softmax"),))
        second = mlp_node("stage2", models.path("mlp_stage2.pt"), STAGE2_SIZES, argmax)
        return ci.SequenceNode(name="seq", stages=(first, second))
    b = mlp_node("mlp_b", models.path("mlp_0.pt"), MLP_SIZES, argmax)
    split = "mirror" if kind == "ab-mirror" else "random"
    return ci.ABTestNode(name="ab", split=split, seed=0,
                         arms=(ci.Arm("a", a, 50), ci.Arm("b", b, 50)))


def crossinfer_pattern(kind: str, models: BenchModels, n: int) -> Runner:
    spec = crossinfer_spec(kind, models)
    out_count = 2 * n if kind == "ab-mirror" else n

    def build(p: beam.Pipeline) -> None:
        out = p | Synthetic(n) | ci.Inference(spec)
        count(out.results, "out")
        count(out.failures, "failed")

    def once() -> dict[str, Any]:
        got = check(run(build), out_count, "out", "failed")
        if got["failed"]:
            raise RuntimeError(f"crossinfer reported {got['failed']} failures")
        return {"failures": 0}

    return once


KINDS = ("ab-split", "ab-mirror", "sequence")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=64, help="raw loop batch size")
    parser.add_argument("--patterns", default=",".join(KINDS))
    harness.common_args(parser, "patterns")
    args = parser.parse_args(argv)
    harness.apply_common(args)
    models = prepare()
    n = args.elements
    data = dataset(n, SHARDS)
    variants: list[Variant] = []
    for kind in [k for k in args.patterns.split(",") if k]:
        out = 2 * n if kind == "ab-mirror" else n
        variants += [
            Variant(f"raw loop (batch {args.batch})", kind, out,
                    raw_pattern(kind, models, data, args.batch), "raw"),
            Variant("plain Beam (docs pattern)", kind, out, beam_pattern(kind, models, n),
                    "beam", warm=beam_pattern(kind, models, 2_000)),
            Variant("crossinfer", kind, out, crossinfer_pattern(kind, models, n), "crossinfer",
                    warm=crossinfer_pattern(kind, models, 2_000)),
        ]
    print(f"patterns: {n:,} elements in (mirror: 2 results each), {args.repeats} repeats")
    measured = harness.measure(variants, args.repeats)
    targets = [harness.ratio_target(f"{m.group}: crossinfer / plain Beam", m, measured,
                                    "beam", 1.0) for m in measured if m.kind == "crossinfer"]
    harness.report(args.name, vars(args), measured, targets,
                   targets_heading="targets (no goal in issue 5 beyond per-element parity; "
                                   "shown at >= 1.0):")
    return 0


if __name__ == "__main__":
    sys.exit(main())
