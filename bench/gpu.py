"""Benchmark 5: GPU. The torch MLP and a larger MLP (1024-4096-4096-1024) on
CUDA: a raw CUDA loop vs crossinfer at the same batch size.

* ``raw``: the model on the GPU, host batches copied in, results copied out
  (as a pipeline must), batch ``--batch``.
* ``crossinfer batched``: ``BatchedInference`` on batch-native input of
  ``--batch`` rows per element, ``device: gpu``, ``max_batch_size`` = batch.
* ``crossinfer per-element``: ``Model`` on one row per element, same batching.

Needs CUDA; without it the command says so and exits 2.

    python -m bench.gpu --elements 200000 --batch 256
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import crossinfer as ci
from bench import harness
from bench.harness import Variant
from bench.models import BIG_MLP_SIZES, DIM, MLP_SIZES, BenchModels, dataset, prepare
from bench.pipelines import SHARDS, Synthetic
from bench.variants import MLP_CLASS, Runner, crossinfer_pipeline

MODELS = {"mlp": ("mlp.pt", MLP_SIZES), "big_mlp": ("big_mlp.pt", BIG_MLP_SIZES)}


def raw_cuda(models: BenchModels, name: str, n: int, batch: int) -> Runner:
    import torch

    from crossinfer.models import MLP

    file, sizes = MODELS[name]
    model = MLP(sizes)
    model.load_state_dict(torch.load(models.path(file)))
    model = model.eval().to("cuda")
    data = dataset(n, SHARDS, dim=sizes[0])

    def once() -> dict[str, Any]:
        with torch.inference_mode():
            for start in range(0, n, batch):
                x = torch.from_numpy(data[start:start + batch]).to("cuda", non_blocking=True)
                model(x).argmax(dim=1).cpu().numpy()
        torch.cuda.synchronize()
        return {}

    return once


def node(models: BenchModels, name: str, batch: int) -> ci.ModelNode:
    file, sizes = MODELS[name]
    return ci.ModelNode(name=name, framework="pytorch", format="state_dict",
                        uri=models.path(file), model_class=MLP_CLASS,
                        model_params={"sizes": sizes}, device="gpu",
                        batching=ci.Batching(max_batch_size=batch),
                        postprocess=(ci.Op("argmax"),))


def main(argv: list[str] | None = None) -> int:
    from crossinfer.patterns.batched import BatchedInference

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=200_000)
    parser.add_argument("--big-elements", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=256)
    harness.common_args(parser, "gpu")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench.gpu: CUDA is not available here (torch.cuda.is_available() is False); "
              "run it on a machine with an NVIDIA GPU")
        return 2
    harness.apply_common(args)
    models = prepare()
    variants: list[Variant] = []
    for name, n in (("mlp", args.elements), ("big_mlp", args.big_elements)):
        spec = node(models, name, args.batch)
        dim = MODELS[name][1][0]
        variants += [
            Variant(f"raw CUDA loop (batch {args.batch})", name, n,
                    raw_cuda(models, name, n, args.batch), "raw"),
            Variant("crossinfer BatchedInference", name, n, crossinfer_pipeline(
                lambda spec=spec: BatchedInference(spec), n,
                source=lambda n=n, dim=dim: Synthetic(n, dim=dim, batch=args.batch),
                weight=lambda row: len(row.inference)), "crossinfer"),
            Variant("crossinfer Model (per element)", name, n, crossinfer_pipeline(
                lambda spec=spec: ci.Model(spec), n,
                source=lambda n=n, dim=dim: Synthetic(n, dim=dim)), "crossinfer-per-element"),
        ]
    print(f"gpu: {torch.cuda.get_device_name()}; {args.repeats} repeats, interleaved")
    measured = harness.measure(variants, args.repeats)
    targets = [harness.ratio_target(f"{m.group}: crossinfer batched / raw CUDA loop", m,
                                    measured, "raw", 0.9)
               for m in measured if m.kind == "crossinfer"]
    harness.report(args.name, vars(args), measured, targets, refs=("raw",),
                   notes=[f"device: {torch.cuda.get_device_name()}",
                          f"input dim {DIM} (mlp), {BIG_MLP_SIZES[0]} (big_mlp)"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
