"""The three ways to run one model, for each framework: a raw framework loop,
plain Beam RunInference (Beam's own handler, as Beam's docs use it) and
crossinfer. Each function returns a callable that runs once and returns facts.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import RunInference

import crossinfer as ci
from bench.harness import THREADS, ort_session_options
from bench.models import MLP_SIZES, BenchModels
from bench.pipelines import Synthetic, check, count, run

FRAMEWORKS = ("sklearn", "pytorch", "onnx")
MLP_CLASS = "crossinfer.models:MLP"

Runner = Callable[[], dict[str, Any] | None]


# ------------------------------------------------------------------ raw loops


def model_step(framework: str, models: BenchModels) -> Callable[[np.ndarray], np.ndarray]:
    """The framework's own call on one batch (n, 32) float32 -> labels (n,):
    what the raw loop runs, and what ``bench.between_calls`` times."""
    if framework == "sklearn":
        with open(models.path("lr.pkl"), "rb") as f:
            lr = pickle.load(f)

        def step(x: np.ndarray) -> np.ndarray:
            return lr.predict(x)
    elif framework == "pytorch":
        import torch

        from crossinfer.models import MLP

        mlp = MLP(MLP_SIZES)
        mlp.load_state_dict(torch.load(models.path("mlp.pt")))
        mlp.eval()

        def step(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return mlp(torch.from_numpy(x)).argmax(dim=1).numpy()
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(models.path("mlp.onnx"), ort_session_options(),
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def step(x: np.ndarray) -> np.ndarray:
            return session.run(None, {name: x})[0].argmax(axis=1)

    return step


def raw_loop(framework: str, models: BenchModels, data: np.ndarray, batch: int) -> Runner:
    """Call the framework directly on slices of a ready array (the limit)."""
    step = model_step(framework, models)

    def once() -> dict[str, Any]:
        done = 0
        for start in range(0, len(data), batch):
            done += len(step(data[start:start + batch]))
        assert done == len(data)
        return {}

    return once


# ------------------------------------------------------------- plain Beam


def beam_handler(framework: str, models: BenchModels, path: str | None = None) -> Any:
    """Beam's own handler for the framework, configured as Beam's docs do."""
    if framework == "sklearn":
        from apache_beam.ml.inference.sklearn_inference import SklearnModelHandlerNumpy

        return SklearnModelHandlerNumpy(model_uri=path or models.path("lr.pkl"))
    if framework == "pytorch":
        from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

        from crossinfer.models import MLP

        return PytorchModelHandlerTensor(state_dict_path=path or models.path("mlp.pt"),
                                         model_class=MLP, model_params={"sizes": MLP_SIZES})
    return _beam_onnx_handler(path or models.path("mlp.onnx"), THREADS[0])


def _beam_onnx_handler(uri: str, threads: int) -> Any:
    from apache_beam.ml.inference.onnx_inference import OnnxModelHandlerNumpy

    class OnnxHandler(OnnxModelHandlerNumpy):
        """Beam's ONNX handler with this run's thread count. ONNX Runtime's
        SessionOptions cannot be pickled, so they cannot be given to Beam's
        handler at construction; they are made in load_model, on the worker."""

        def load_model(self) -> Any:
            if threads > 0:
                import onnxruntime as ort

                self._session_options = ort.SessionOptions()
                self._session_options.intra_op_num_threads = threads
            return super().load_model()

    return OnnxHandler(model_uri=uri, providers=["CPUExecutionProvider"])


def to_beam_input(framework: str) -> Callable[[Any], Any]:
    """A record's features as the input type of Beam's handler."""
    if framework == "pytorch":
        import torch

        return lambda r: torch.from_numpy(r.features)
    return lambda r: r.features


def beam_postprocess(framework: str) -> Callable[[Any], int]:
    if framework == "sklearn":
        return lambda r: int(r.inference)
    return lambda r: int(r.inference.argmax())


def apply_beam(pcoll: beam.PCollection, framework: str, models: BenchModels,
               label: str = "Beam", path: str | None = None) -> beam.PCollection:
    """The plain Beam pipeline for one element per row: to the handler's
    input type, RunInference, post-processing in a Map."""
    return (pcoll
            | f"{label}Input" >> beam.Map(to_beam_input(framework))
            | f"{label}RunInference" >> RunInference(beam_handler(framework, models, path))
            | f"{label}Post" >> beam.Map(beam_postprocess(framework)))


def beam_pipeline(framework: str, models: BenchModels, n: int, *,
                  source_batch: int | None = None) -> Runner:
    """Plain Beam; with ``source_batch`` the source carries batches, which
    plain RunInference can only take one row at a time (FlatMap to rows,
    then RunInference batches them again)."""
    def build(p: beam.Pipeline) -> None:
        records = p | Synthetic(n, batch=source_batch)
        if source_batch is not None:
            records = records | "Unbatch" >> beam.FlatMap(_unbatch)
        count(apply_beam(records, framework, models), "out")

    return lambda: check(run(build), n, "out")


def _unbatch(record: beam.Row) -> list[beam.Row]:
    return [beam.Row(id=record.id + i, features=x) for i, x in enumerate(record.features)]


# ------------------------------------------------------------- the runner's limit


def empty_pipeline(n: int) -> Runner:
    """The same source and the same sink as every per-element pipeline, and
    nothing between them: the runner's own cost per element, the limit of
    any inference pipeline on this runner."""
    def build(p: beam.Pipeline) -> None:
        count(p | Synthetic(n), "out")

    return lambda: check(run(build), n, "out")


# ------------------------------------------------------------- crossinfer


def crossinfer_node(framework: str, models: BenchModels, name: str = "m",
                    path: str | None = None, **extra: Any) -> ci.ModelNode:
    if framework == "sklearn":
        return ci.ModelNode(name=name, framework="sklearn", format="skops",
                            uri=path or models.path("lr.skops"), method="predict", **extra)
    if framework == "pytorch":
        return ci.ModelNode(name=name, framework="pytorch", format="state_dict",
                            uri=path or models.path("mlp.pt"), model_class=MLP_CLASS,
                            model_params={"sizes": MLP_SIZES},
                            postprocess=(ci.Op("argmax"),), **extra)
    return ci.ModelNode(name=name, framework="onnx", uri=path or models.path("mlp.onnx"),
                        postprocess=(ci.Op("argmax"),), **extra)


def crossinfer_pipeline(transform: Callable[[], beam.PTransform], n: int, *,
                        source: Callable[[], beam.PTransform] | None = None,
                        weight: Callable[[Any], int] | None = None) -> Runner:
    """The source's records through a crossinfer transform; every element
    must come out as a result (failures are counted and reported)."""
    def build(p: beam.Pipeline) -> None:
        out = (p | (source() if source else Synthetic(n))) | transform()
        count(out.results, "out", weight)
        count(out.failures, "failed", weight)

    def once() -> dict[str, Any]:
        got = check(run(build), n, "out", "failed")
        if got["failed"]:
            raise RuntimeError(f"crossinfer reported {got['failed']} failures")
        return {"failures": got["failed"]}

    return once


def engine_loop(framework: str, models: BenchModels, data: np.ndarray, batch: int) -> Runner:
    """crossinfer's own steps without Beam: the raw loop's slices, each as a
    batch-native element (``beam.Row(id, features=<the slice>)``), read into
    blocks, run by the node's runner (model call, post-processing, the
    non-finite check) and written as result rows, in a plain loop, by the
    same objects ``BatchedInference`` hands Beam. What the engine costs
    outside a runner: against the raw loop at the same batch size, the most a
    pipeline could reach if Beam's own steps, its fixed cost and its effect on
    the model calls were free."""
    from crossinfer.handlers.node_handler import Arrival
    from crossinfer.handlers.registry import model_handler
    from crossinfer.patterns.batched import BatchedInference
    from crossinfer.patterns.context import child_path
    from crossinfer.patterns.edges import ToBlocks, ToOutputs

    node = crossinfer_node(framework, models)
    transform = BatchedInference(node)
    # The transform's own settings and ways in and out (its reader, block size,
    # keys, timing, load policy and format), as Inference.expand and
    # expand_model build them for bounded input in the global window.
    to_blocks = ToBlocks(transform._reader(), transform._block_rows(),
                         transform.io.features_field, transform.keyed, transform.timing)
    to_blocks.setup()
    handler = model_handler(node, transform.policy, child_path("", node.name),
                            arrival=Arrival.BLOCKS, bounded=True)
    model = handler.load_model()
    to_outputs = ToOutputs(transform._format())
    elements = [beam.Row(id=start, features=data[start:start + batch])
                for start in range(0, len(data), batch)]

    def once() -> dict[str, Any]:
        results = 0
        to_blocks.start_bundle()
        for element in elements:
            for block in to_blocks.process(element):
                for done in handler.run_inference(block, model):
                    results += len(to_outputs.process(done))
        for last in to_blocks.finish_bundle():
            for done in handler.run_inference(last.value, model):
                results += len(to_outputs.process(done))
        assert results == len(elements), (results, len(elements))  # a result row per element
        return {}

    return once
