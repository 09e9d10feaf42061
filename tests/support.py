"""Test support: collect pipeline outputs, count live models.

Beam pickles DoFns, so a closure over a local list would fill a copy; these
classes live in an importable module, which Beam pickles by reference, and the
FnApiRunner runs in this process - the store is the real one.
"""

from __future__ import annotations

import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

STORE: dict[str, list[Any]] = defaultdict(list)
_COUNTER = [0]


class Collect:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, value: Any) -> None:
        STORE[self.name].append(value)


def run(rows: Iterable[Any], transform: beam.PTransform, runner: str = "FnApiRunner",
        options: Any = None) -> tuple[list[Any], list[Any], Any]:
    """Run ``rows | transform`` and return (results, failures, pipeline result)."""
    _COUNTER[0] += 1
    tag = f"run{_COUNTER[0]}"
    pipeline = beam.Pipeline(runner=runner, options=options)
    # Elements travel inside the DoFn rather than through Create's inferred
    # coder: the bad-input tests mix Rows of different shapes in one PCollection.
    elements = list(rows)
    out = (pipeline | beam.Create(range(len(elements)))
           | "Elements" >> beam.Map(_Lookup(elements)).with_output_types(Any) | transform)
    _ = out.results | "CollectResults" >> beam.Map(Collect(f"{tag}/results"))
    _ = out.failures | "CollectFailures" >> beam.Map(Collect(f"{tag}/failures"))
    result = pipeline.run()
    result.wait_until_finish()
    return STORE.pop(f"{tag}/results", []), STORE.pop(f"{tag}/failures", []), result


class _Lookup:
    def __init__(self, elements: list[Any]) -> None:
        self.elements = elements

    def __call__(self, index: int) -> Any:
        return self.elements[index]


def metric(result: Any, namespace: str, name: str, kind: str = "counters") -> Any:
    """The committed value of one metric (summed over steps), or None."""
    from apache_beam.metrics.metric import MetricsFilter

    found = result.metrics().query(MetricsFilter().with_namespace(namespace).with_name(name))
    values = [m.committed for m in found[kind]]
    if not values:
        return None
    if kind == "counters":
        return sum(values)
    return values


# ------------------------------------------------------------ live models


class LiveModels:
    """Counts models alive right now (weakref finalisers) and the peak."""

    lock = threading.Lock()
    generation = 0
    live = 0
    peak = 0
    loads: dict[str, int] = defaultdict(int)
    batch_sizes: dict[str, list[int]] = defaultdict(list)

    @classmethod
    def reset(cls) -> None:
        with cls.lock:
            cls.generation += 1  # models of earlier pipelines may die later: ignore them
            cls.live = cls.peak = 0
            cls.loads.clear()
            cls.batch_sizes.clear()

    @classmethod
    def born(cls, model: Any, name: str) -> None:
        with cls.lock:
            cls.live += 1
            cls.peak = max(cls.peak, cls.live)
            cls.loads[name] += 1
            generation = cls.generation
        weakref.finalize(model, cls._died, generation)

    @classmethod
    def _died(cls, generation: int) -> None:
        with cls.lock:
            if generation == cls.generation:
                cls.live -= 1


class AffineModel:
    """y = x * scale + offset, per element; raises on a poisoned value."""

    def __init__(self, scale: float, offset: float, poison: float | None) -> None:
        self.scale = scale
        self.offset = offset
        self.poison = poison
        self.weights = np.zeros(1 << 16)  # something worth freeing

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.poison is not None and np.any(batch == self.poison):
            raise ValueError(f"poisoned input {self.poison}")
        return batch * self.scale + self.offset


class CountingHandler(ModelHandler[np.ndarray, PredictionResult, AffineModel]):
    """A custom handler whose models are counted while alive."""

    def __init__(self, name: str, scale: float = 1.0, offset: float = 0.0,
                 poison: float | None = None) -> None:
        super().__init__()
        self.name = name
        self.scale = scale
        self.offset = offset
        self.poison = poison

    def load_model(self) -> AffineModel:
        model = AffineModel(self.scale, self.offset, self.poison)
        LiveModels.born(model, self.name)
        return model

    def run_inference(self, batch: Any, model: AffineModel,
                      inference_args: dict[str, Any] | None = None) -> list[PredictionResult]:
        LiveModels.batch_sizes[self.name].append(len(batch))
        out = model(np.stack(batch))
        return [PredictionResult(x, y) for x, y in zip(batch, out, strict=False)]


def only(values: Iterable[Any], predicate: Callable[[Any], bool]) -> list[Any]:
    return [v for v in values if predicate(v)]
