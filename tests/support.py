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
import torch
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


class DictHandler(ModelHandler[np.ndarray, PredictionResult, AffineModel]):
    """A custom handler whose per-element result is a dict: ``same`` (x) and
    ``double`` (2x)."""

    def load_model(self) -> AffineModel:
        return AffineModel(1.0, 0.0, None)

    def run_inference(self, batch: Any, model: AffineModel,
                      inference_args: dict[str, Any] | None = None) -> list[PredictionResult]:
        out = model(np.stack(batch))
        return [PredictionResult(x, {"same": y, "double": 2 * y})
                for x, y in zip(batch, out, strict=True)]


class ArgsHandler(ModelHandler[np.ndarray, PredictionResult, AffineModel]):
    """A custom handler whose call takes one keyword argument, ``factor``:
    y = x * factor. Any other argument raises as a Python call does."""

    def load_model(self) -> AffineModel:
        return AffineModel(1.0, 0.0, None)

    def run_inference(self, batch: Any, model: AffineModel,
                      inference_args: dict[str, Any] | None = None) -> list[PredictionResult]:
        def call(x: np.ndarray, factor: float = 1.0) -> np.ndarray:
            return model(x) * factor

        out = call(np.stack(batch), **(inference_args or {}))
        return [PredictionResult(x, y) for x, y in zip(batch, out, strict=True)]


def only(values: Iterable[Any], predicate: Callable[[Any], bool]) -> list[Any]:
    return [v for v in values if predicate(v)]


# ------------------------------------------------------------ float tolerances


#: Cancellation allowance: how much larger ``sum|a_i * b_i|`` of a model's dot
#: products may be than their result (at least 1). Measured on the models the
#: tests use by tests/test_tolerances.py (the digits MLP's output layer: ~56).
CANCELLATION = 64


def float_tolerance(dtype: Any = np.float32, *, terms: int = 1, layers: int = 1,
                    scale: float = CANCELLATION) -> dict[str, float]:
    """``rtol`` and ``atol`` (keywords of ``np.testing.assert_allclose``) for
    one float computation done twice with other summation orders: in other
    batch compositions, by other BLAS kernels, on another CPU.

    Where the bound comes from: a dot product of ``n`` terms computed in
    floating point is within ``gamma_n * sum|a_i * b_i|`` of the exact value,
    ``gamma_n = n*u / (1 - n*u)``, ``u = eps/2`` the unit roundoff (Higham,
    *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5), for
    any order of summation. Two such results differ by at most ``2*gamma_n ~=
    n*eps`` times ``sum|a_i * b_i|``, which is at most ``scale`` times
    ``max(1, |result|)`` (:data:`CANCELLATION`). Each of ``layers`` layers
    adds its own rounding to what the earlier ones pass on, so the bound is
    multiplied by ``layers``; element-wise steps (a bias, softmax, a scale op)
    add a few ``eps`` each, well inside it, and softmax shrinks absolute errors
    (``|dp| <= max|dz| / 2``). The bound serves as ``rtol`` and as ``atol``
    (for values near zero).

    Use ``terms`` = the longest reduction (a layer's fan-in: 64 for the
    digits models' first layer), ``layers`` = the number of layers.
    """
    bound = float(np.finfo(dtype).eps) * terms * layers * scale
    return {"rtol": bound, "atol": bound}


#: Any digits model or sequence of them (64 inputs, at most 3 layers: PCA then
#: the 16-32-10 MLP), in float32.
DIGITS_TOL = float_tolerance(np.float32, terms=64, layers=3)


def assert_same_label(label: int, expected: int, probabilities: Any, atol: float) -> None:
    """Labels from argmax agree, or the two candidates' scores are within
    ``atol`` (a near tie that other rounding may break either way)."""
    if label != expected:
        p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        assert abs(p[label] - p[expected]) <= 2 * atol, (label, expected, p)


# ------------------------------------------------------------ test models
# State-dict classes for settings the shipped models do not exercise; a spec
# names them as "support:<Name>" (the tests' policies allow-list "support:*").


class TemperatureMLP(torch.nn.Module):
    """crossinfer.models.MLP with a ``temperature`` keyword: logits / temperature."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        from crossinfer.models import MLP

        self.mlp = MLP(sizes)

    def forward(self, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        return self.mlp(x) / temperature


class TwoHeads(torch.nn.Module):
    """Returns a dict: ``logits`` (n, 10) and ``embedding`` (n, 4), and a
    ``total`` that is not per element (one number for the whole batch)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Linear(64, 4)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.body(x)
        return {"logits": self.head(embedding), "embedding": embedding,
                "total": embedding.sum()}


class PairHeads(TwoHeads):
    """The same heads as a tuple: (logits, embedding)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        embedding = self.body(x)
        return self.head(embedding), embedding
