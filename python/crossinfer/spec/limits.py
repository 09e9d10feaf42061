"""Every bound on a spec's numbers and sizes, declared once, as data.

Three tables:

* :data:`FIELD_BOUNDS` - the range of each numeric field; a field's declaration
  names its row (``Number("keyed.max_models_per_worker")``, see
  :mod:`crossinfer.spec.constraints`), which both validates it and states the
  range in the generated ``schema.json`` (``schema``: where, checked by a test);
* :data:`DERIVED_BOUNDS` - sizes and quantities computed from several fields
  (the product of ``input_shape``, a model class's parameter count, ...);
* :class:`SpecLimits` - the size of a whole request (bytes, nesting, nodes,
  arms, routes, ops), with defaults; the expansion service has one flag per
  field (``--max-nodes`` ...); ``load_spec(..., limits=SpecLimits(...))``
  takes others, and Python pipelines use the defaults.

``python -m crossinfer.spec.limits`` prints the Markdown tables that
docs/security.md holds (a test checks they agree).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: Largest integer a double holds exactly (JSON numbers are doubles in many SDKs).
_EXACT_INT = 2**53
#: float32's largest finite value: op parameters are applied as float32.
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class Bound:
    """The allowed range of one number.

    ``minimum``/``maximum`` are inclusive, except that ``exclusive_minimum``
    makes ``minimum`` itself invalid. ``integer`` fields refuse fractions.
    ``schema`` is the field's location in schema.json (dot-separated keys from
    ``$defs``), or "" when the schema cannot state it (free-form params).
    """

    minimum: float
    maximum: float
    integer: bool = True
    exclusive_minimum: bool = False
    schema: str = ""
    why: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is out of range (or not a number), or None.

        Never converts a huge integer to float, so any JSON number is answered
        with a sentence, not an OverflowError.
        """
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected {'an integer' if self.integer else 'a number'}, got {value!r}"
        if self.integer and not isinstance(value, int):
            return f"expected an integer, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        low_ok = value > self.minimum if self.exclusive_minimum else value >= self.minimum
        if not low_ok or value > self.maximum:
            return f"must be {self.describe()}, got {_short(value)}"
        return None

    def describe(self) -> str:
        """E.g. 'an integer from 1 to 64', 'a number above 0 and at most 3600'."""
        kind = "an integer" if self.integer else "a number"
        if self.exclusive_minimum:
            return f"{kind} above {_num(self.minimum)} and at most {_num(self.maximum)}"
        return f"{kind} from {_num(self.minimum)} to {_num(self.maximum)}"


#: Numeric spec fields, by their path pattern (``[]``: every item of a list).
FIELD_BOUNDS: Mapping[str, Bound] = {
    "model.batching.min_batch_size": Bound(
        1, 100_000, schema="batching.properties.min_batch_size",
        why="elements per model call"),
    "model.batching.max_batch_size": Bound(
        1, 100_000, schema="batching.properties.max_batch_size",
        why="elements per model call"),
    "model.batching.max_wait_secs": Bound(
        0, 3600, integer=False, exclusive_minimum=True,
        schema="batching.properties.max_wait_secs",
        why="how long a streaming batch may wait, in seconds"),
    "model.memory.model_copies": Bound(
        1, 64, schema="memory.properties.model_copies",
        why="model copies per machine"),
    "model.input_shape[]": Bound(
        1, 1 << 20, schema="model.properties.input_shape.items",
        why="one dimension of a row's features"),
    "ab_test.arms[].weight": Bound(
        0, 1e6, integer=False, exclusive_minimum=True,
        schema="arm.properties.weight",
        why="relative share of elements"),
    "ab_test.seed": Bound(
        -(2**63), 2**63 - 1, schema="ab_test.properties.seed",
        why="a 64-bit integer (a Java long)"),
    "keyed.max_models_per_worker": Bound(
        1, 64, schema="keyed.properties.max_models_per_worker",
        why="models resident per worker process"),
    "keyed.shards": Bound(
        1, 1024, schema="keyed.properties.shards",
        why="GroupByKey groups per route (workers one route can use)"),
    "op.pad_truncate.length": Bound(
        1, 1 << 20, schema="op_pad_truncate.properties.length", why="values per row after the op"),
    "op.top_k.k": Bound(1, 1 << 16, schema="op_top_k.properties.k", why="labels per row"),
    "op.reshape.shape[]": Bound(
        -1, 1 << 20, schema="op_reshape.properties.shape.items",
        why="one dimension; -1 (once) for the inferred one, never 0"),
    "op.threshold.index": Bound(
        -(1 << 20), (1 << 20) - 1, schema="op_threshold.properties.index",
        why="which output to compare; negative counts from the end"),
    "op.*.{mean,std,factor,value,threshold}": Bound(
        -_FLOAT32_MAX, _FLOAT32_MAX, integer=False, schema="op_threshold.properties.threshold",
        why="applied as float32, so within float32's finite range"),
    "model.output": Bound(
        0, 1 << 10, schema="model.properties.output.oneOf.1",
        why="index of the output to use when a model returns a tuple or list"),
    "model.{model_params,handler_params,inference_args}.**": Bound(
        -_EXACT_INT, _EXACT_INT, integer=False,
        why="any number inside a params object: finite, and exact as a double"),
}


