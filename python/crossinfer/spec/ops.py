"""The named pre/post-processing ops a spec can use: names, parameters, bounds, stages.

Each op is declared once here, as the dataclass of its parameters (with their
types, defaults and rules) and the stages it applies to; decoding, validation,
the JSON Schema (``$defs.op_<name>``) and the Java builder ``Op`` follow it.
:mod:`crossinfer.processing.ops` implements each one from its validated
parameters. In JSON an op is flat: ``{"op": "top_k", "k": 3}``.

* Pre-processing runs per element, on its features, before batching (so
  ``pad_truncate`` can make ragged inputs equal before they are stacked).
* Post-processing runs once per batch, vectorised over the batch axis, and
  may set ``label``/``score`` (``argmax``, ``threshold``) or
  ``labels``/``scores`` (``top_k``): those ops are post-processing only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import ConfigDict, TypeAdapter, ValidationError

from crossinfer.spec.constraints import (
    Dtype,
    Number,
    Rule,
    describe,
    number_schema,
    refuse,
    short,
)
from crossinfer.spec.limits import DERIVED_BOUNDS, FIELD_BOUNDS

#: Where an op may run: ``pre`` (per element, before the model), ``post`` (per batch, after).
Stage = Literal["pre", "post"]

#: pydantic settings of every op: unknown parameters are refused; instances
#: are checked again when validated (a Python-built Op's params).
OP_CONFIG = ConfigDict(extra="forbid", revalidate_instances="always",
                       use_attribute_docstrings=True)

_FLOAT32 = FIELD_BOUNDS["op.*.{mean,std,factor,value,threshold}"]


class Floats(Rule):
    """A float32 number, or a list of 1 to 2^16 of them (one per column)."""

    most = DERIVED_BOUNDS["op.*.{mean,std,factor} (length)"].maximum

    def __init__(self, nonzero: bool = False) -> None:
        self.nonzero = nonzero

    def check(self, value: Any) -> Any:
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > self.most or any(_FLOAT32.problem(v) for v in values):
            refuse(f"must be a finite number or a list of 1 to {self.most} finite numbers "
                   f"(float32 range), got {short(value)}")
        if self.nonzero and any(v == 0 for v in values):
            refuse("must not be zero")
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        number = number_schema(_FLOAT32)
        return {"oneOf": [number, {"type": "array", "minItems": 1, "maxItems": self.most,
                                   "items": number}]}


class NewShape(Rule):
    """A shape to reshape each row to: -1 (once) stands for the inferred dimension."""

    most = DERIVED_BOUNDS["model.input_shape (dimensions)"].maximum
    values = DERIVED_BOUNDS["op.reshape.shape (product)"].maximum
    dimension = FIELD_BOUNDS["op.reshape.shape[]"]

    def check(self, value: Any) -> Any:
        if not isinstance(value, list) or not 1 <= len(value) <= self.most or any(
                self.dimension.problem(d) or d == 0 for d in value) or value.count(-1) > 1:
            refuse(f"must be a list of integers (1 to {self.most} of them), each "
                   f"{self.dimension.describe()} but not 0, with -1 at most once (the inferred "
                   f"axis), got {short(value)}")
        if abs(int(np.prod(value, dtype=object))) > self.values:
            refuse(f"describes more than {self.values:,} values per row")
        return value

    def schema(self, generated: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "maxItems": self.most,
                "items": number_schema(self.dimension)}


class OpDeclaration:
    """What every op's parameter dataclass shares: pydantic's settings and the
    stages it may run at (both, unless a subclass says ``("post",)``)."""

    __pydantic_config__ = OP_CONFIG
    stages: ClassVar[tuple[Stage, ...]] = ("pre", "post")


Float32 = Annotated[float, Number("op.*.{mean,std,factor,value,threshold}")]


@dataclass(frozen=True)
class Cast(OpDeclaration):
    """Cast each element's values to ``dtype``."""

    op: ClassVar[str] = "cast"

    dtype: Annotated[str, Dtype()]
    """A numeric numpy dtype name, e.g. "float32"."""


@dataclass(frozen=True)
class Reshape(OpDeclaration):
    """Reshape each element (each row of a batch)."""

    op: ClassVar[str] = "reshape"

    shape: Annotated[list[int], NewShape()]
    """The new shape of one row; -1 (once) for the inferred dimension."""


@dataclass(frozen=True)
class Flatten(OpDeclaration):
    """Flatten each element to one dimension."""

    op: ClassVar[str] = "flatten"


