"""Benchmark 3: keyed models. 6 torch MLPs, keys round-robin, at most 2 resident.

* ``plain Beam``: ``KeyedModelHandler`` with ``max_models_per_worker_hint=2``,
  no GroupByKey (keys arrive round-robin, as they come).
* ``plain Beam + GroupByKey``: the remedy in Beam's docs: a GroupByKey on the
  key before RunInference, so a key's elements arrive together.
* ``crossinfer``: ``Keyed`` with ``max_models_per_worker: 2`` (it groups by
  model itself).

Model loads are counted: for Beam by a handler that counts its
``load_model`` calls (in this process: the FnApiRunner runs here), for crossinfer from its
``crossinfer/<node>`` ``model_loads`` metric. Plain Beam without a
GroupByKey reloads models for most batches and is far slower; it runs on
``--beam-elements`` elements (default 5,000: loads and elements/s are what
is compared, and its rate does not depend on the count).

    python -m bench.keyed --elements 100000
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, KeyModelMapping, RunInference
from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

import crossinfer as ci
from bench import harness
from bench.harness import Variant
from bench.models import KEYED_MODELS, MLP_SIZES, BenchModels, prepare
from bench.patterns import mlp_node
from bench.pipelines import Synthetic, check, count, counter, run, warm_data
from bench.variants import Runner

BOUND = 2
NODE = "keyed"


class _Loads:
    """Beam loads keyed models inside its MultiProcessShared machinery, where no
    metrics context is active; the FnApiRunner runs in this process, so a
    process-wide count sees every load."""

    lock = threading.Lock()
    count = 0


class CountingTorchHandler(PytorchModelHandlerTensor):
    """Beam's PyTorch handler, counting its model loads."""

    def load_model(self) -> Any:
        with _Loads.lock:
            _Loads.count += 1
        return super().load_model()


def beam_keyed_handler(models: BenchModels) -> KeyedModelHandler:
    from crossinfer.models import MLP

    return KeyedModelHandler(
        [KeyModelMapping([f"k{i}"], CountingTorchHandler(
            state_dict_path=models.path(f"mlp_{i}.pt"), model_class=MLP,
            model_params={"sizes": MLP_SIZES})) for i in range(KEYED_MODELS)],
        max_models_per_worker_hint=BOUND)


def _keyed_tensor(record: Any) -> tuple[str, Any]:
    import torch

    return record.key, torch.from_numpy(record.features)


def _ungroup(group: tuple[str, Any]) -> list[tuple[str, Any]]:
    import torch

    key, features = group
    return [(key, torch.from_numpy(x)) for x in features]


def beam_keyed(models: BenchModels, n: int, group: bool) -> Runner:
    def build(p: beam.Pipeline) -> None:
        records = p | Synthetic(n, keys=KEYED_MODELS)
        if group:
            keyed = (records
                     | "ByKey" >> beam.Map(lambda r: (r.key, r.features))
                     | beam.GroupByKey()
                     | "Ungroup" >> beam.FlatMap(_ungroup))
        else:
            keyed = records | "Keyed" >> beam.Map(_keyed_tensor)
        out = (keyed | RunInference(beam_keyed_handler(models))
               | "Post" >> beam.Map(lambda kv: int(kv[1].inference.argmax())))
        count(out, "out")

    def once() -> dict[str, Any]:
        before = _Loads.count
        result = run(build)
        check(result, n, "out")
        return {"model_loads": _Loads.count - before}

    return once


def crossinfer_keyed(models: BenchModels, n: int) -> Runner:
    routes = tuple(ci.Route((f"k{i}",), mlp_node(f"m{i}", models.path(f"mlp_{i}.pt"),
                                                 MLP_SIZES, (ci.Op("argmax"),)))
                   for i in range(KEYED_MODELS))
    spec = ci.KeyedNode(name=NODE, routes=routes, max_models_per_worker=BOUND)

    def build(p: beam.Pipeline) -> None:
        out = p | Synthetic(n, keys=KEYED_MODELS) | ci.Keyed(spec)
        count(out.results, "out")
        count(out.failures, "failed")

    def once() -> dict[str, Any]:
        result = run(build)
        got = check(result, n, "out", "failed")
        if got["failed"]:
            raise RuntimeError(f"crossinfer reported {got['failed']} failures")
        return {"model_loads": counter(result, "model_loads", f"crossinfer/{NODE}")}

    return once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=100_000)
    parser.add_argument("--beam-elements", type=int, default=5_000,
                        help="elements for plain Beam without a GroupByKey (it thrashes)")
    harness.common_args(parser, "keyed")
    args = parser.parse_args(argv)
    harness.apply_common(args)
    models = prepare()
    n, small = args.elements, min(args.beam_elements, args.elements)
    warm_data(n)
    warm_data(small)
    warm = 1_200
    variants = [
        Variant("plain Beam KeyedModelHandler", "keyed", small,
                beam_keyed(models, small, group=False), "beam-nogbk",
                warm=beam_keyed(models, warm, group=False)),
        Variant("plain Beam + GroupByKey", "keyed", n, beam_keyed(models, n, group=True),
                "beam", warm=beam_keyed(models, warm, group=True)),
        Variant("crossinfer Keyed", "keyed", n, crossinfer_keyed(models, n), "crossinfer",
                warm=crossinfer_keyed(models, warm)),
    ]
    print(f"keyed: {KEYED_MODELS} models, keys round-robin, bound {BOUND}; {n:,} elements "
          f"({small:,} for plain Beam without a GroupByKey), {args.repeats} repeats")
    measured = harness.measure(variants, args.repeats)
    loads = {m.kind: m.facts.get("model_loads") for m in measured}
    targets = [
        harness.target("crossinfer model loads == number of models", loads["crossinfer"],
                       KEYED_MODELS, op="=="),
        harness.ratio_target("crossinfer / plain Beam + GroupByKey elements/s", measured[2],
                             measured, "beam", 1.0),
    ]
    harness.report(args.name, vars(args), measured, targets, refs=("beam", "beam-nogbk"),
                   details="model loads (last run): " + ", ".join(
                       f"{m.name}: {m.facts.get('model_loads')} for {m.elements:,} elements"
                       for m in measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())
