"""Beam Row <-> numpy at the language boundary.

Input elements are Beam Rows (or dicts / NamedTuples in Python pipelines): a
numeric array field (``features`` by default), an optional ``key`` string, any
other fields passed through untouched. Output rows carry the input fields plus:

==========  =============  ============================================
``model``   str            name of the model node that produced the row
``path``    str            route through the spec, e.g. ``exp/control/lr``
``inference`` list[float]  post-processed model output, flattened
``label``   int or null    set by ``argmax`` / ``threshold``
``score``   float or null  set by ``argmax`` / ``threshold``
``labels``  list[int] | null    set by ``top_k``
``scores``  list[float] | null  set by ``top_k``
==========  =============  ============================================

Failure rows carry ``element`` (the original input), ``node`` (path of the
failing node) and ``error`` (a message).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np

from crossinfer.records import Failure, Item

OUTPUT_FIELDS = ("model", "path", "inference", "label", "score", "labels", "scores")
FAILURE_FIELDS = ("element", "node", "error")


@dataclass(frozen=True)
class IOConfig:
    """Which input fields hold the features and the key."""

    features_field: str = "features"
    key_field: str = "key"


def field_dict(element: Any) -> dict[str, Any]:
    """The fields of a Row, NamedTuple, dataclass-like object or dict."""
    if isinstance(element, dict):
        return element
    if hasattr(element, "_asdict"):
        return element._asdict()
    if hasattr(element, "as_dict"):
        return element.as_dict()
    if hasattr(element, "__dict__"):
        return dict(vars(element))
    raise TypeError(f"expected a Row, NamedTuple or dict, got {type(element).__name__}")


def to_item(element: Any, io: IOConfig, stage: str = "input") -> Item | Failure:
    """Validate an input element and turn it into an :class:`Item`, or a
    :class:`Failure` that says what is wrong with it."""
    try:
        fields = field_dict(element)
    except TypeError as exc:
        return Failure(element, stage, str(exc))
    name = io.features_field
    if name not in fields:
        return Failure(element, stage, f"the input has no field {name!r} "
                                       f"(fields: {', '.join(sorted(fields)) or 'none'})")
    raw = fields[name]
    if raw is None:
        return Failure(element, stage, f"field {name!r} is null")
    if isinstance(raw, (bytes, str)):
        return Failure(element, stage, f"field {name!r} must be an array of numbers, got "
                                       f"{type(raw).__name__}")
    try:
        features = np.asarray(raw)
    except (ValueError, TypeError) as exc:
        return Failure(element, stage, f"field {name!r} is not a numeric array: {exc}")
    if features.dtype.kind not in "iuf":
        return Failure(element, stage, f"field {name!r} must contain only numbers "
                                       f"(found {_kind_name(features)})")
    if features.size == 0:
        return Failure(element, stage, f"field {name!r} is empty")
    if features.dtype.kind == "f" and not np.all(np.isfinite(features)):
        bad = int(np.flatnonzero(~np.isfinite(features.reshape(-1)))[0])
        return Failure(element, stage, f"field {name!r} contains NaN or infinity "
                                       f"(first at index {bad})")
    key = fields.get(io.key_field)
    return Item(element, features, None if key is None else str(key))


def _kind_name(arr: np.ndarray) -> str:
    if arr.dtype.kind == "O":
        if any(v is None for v in arr.reshape(-1)):
            return "null values"
        return "mixed or nested values"
    if arr.dtype.kind in "US":
        return "strings"
    if arr.dtype.kind == "b":
        return "booleans"
    return f"dtype {arr.dtype}"


def output_values(item: Item) -> dict[str, Any]:
    """The crossinfer output fields of a finished item."""
    inference = item.inference if item.inference is not None else item.features
    return {
        "model": item.model,
        "path": item.path,
        "inference": [float(v) for v in np.asarray(inference, dtype=np.float64).reshape(-1)],
        "label": item.label,
        "score": item.score,
        "labels": item.labels,
        "scores": item.scores,
    }


RowFactory = Callable[..., Any]


def to_output_row(item: Item, factory: RowFactory = beam.Row) -> Any:
    """Input fields + output fields. Output fields win over input fields of the
    same name."""
    values = dict(field_dict(item.original))
    values.update(output_values(item))
    return factory(**values)


def to_failure_row(failure: Failure, factory: RowFactory = beam.Row) -> Any:
    return factory(element=failure.original, node=failure.node, error=failure.error)