@dataclass(frozen=True)
class Normalize(OpDeclaration):
    """``(x - mean) / std``, per value or per column."""

    op: ClassVar[str] = "normalize"

    mean: Annotated[float | list[float], Floats()] = 0.0
    """One number, or one per column."""
    std: Annotated[float | list[float], Floats(nonzero=True)] = 1.0
    """One number, or one per column; never zero."""


@dataclass(frozen=True)
class Scale(OpDeclaration):
    """``x * factor``, per value or per column."""

    op: ClassVar[str] = "scale"

    factor: Annotated[float | list[float], Floats()]
    """One number, or one per column."""


@dataclass(frozen=True)
class PadTruncate(OpDeclaration):
    """Flatten, then pad with ``value`` or cut to ``length`` values: ragged inputs
    become one length."""

    op: ClassVar[str] = "pad_truncate"

    length: Annotated[int, Number("op.pad_truncate.length")]
    """Values per row after the op."""
    value: Float32 = 0.0
    """The padding value."""


@dataclass(frozen=True)
class Softmax(OpDeclaration):
    """Softmax over the last axis."""

    op: ClassVar[str] = "softmax"


@dataclass(frozen=True)
class Sigmoid(OpDeclaration):
    """The logistic function, per value."""

    op: ClassVar[str] = "sigmoid"


@dataclass(frozen=True)
class Argmax(OpDeclaration):
    """``label``: the index of each row's largest output; ``score``: that output."""

    op: ClassVar[str] = "argmax"
    stages: ClassVar[tuple[Stage, ...]] = ("post",)


@dataclass(frozen=True)
class TopK(OpDeclaration):
    """``labels``/``scores``: each row's ``k`` largest outputs, largest first."""

    op: ClassVar[str] = "top_k"
    stages: ClassVar[tuple[Stage, ...]] = ("post",)

    k: Annotated[int, Number("op.top_k.k")]
    """Labels per row (fewer when a row has fewer outputs)."""


@dataclass(frozen=True)
class Threshold(OpDeclaration):
    """``score``: output ``index`` of each row; ``label``: 1 when it is at least
    ``threshold``, else 0."""

    op: ClassVar[str] = "threshold"
    stages: ClassVar[tuple[Stage, ...]] = ("post",)

    threshold: Float32 = 0.5
    """The score a label 1 needs."""
    index: Annotated[int, Number("op.threshold.index")] = -1
    """Which output to compare; negative counts from the end."""


#: Every op's parameters, by name.
OpParams = (Cast | Reshape | Flatten | Normalize | Scale | PadTruncate | Softmax | Sigmoid
            | Argmax | TopK | Threshold)

OPS: Mapping[str, type[OpParams]] = {cls.op: cls for cls in (
    Cast, Reshape, Flatten, Normalize, Scale, PadTruncate, Softmax, Sigmoid, Argmax, TopK,
    Threshold)}

#: Ops that derive labels/scores: they only make sense after the model.
POST_ONLY = frozenset(name for name, cls in OPS.items() if "pre" not in cls.stages)

_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def op_params(name: str, params: Mapping[str, Any]) -> OpParams:
    """The validated parameters of op ``name``.

    Raises ValueError with one sentence per problem, each naming its
    parameter, e.g. ``'k' must be an integer from 1 to 2^16, got 0``.
    """
    cls = OPS.get(name)
    if cls is None:
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}")
    if not all(isinstance(key, str) for key in params):
        raise ValueError(f"parameter names must be strings, got {short(list(params))}")
    adapter = _ADAPTERS.get(name) or _ADAPTERS.setdefault(name, TypeAdapter(cls))
    try:
        validated: OpParams = adapter.validate_python(dict(params))
    except ValidationError as exc:
        raise ValueError("; ".join(_sentence(cls, err) for err in exc.errors())) from None
    return validated


def stage_problem(name: str, stage: Stage) -> str | None:
    """Why op ``name`` cannot run at ``stage``, or None."""
    cls = OPS.get(name)
    if cls is not None and stage not in cls.stages:
        return (f"op {name!r} derives labels from model outputs and can only be used in "
                "postprocess")
    return None


def _sentence(cls: type, err: Any) -> str:
    """One validation error of an op's params as a sentence naming the parameter."""
    name = str(err["loc"][0]) if err["loc"] else "?"
    kind = err["type"]
    if kind == "missing":
        return f"parameter {name!r} is required"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        taken = ", ".join(f.name for f in fields(cls)) or "none"
        return f"unknown parameter {name!r} (this op takes: {taken})"
    message = (err.get("ctx") or {}).get("message") or f"{err['msg']}, got " \
        f"{describe(err.get('input'))}"
    # "'k' must be ...", but "'dtype': 'object' is not ..." (a message that starts with a value)
    separator = ": " if message[:1] in ("'", '"') else " "
    return f"{name!r}{separator}{message}"
