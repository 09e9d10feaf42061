"""The named pre/post-processing ops, run: each built from its validated parameters.

The ops, their parameters and where each may run are declared once in
:mod:`crossinfer.spec.ops` (which validates them, naming the bad parameter);
this module only implements them. Pre-processing runs per element, on its
features, before batching - so ``pad_truncate`` can make ragged inputs equal
before they are stacked. Post-processing runs once per batch, vectorised over
the leading batch axis of the model output, and may set ``label``/``score``
(``argmax``, ``threshold``) or ``labels``/``scores`` (``top_k``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossinfer.spec import ops as spec_ops
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


def _floats(value: float | list[float]) -> np.ndarray:
    """A validated number or per-column list as float32."""
    return np.asarray(value, dtype=np.float32)


def _array_op(name: str, fn_element: ArrayFn, fn_batch: ArrayFn | None = None) -> BuiltOp:
    """An op that maps arrays; on a batch it maps the inference array only."""
    batch_fn = fn_batch or fn_element

    def on_batch(out: Outputs) -> Outputs:
        out.inference = batch_fn(out.inference)
        return out

    return BuiltOp(name, fn_element, on_batch)


def _cast(p: spec_ops.Cast) -> BuiltOp:
    dtype = np.dtype(p.dtype)
    return _array_op("cast", lambda x: x.astype(dtype, copy=False))


def _reshape(p: spec_ops.Reshape) -> BuiltOp:
    dims = tuple(p.shape)
    return _array_op("reshape", lambda x: x.reshape(dims),
                     lambda xs: xs.reshape((xs.shape[0], *dims)))


def _flatten(p: spec_ops.Flatten) -> BuiltOp:
    return _array_op("flatten", lambda x: x.reshape(-1), lambda xs: xs.reshape(xs.shape[0], -1))


def _normalize(p: spec_ops.Normalize) -> BuiltOp:
    mean, std = _floats(p.mean), _floats(p.std)
    return _array_op("normalize", lambda x: (x - mean) / std)


def _scale(p: spec_ops.Scale) -> BuiltOp:
    factor = _floats(p.factor)
    return _array_op("scale", lambda x: x * factor)


def _pad_truncate(p: spec_ops.PadTruncate) -> BuiltOp:
    length, value = p.length, float(np.float32(p.value))

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


def _softmax(p: spec_ops.Softmax) -> BuiltOp:

    def softmax(x: np.ndarray) -> np.ndarray:
        shifted = x - np.max(x, axis=-1, keepdims=True)
        e: np.ndarray = np.exp(shifted)
        out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
        return out

    return _array_op("softmax", softmax)


def _sigmoid(p: spec_ops.Sigmoid) -> BuiltOp:
    return _array_op("sigmoid", lambda x: 1.0 / (1.0 + np.exp(-x)))


def _flat_rows(xs: np.ndarray) -> np.ndarray:
    return xs.reshape(xs.shape[0], -1)


def _argmax(p: spec_ops.Argmax) -> BuiltOp:

    def on_batch(out: Outputs) -> Outputs:
        rows = _flat_rows(out.inference)
        out.label = rows.argmax(axis=1)  # (the method: np.argmax's wrapper costs 0.6 us)
        out.score = rows[np.arange(rows.shape[0]), out.label].astype(np.float64)
        return out

    return BuiltOp("argmax", None, on_batch)


def _top_k(p: spec_ops.TopK) -> BuiltOp:
    k = p.k

    def on_batch(out: Outputs) -> Outputs:
        rows = _flat_rows(out.inference)
        kk = min(k, rows.shape[1])
        order = np.argsort(-rows, axis=1, kind="stable")[:, :kk]
        out.labels = order
        out.scores = np.take_along_axis(rows, order, axis=1).astype(np.float64)
        return out

    return BuiltOp("top_k", None, on_batch)


def _threshold(p: spec_ops.Threshold) -> BuiltOp:
    threshold, index = float(np.float32(p.threshold)), p.index

    def on_batch(out: Outputs) -> Outputs:
        rows = _flat_rows(out.inference)
        out.score = rows[:, index].astype(np.float64)
        out.label = (out.score >= threshold).astype(np.int64)
        return out

    return BuiltOp("threshold", None, on_batch)


#: name -> factory(validated params) -> BuiltOp, one for each op of :data:`spec.ops.OPS`.
REGISTRY: dict[str, Callable[[Any], BuiltOp]] = {
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


#: Ops that derive labels/scores: they only run after the model (declared in spec.ops).
POST_ONLY = spec_ops.POST_ONLY


def build_op(step: Step, stage: spec_ops.Stage) -> BuiltOp:
    """Build a named op (or wrap a Python function) for ``stage`` ('pre'/'post').

    Raises ValueError with a user-facing sentence for an unknown op, bad params
    (naming the parameter) or an op that cannot run at ``stage``.
    """
    if not isinstance(step, Op):
        if not callable(step):
            raise ValueError(f"expected a named op or a function, got {type(step).__name__}")
        return _python_op(step)
    params = spec_ops.op_params(step.name, step.params)
    problem = spec_ops.stage_problem(step.name, stage)
    if problem:
        raise ValueError(problem)
    return REGISTRY[step.name](params)


def _python_op(fn: Callable[[np.ndarray], Any]) -> BuiltOp:
    """A user function: applied to one element's array (row by row on a batch)."""
    name = getattr(fn, "__name__", "python_function")

    def element(x: np.ndarray) -> np.ndarray:
        return np.asarray(fn(x))

    def on_batch(out: Outputs) -> Outputs:
        out.inference = np.stack([element(row) for row in out.inference])
        return out

    return BuiltOp(name, element, on_batch)


def build_ops(steps: tuple[Step, ...], stage: spec_ops.Stage) -> list[BuiltOp]:
    return [build_op(s, stage) for s in steps]
