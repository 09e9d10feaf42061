"""Benchmark 1: one model, per-element and batch-native input.

For a scikit-learn LogisticRegression, a torch MLP 32-256-256-10 and its ONNX
export, on the same synthetic rows, side by side in one run:

* ``empty``: the same source and sink with nothing between them (no
  inference): the runner's own per-element cost, the limit per element;
* ``raw``: the framework called directly on slices of a ready array (batch 64);
* ``beam``: plain Beam RunInference with Beam's own handler, one row per element;
* ``crossinfer``: ``crossinfer.Model``, one Row per element.

Batch-native input (``--batched``, on by default): the source carries records
of ``--source-batch`` rows (``features`` a 2-D array). Plain Beam must take
them apart (FlatMap) and batch them again; crossinfer's ``BatchedInference``
runs them as batches, joined up to its max_batch_size (256) rows per model
call (an element of more rows runs alone, as one call). References: the raw
loop at the source's batch size (the target's reference: crossinfer's model
calls have that many rows when it is 256 or more) and at 256 rows.

Targets (issue #16): per element, crossinfer >= 1.5x plain Beam (the table
also gives each variant's share of the empty pipeline, ``x empty``);
batch-native, crossinfer >= 0.8x the raw loop at the source's batch size.

    python -m bench.single_model --elements 100000
    python -m bench.single_model --no-per-element --source-batch 4096
"""

from __future__ import annotations

import argparse
import sys

import crossinfer as ci
from bench import harness
from bench.harness import Variant
from bench.models import dataset, prepare
from bench.pipelines import SHARDS, Synthetic
from bench.variants import (
    FRAMEWORKS,
    beam_pipeline,
    crossinfer_node,
    crossinfer_pipeline,
    empty_pipeline,
    raw_loop,
)

WARM = 2_000


def per_element_variants(models, data, frameworks, n: int, batch: int) -> list[Variant]:
    variants = []
    for fw in frameworks:
        node = crossinfer_node(fw, models)
        variants += [
            Variant("empty pipeline (source -> sink)", fw, n, empty_pipeline(n), "empty",
                    warm=empty_pipeline(WARM)),
            Variant(f"raw loop (batch {batch})", fw, n, raw_loop(fw, models, data, batch), "raw"),
            Variant("plain Beam RunInference", fw, n, beam_pipeline(fw, models, n), "beam",
                    warm=beam_pipeline(fw, models, WARM)),
            Variant("crossinfer Model", fw, n,
                    crossinfer_pipeline(lambda node=node: ci.Model(node), n), "crossinfer",
                    warm=crossinfer_pipeline(lambda node=node: ci.Model(node), WARM)),
        ]
    return variants


def batched_variants(models, data, frameworks, n: int, source_batch: int,
                     beam: bool = True) -> list[Variant]:
    from crossinfer.handlers.node_handler import DEFAULT_MAX_BATCH
    from crossinfer.patterns.batched import BatchedInference

    def crossinfer_batched(node, count: int):
        return crossinfer_pipeline(lambda: BatchedInference(node), count,
                                   source=lambda: Synthetic(count, batch=source_batch),
                                   weight=lambda row: len(row.inference))

    variants = []
    for fw in frameworks:
        node = crossinfer_node(fw, models)
        group = f"{fw}/batched"
        variants += [
            Variant(f"raw loop (batch {source_batch})", group, n,
                    raw_loop(fw, models, data, source_batch), "raw"),
            Variant(f"raw loop (batch {DEFAULT_MAX_BATCH})", group, n,
                    raw_loop(fw, models, data, DEFAULT_MAX_BATCH), "raw-model-batch"),
            Variant("crossinfer BatchedInference", group, n, crossinfer_batched(node, n),
                    "crossinfer", warm=crossinfer_batched(node, WARM)),
        ]
        if beam:
            variants.insert(-1, Variant(
                "plain Beam (FlatMap + RunInference)", group, n,
                beam_pipeline(fw, models, n, source_batch=source_batch), "beam",
                warm=beam_pipeline(fw, models, WARM, source_batch=source_batch)))
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=64, help="raw loop batch size")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--batched", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure batch-native input")
    parser.add_argument("--per-element", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--source-batch", type=int, default=64,
                        help="rows per element of the batch-native source")
    parser.add_argument("--batched-repeats", type=int, default=3,
                        help="rounds for the batch-native variants (plain Beam takes ~40 s "
                             "a run there)")
    parser.add_argument("--batched-beam", action=argparse.BooleanOptionalAction, default=True,
                        help="also run plain Beam on batch-native input (the raw loop is "
                             "the target's reference; plain Beam is the slowest variant)")
    parser.add_argument("--batched-elements", type=int, default=1_000_000,
                        help="rows for the batch-native runs (more rows than per element: a "
                             "pipeline's fixed start-up cost must not dominate)")
    harness.common_args(parser, "single_model")
    args = parser.parse_args(argv)
    harness.apply_common(args)

    frameworks = [f for f in args.frameworks.split(",") if f]
    models = prepare()
    n = args.elements
    data = dataset(n, SHARDS)
    print(f"single model: {n:,} elements per element ({args.repeats} rounds), "
          f"{args.batched_elements:,} rows batch-native ({args.batched_repeats} rounds)")
    measured: list[harness.Measured] = []
    if args.per_element:
        measured += harness.measure(
            per_element_variants(models, data, frameworks, n, args.batch), args.repeats)
    if args.batched:
        nb = args.batched_elements
        measured += harness.measure(
            batched_variants(models, dataset(nb, SHARDS), frameworks, nb, args.source_batch,
                             args.batched_beam),
            args.batched_repeats)
    targets = []
    for m in measured:
        if m.kind != "crossinfer":
            continue
        if m.group.endswith("/batched"):
            targets.append(harness.ratio_target(f"{m.group}: crossinfer / raw loop", m,
                                                measured, "raw", 0.8))
            targets.append(harness.ratio_target(f"{m.group}: crossinfer / plain Beam", m,
                                                measured, "beam", 3.0))
        else:
            targets.append(harness.ratio_target(f"{m.group}: crossinfer / plain Beam", m,
                                                measured, "beam", 1.5))
    harness.report(args.name, vars(args), measured, targets, refs=("raw", "beam", "empty"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