@dataclass(frozen=True)
class Derived:
    """A bound on a size or a quantity computed from several fields."""

    maximum: int
    why: str
    minimum: int = 1


#: Sizes and computed quantities.
DERIVED_BOUNDS: Mapping[str, Derived] = {
    "model.input_shape (dimensions)": Derived(8, "dimensions of a row's features"),
    "model.input_shape (product)": Derived(1 << 24, "values in one row's features"),
    "op.reshape.shape (product)": Derived(1 << 24, "values in one reshaped row"),
    "op.*.{mean,std,factor} (length)": Derived(1 << 16, "values in a per-column list"),
    "model.dtype (item size)": Derived(8, "bytes per value of a numeric numpy dtype "
                                          "(kinds b, i, u, f)"),
    "ab_test.salt, keyed.routes[].keys[] (length)": Derived(256, "characters"),
    "model.uri (length)": Derived(4096, "characters, none of them control characters"),
    "model.{model_params,handler_params,inference_args} (nesting)": Derived(
        8, "levels of objects and arrays"),
    "model.{model_params,handler_params,inference_args} (items)": Derived(
        4096, "values in one params object, nested ones counted"),
    "model.output (length)": Derived(256, "characters of an output's name"),
}


def dtype_problem(value: Any) -> str | None:
    """Why ``value`` is not a numeric numpy dtype name within the bound, or None."""
    import numpy as np

    largest = DERIVED_BOUNDS["model.dtype (item size)"].maximum
    try:
        if not isinstance(value, str) or len(value) > 32:
            raise TypeError
        dtype = np.dtype(value)
    except (TypeError, ValueError, SyntaxError):
        return f"{_short(value)} is not a numpy dtype name like 'float32'"
    if dtype.kind not in "biuf" or dtype.itemsize > largest:
        return (f"{value!r} is not a numeric dtype of at most {largest} bytes (bool, int, uint "
                "or float)")
    return None


def _flag(name: str, default: int, why: str) -> Any:
    return field(default=default, metadata={"flag": f"--{name}", "why": why})


@dataclass(frozen=True)
class SpecLimits:
    """How large one spec may be. Every field is a positive integer.

    The expansion service sets them from its ``--max-*`` flags (each named in
    the field's metadata); checked before anything else in a spec is looked at.
    """

    max_spec_bytes: int = _flag("max-spec-bytes", 256 << 10, "bytes of spec JSON")
    max_spec_depth: int = _flag("max-spec-depth", 32, "levels of JSON nesting in a spec")
    max_nodes: int = _flag("max-nodes", 64, "nodes in one spec, of every kind (keyed routes "
                                            "and A/B arms included)")
    max_arms: int = _flag("max-arms", 16, "arms of one A/B test")
    max_routes: int = _flag("max-routes", 64, "routes of one keyed node (each is a node too, "
                                              "so --max-nodes bounds them as well)")
    max_keys: int = _flag("max-keys", 10_000, "keys of all routes of one keyed node")
    max_ops: int = _flag("max-ops", 16, "ops in one preprocess or postprocess list")
    max_model_parameters: int = _flag(
        "max-model-parameters", 1 << 28,
        "parameters of one model_class instance (counted on PyTorch's meta device, "
        "without allocating them)")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.metadata['flag']}: must be a positive integer, got "
                                 f"{value!r}")


def markdown_table(limits: SpecLimits | None = None) -> str:
    """The bounds as the Markdown tables of docs/security.md."""
    limits = limits or SpecLimits()
    lines = ["| field | allowed | why |", "| --- | --- | --- |"]
    for path, bound in FIELD_BOUNDS.items():
        lines.append(f"| `{path}` | {bound.describe()} | {bound.why} |")
    for path, derived in DERIVED_BOUNDS.items():
        lines.append(f"| `{path}` | at most {_num(derived.maximum)} | {derived.why} |")
    lines += ["", "| service flag | default | bounds |", "| --- | --- | --- |"]
    for f in fields(limits):
        lines.append(f"| `{f.metadata['flag']}` | {_num(getattr(limits, f.name))} | "
                     f"{f.metadata['why']} |")
    return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    if abs(value) > 2**64:
        return f"{value:.5g}"
    if isinstance(value, int) or float(value).is_integer():
        value = int(value)
        for power in (63, 53, 28, 24, 20, 16):
            if abs(value) in (2**power, 2**power - 1):
                sign = "-" if value < 0 else ""
                return f"{sign}2^{power}" + (" - 1" if abs(value) == 2**power - 1 else "")
        if abs(value) >= 10_000:
            return f"{value:,}"
        return str(value)
    return f"{value:g}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
