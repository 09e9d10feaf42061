"""Named pre/post-processing ops, looked up by name from a registry.

Pre-processing runs per element, on its features, before batching - so an op
like ``pad_truncate`` can make ragged inputs equal before they are stacked.
Post-processing runs once per batch, vectorised over the leading batch axis of
the model output, and may set ``label``/``score`` (``argmax``, ``threshold``)
or ``labels``/``scores`` (``top_k``).

Every op is built from its JSON params by a factory that validates them and
raises :class:`ValueError` with a sentence naming the bad parameter; the spec
validator turns that into a field-path error at construction time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossinfer.spec.limits import DERIVED_BOUNDS, FIELD_BOUNDS, dtype_problem
from crossinfer.spec.nodes import Op, Step

ArrayFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class Outputs:
    """A batch of model outputs and what post-processing derived from them.

    ``inference`` has the batch on its first axis; the other arrays, when set,
    have one entry (``label``/``score``) or one row (``labels``/``scores``) per
    element.
    """

    inference: np.ndarray
    label: np.ndarray | None = None
    score: np.ndarray | None = None
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None

    def take(self, rows: np.ndarray) -> Outputs:
        """The outputs of ``rows`` (indices, or a boolean mask over the batch)."""
        return Outputs(self.inference[rows], *(None if a is None else a[rows] for a in (
            self.label, self.score, self.labels, self.scores)))


@dataclass(frozen=True)
class BuiltOp:
    """An op ready to run: ``element`` maps one element's array (pre-processing),
    ``batch`` maps a whole :class:`Outputs` (post-processing)."""

    name: str
    element: ArrayFn | None
    batch: Callable[[Outputs], Outputs]


def _params(params: Mapping[str, Any], allowed: set[str], required: set[str] = frozenset()
            ) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        allowed_text = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"unknown parameter {unknown[0]!r} (this op takes: {allowed_text})")
    missing = sorted(required - set(params))
    if missing:
        raise ValueError(f"parameter {missing[0]!r} is required")


_NUMBER = FIELD_BOUNDS["op.*.{mean,std,factor,value,threshold}"]
_MAX_LIST = DERIVED_BOUNDS["op.*.{mean,std,factor} (length)"].maximum


def _number_or_list(value: Any, name: str) -> np.ndarray:
    """A float32 scalar or 1-D list, every value finite and within float32's range
    (checked before conversion: a huge JSON integer must not overflow)."""
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > _MAX_LIST or any(_NUMBER.problem(v) for v in values):
        raise ValueError(f"{name!r} must be a finite number or a list of 1 to {_MAX_LIST} "
                         f"finite numbers (float32 range), got {_short(value)}")
    return np.asarray(values if isinstance(value, list) else value, dtype=np.float32)


def _bounded_int(value: Any, name: str, bound_key: str) -> int:
    problem = FIELD_BOUNDS[bound_key].problem(value)
    if problem:
        raise ValueError(f"{name!r} {problem}")
    return int(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _array_op(name: str, fn_element: ArrayFn, fn_batch: ArrayFn | None = None) -> BuiltOp:
    """An op that maps arrays; on a batch it maps the inference array only."""
    batch_fn = fn_batch or fn_element

    def on_batch(out: Outputs) -> Outputs:
        out.inference = batch_fn(out.inference)
        return out

    return BuiltOp(name, fn_element, on_batch)


def _cast(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, {"dtype"}, {"dtype"})
    problem = dtype_problem(p["dtype"])
    if problem:
        raise ValueError(f"'dtype': {problem}")
    dtype = np.dtype(p["dtype"])
    return _array_op("cast", lambda x: x.astype(dtype, copy=False))


def _reshape(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, {"shape"}, {"shape"})
    shape = p["shape"]
    most = DERIVED_BOUNDS["model.input_shape (dimensions)"].maximum
    bound = FIELD_BOUNDS["op.reshape.shape[]"]
    if not isinstance(shape, list) or not 1 <= len(shape) <= most or any(
            bound.problem(d) or d == 0 for d in shape) or shape.count(-1) > 1:
        raise ValueError(f"'shape' must be a list of integers (1 to {most} of them), each "
                         f"{bound.describe()} but not 0, with -1 at most once (the inferred "
                         f"axis), got {_short(shape)}")
    product = DERIVED_BOUNDS["op.reshape.shape (product)"].maximum
    if abs(int(np.prod(shape, dtype=object))) > product:
        raise ValueError(f"'shape' describes more than {product:,} values per row")
    dims = tuple(shape)
    return _array_op("reshape", lambda x: x.reshape(dims),
                     lambda xs: xs.reshape((xs.shape[0], *dims)))


def _flatten(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, set())
    return _array_op("flatten", lambda x: x.reshape(-1), lambda xs: xs.reshape(xs.shape[0], -1))


def _normalize(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, {"mean", "std"})
    mean = _number_or_list(p.get("mean", 0.0), "mean")
    std = _number_or_list(p.get("std", 1.0), "std")
    if np.any(std == 0):
        raise ValueError("'std' must not be zero")
    return _array_op("normalize", lambda x: (x - mean) / std)


def _scale(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, {"factor"}, {"factor"})
    factor = _number_or_list(p["factor"], "factor")
    return _array_op("scale", lambda x: x * factor)


def _pad_truncate(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, {"length", "value"}, {"length"})
    length = _bounded_int(p["length"], "length", "op.pad_truncate.length")
    value = float(_number_or_list(p.get("value", 0.0), "value").reshape(-1)[0])

    def fit(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(-1)
        if flat.shape[0] >= length:
            return flat[:length]
        return np.concatenate([flat, np.full(length - flat.shape[0], value, dtype=flat.dtype)])

    def fit_batch(xs: np.ndarray) -> np.ndarray:
        flat = xs.reshape(xs.shape[0], -1)
        if flat.shape[1] >= length:
            return flat[:, :length]
        pad = np.full((flat.shape[0], length - flat.shape[1]), value, dtype=flat.dtype)
        return np.concatenate([flat, pad], axis=1)

    return _array_op("pad_truncate", fit, fit_batch)


def _softmax(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, set())

    def softmax(x: np.ndarray) -> np.ndarray:
        shifted = x - np.max(x, axis=-1, keepdims=True)
        e = np.exp(shifted)
        return e / np.sum(e, axis=-1, keepdims=True)

    return _array_op("softmax", softmax)


def _sigmoid(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, set())
    return _array_op("sigmoid", lambda x: 1.0 / (1.0 + np.exp(-x)))


def _flat_rows(xs: np.ndarray) -> np.ndarray:
    return xs.reshape(xs.shape[0], -1)


def _argmax(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, set())

    def on_batch(out: Outputs) -> Outputs:
        rows = _flat_rows(out.inference)
        out.label = np.argmax(rows, axis=1)
        out.score = rows[np.arange(rows.shape[0]), out.label].astype(np.float64)
        return out

    return BuiltOp("argmax", None, on_batch)


def _top_k(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, {"k"}, {"k"})
    k = _bounded_int(p["k"], "k", "op.top_k.k")

    def on_batch(out: Outputs) -> Outputs:
        rows = _flat_rows(out.inference)
        kk = min(k, rows.shape[1])
        order = np.argsort(-rows, axis=1, kind="stable")[:, :kk]
        out.labels = order
        out.scores = np.take_along_axis(rows, order, axis=1).astype(np.float64)
        return out

    return BuiltOp("top_k", None, on_batch)


def _threshold(p: Mapping[str, Any]) -> BuiltOp:
    _params(p, {"threshold", "index"})
    threshold = float(_number_or_list(p.get("threshold", 0.5), "threshold").reshape(-1)[0])
    index = _bounded_int(p.get("index", -1), "index", "op.threshold.index")

    def on_batch(out: Outputs) -> Outputs:
        rows = _flat_rows(out.inference)
        out.score = rows[:, index].astype(np.float64)
        out.label = (out.score >= threshold).astype(np.int64)
        return out

    return BuiltOp("threshold", None, on_batch)


#: name -> factory(params) -> BuiltOp
REGISTRY: dict[str, Callable[[Mapping[str, Any]], BuiltOp]] = {
    "cast": _cast,
    "reshape": _reshape,
    "flatten": _flatten,
    "normalize": _normalize,
    "scale": _scale,
    "pad_truncate": _pad_truncate,
    "softmax": _softmax,
    "sigmoid": _sigmoid,
    "argmax": _argmax,
    "top_k": _top_k,
    "threshold": _threshold,
}

#: Ops that derive labels/scores: they only make sense after the model.
POST_ONLY = frozenset({"argmax", "top_k", "threshold"})


def build_op(step: Step, stage: str) -> BuiltOp:
    """Build a named op (or wrap a Python function) for ``stage`` ('pre'/'post').

    Raises ValueError with a user-facing sentence for an unknown op or bad params.
    """
    if not isinstance(step, Op):
        if not callable(step):
            raise ValueError(f"expected a named op or a function, got {type(step).__name__}")
        return _python_op(step)
    factory = REGISTRY.get(step.name)
    if factory is None:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown op {step.name!r}; known ops: {known}")
    if stage == "pre" and step.name in POST_ONLY:
        raise ValueError(f"op {step.name!r} derives labels from model outputs and can only be "
                         "used in postprocess")
    return factory(step.params)


def _python_op(fn: Callable[[np.ndarray], Any]) -> BuiltOp:
    """A user function: applied to one element's array (row by row on a batch)."""
    name = getattr(fn, "__name__", "python_function")

    def element(x: np.ndarray) -> np.ndarray:
        return np.asarray(fn(x))

    def on_batch(out: Outputs) -> Outputs:
        out.inference = np.stack([element(row) for row in out.inference])
        return out

    return BuiltOp(name, element, on_batch)


def build_ops(steps: tuple[Step, ...], stage: str) -> list[BuiltOp]:
    return [build_op(s, stage) for s in steps]
