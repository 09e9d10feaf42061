"""Benchmark 4: ragged inputs.

``crossinfer.models:MeanPoolClassifier`` (any input length) on the same number
of elements, once with lengths drawn from 4..64 and once all of one length
(34, the mean of 4..64, so both runs carry the same number of values; both
sources slice rows of one length-64 array, so they cost the same). Plain
Beam RunInference is run on the ragged input too, to show what it does there
(it stacks the batch and fails: "stack expects each tensor to be equal size").

    python -m bench.ragged --elements 100000

``--decompose`` adds three variants that take the ragged cost apart: the same
ragged lengths arriving already grouped, in runs of 256 rows of one length
(batches of 256 of one shape leave at once: the cost of many shapes alone);
equal lengths in batches of 64 (the cost of smaller batches alone); and
ragged lengths in runs of 64 in batches of 64 (both, but no record held back).
What is left between the last and the ragged variant is the cost of holding
records back to group them.

``--held 16,24,32`` adds the ragged variant once per figure, with crossinfer
holding up to that many batches' worth of rows instead of
``HELD_BATCHES`` (8). Every variant's facts count the garbage collector's
full collections over all its rounds (``full_collections``): past some
number of held records they are what holding costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import sys
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

import crossinfer as ci
from bench import harness
from bench.harness import Variant
from bench.models import MEANPOOL_PARAMS, BenchModels, prepare
from bench.pipelines import Synthetic, count, run, warm_data
from bench.variants import Runner, crossinfer_pipeline

LOW, HIGH = 4, 64
EQUAL = (LOW + HIGH) // 2


def node(models: BenchModels) -> ci.ModelNode:
    return ci.ModelNode(name="meanpool", framework="pytorch", format="state_dict",
                        uri=models.path("meanpool.pt"),
                        model_class="crossinfer.models:MeanPoolClassifier",
                        model_params=MEANPOOL_PARAMS, postprocess=(ci.Op("argmax"),))


def beam_ragged(models: BenchModels, n: int) -> dict[str, Any]:
    """Plain Beam on ragged input: the error it stops with (expected)."""
    import torch
    from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

    from crossinfer.models import MeanPoolClassifier

    handler = PytorchModelHandlerTensor(state_dict_path=models.path("meanpool.pt"),
                                        model_class=MeanPoolClassifier,
                                        model_params=MEANPOOL_PARAMS)

    def build(p: beam.Pipeline) -> None:
        out = (p | Synthetic(n, ragged=(LOW, HIGH))
               | beam.Map(lambda r: torch.from_numpy(r.features)) | RunInference(handler))
        count(out, "out")

    beam_logger = logging.getLogger("apache_beam")
    level = beam_logger.level
    beam_logger.setLevel(logging.CRITICAL)  # the failure is expected: keep its log quiet
    try:
        run(build)
    except Exception as exc:  # the failure is the finding
        text = str(exc)
        marker = "stack expects each tensor to be equal size"
        return {"error": marker if marker in text else text.splitlines()[0][:200]}
    finally:
        beam_logger.setLevel(level)
    return {"error": None}


def _holding() -> Any:
    """The module whose ``HELD_BATCHES`` the blocks' assembler reads
    (``crossinfer.patterns.to_records`` in trees before the engine, for
    ``bench.versions``)."""
    try:
        from crossinfer.engine import assemble
    except ImportError:
        from crossinfer.patterns import to_records  # type: ignore[import-not-found]

        return to_records
    return assemble


def counting_collections(timed: Runner, held: int | None = None) -> Runner:
    """``timed`` with its full garbage collections counted over every round (the
    facts' ``full_collections``), and with ``held`` batches' worth of rows
    held back at most instead of ``HELD_BATCHES`` (:func:`_holding`; which
    each ``Assembler`` reads when its DoFn is set up, inside ``timed``)."""
    full = [0]

    def on_collection(phase: str, info: dict[str, int]) -> None:
        if phase == "stop" and info["generation"] == 2:
            full[0] += 1

    def once() -> dict[str, Any]:
        holding = _holding()
        default = holding.HELD_BATCHES
        if held is not None:
            holding.HELD_BATCHES = held
        gc.callbacks.append(on_collection)
        try:
            facts = timed() or {}
        finally:
            gc.callbacks.remove(on_collection)
            holding.HELD_BATCHES = default
        return {**facts, "full_collections": full[0]}

    return once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=100_000)
    parser.add_argument("--decompose", action="store_true",
                        help="also time the variants that take the ragged cost apart")
    parser.add_argument("--held", default="",
                        help="comma-separated batch counts: also time ragged input with "
                             "that many batches' worth of rows held back at most")
    harness.common_args(parser, "ragged")
    args = parser.parse_args(argv)
    harness.apply_common(args)
    models = prepare()
    n = args.elements
    spec = node(models)
    warm_data(n, ragged=(EQUAL, EQUAL))
    warm_data(n, ragged=(LOW, HIGH))
    def pipeline(lengths: tuple[int, int], *, runs: int | None = None,
                 batch: int | None = None) -> Any:
        node = spec if batch is None else dataclasses.replace(
            spec, batching=ci.Batching(max_batch_size=batch))

        def make(count: int) -> Any:
            return crossinfer_pipeline(lambda: ci.Model(node), count, source=lambda: Synthetic(
                count, ragged=lengths, runs=runs))
        return make

    def variant(name: str, kind: str, make: Any, held: int | None = None) -> Variant:
        return Variant(name, "meanpool", n, counting_collections(make(n), held), kind,
                       warm=make(2_000))

    # equal: the same source code path, every length EQUAL
    variants = [variant(f"equal length ({EQUAL})", "equal", pipeline((EQUAL, EQUAL))),
                variant(f"ragged ({LOW}..{HIGH})", "crossinfer", pipeline((LOW, HIGH)))]
    if args.decompose:
        variants += [
            variant(f"ragged ({LOW}..{HIGH}), in runs of 256", "runs",
                    pipeline((LOW, HIGH), runs=256)),
            variant(f"equal length ({EQUAL}), batches of 64", "equal-64",
                    pipeline((EQUAL, EQUAL), batch=64)),
            variant(f"ragged ({LOW}..{HIGH}), in runs of 64, batches of 64", "runs-64",
                    pipeline((LOW, HIGH), runs=64, batch=64)),
        ]
    for held in (int(h) for h in args.held.split(",") if h.strip()):
        variants.append(variant(f"ragged ({LOW}..{HIGH}), {held} batches held", f"held-{held}",
                                pipeline((LOW, HIGH)), held))
    print(f"ragged: {n:,} elements, {args.repeats} repeats, interleaved")
    measured = harness.measure(variants, args.repeats)
    beam_result = beam_ragged(models, min(n, 2_000))
    failures = measured[1].facts.get("failures")
    targets = [harness.ratio_target("ragged / equal-length elements/s", measured[1], measured,
                                    "equal", 0.8),
               harness.target("ragged failures", failures, 0, op="==")]
    notes = [f"plain Beam RunInference on the ragged input: {beam_result['error'] or 'ran'}",
             "full garbage collections over all rounds: " + ", ".join(
                 f"{m.name} {m.facts.get('full_collections', 0)}" for m in measured)]
    harness.report(args.name, vars(args), measured, targets, refs=("equal",), notes=notes,
                   details="\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
