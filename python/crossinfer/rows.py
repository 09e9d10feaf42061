"""Beam Row -> numpy at the language boundary: reading an input element.

Input elements are Beam Rows (or dicts / NamedTuples in Python pipelines): a
numeric array field (``features`` by default), an optional ``key`` string, any
other fields passed through untouched. A ``bytes`` features field holds packed
little-endian float32 values. Batch-native elements hold many rows: a 2-D (or
more) array, rows first, or packed float32 bytes with a ``shape`` field.

Every function here says what is wrong with an element in a sentence that
names the field (the ``error`` of its failure row). The other direction,
results -> output rows, is :mod:`crossinfer.engine.emit`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from apache_beam.pvalue import Row

from crossinfer.wire import DEFAULT_FEATURES_FIELD, DEFAULT_KEY_FIELD, PACKED_DTYPE

#: Packed features: little-endian float32 values in a ``bytes`` field.
PACKED = np.dtype(PACKED_DTYPE)
#: Feature arrays that need no conversion: the per-element hot path.
FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class IOConfig:
    """Which input fields hold the features and the key."""

    features_field: str = DEFAULT_FEATURES_FIELD
    key_field: str = DEFAULT_KEY_FIELD


def field_dict(element: Any) -> dict[str, Any]:
    """The fields of a Row, NamedTuple, dataclass-like object or dict."""
    if isinstance(element, dict):
        return element
    if hasattr(element, "_asdict"):
        return dict(element._asdict())
    if hasattr(element, "as_dict"):
        return dict(element.as_dict())
    if hasattr(element, "__dict__"):
        return dict(vars(element))
    raise TypeError(f"expected a Row, NamedTuple or dict, got {type(element).__name__}")


def fields_view(element: Any) -> Mapping[str, Any]:
    """Like :func:`field_dict`, without copying a dict's, a Beam Row's or a
    NamedTuple's fields (the hot path: read them, never write them).
    Raises TypeError for anything else without fields."""
    t: Any = type(element)
    if t is Row or t is dict:
        return element if t is dict else element.__dict__  # type: ignore[no-any-return]
    if isinstance(element, Row):
        return element.__dict__  # a Row keeps its fields, in order, in its __dict__
    if is_named_tuple(t):
        return _TupleFields(element)
    return field_dict(element)


@functools.cache
def is_named_tuple(t: Any) -> bool:
    return issubclass(t, tuple) and isinstance(getattr(t, "_fields", None), tuple)


class _TupleFields(Mapping[str, Any]):
    """A NamedTuple's fields as a read-only mapping, without ``_asdict()``'s
    dict. Rows from another SDK (Java, Go) reach the Python workers as
    NamedTuples: this is the per-element path at the language boundary."""

    __slots__ = ("_t",)

    def __init__(self, t: Any) -> None:
        self._t = t

    def __getitem__(self, name: str) -> Any:
        if name in self._t._fields:
            return getattr(self._t, name)
        raise KeyError(name)

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self._t, name) if name in self._t._fields else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._t._fields)

    def __len__(self) -> int:
        return len(self._t)


MISSING: Any = object()


def features_of(fields: Mapping[str, Any], name: str) -> np.ndarray | str:
    """The features of one element (field ``name`` of its ``fields``) as an
    array, or why they cannot be inferred. Finiteness is not checked here:
    :func:`nonfinite_problem` does that, once for many rows."""
    raw = fields.get(name, MISSING)
    if type(raw) is np.ndarray:
        features = raw
    elif raw is MISSING:
        return f"the input has no field {name!r} (fields: {', '.join(sorted(fields)) or 'none'})"
    elif raw is None:
        return f"field {name!r} is null"
    elif isinstance(raw, (bytes, bytearray)):
        # Packed features: one copy-free view instead of a list of boxed numbers,
        # the cheap encoding across languages (a `reshape` op gives them a shape).
        if len(raw) % 4:
            return (f"field {name!r} holds {len(raw)} bytes; packed features are "
                    "little-endian float32 values, 4 bytes each")
        features = np.frombuffer(raw, dtype=PACKED)
    elif isinstance(raw, str):
        return f"field {name!r} must be an array of numbers, got str"
    else:
        try:
            features = np.asarray(raw)
        except (ValueError, TypeError) as exc:
            return f"field {name!r} is not a numeric array: {exc}"
    return check_features(features, name, finite=False) or features


def key_of(fields: Mapping[str, Any], name: str) -> str | None:
    """The element's key as text, or None."""
    key = fields.get(name)
    return key if key is None or type(key) is str else str(key)


def check_features(features: np.ndarray, name: str, finite: bool = True) -> str | None:
    """Why one row's ``features`` cannot be inferred, or None when they can:
    numbers only, not empty, and (with ``finite``) finite. The finiteness
    check is one sum (a NaN or an infinity makes it non-finite); only a
    non-finite sum is looked at closely, since finite values can also overflow
    a sum."""
    kind = features.dtype.kind
    if kind not in "iuf":
        return f"field {name!r} must contain only numbers (found {_kind_name(features)})"
    if features.size == 0:
        return f"field {name!r} is empty"
    if finite and kind == "f" and not surely_finite(features):
        return nonfinite_problem(features, name)
    return None


def nonfinite_problem(row: np.ndarray, name: str) -> str | None:
    """The message of a row holding NaN or infinity (None when it holds none):
    the same on every path, whatever the row's element looked like."""
    bad = np.flatnonzero(~np.isfinite(row.reshape(-1)))
    if not bad.size:
        return None
    return f"field {name!r} contains NaN or infinity (first at index {int(bad[0])})"


def surely_finite(features: np.ndarray) -> bool:
    """True when every value is surely finite: the sum of finite values is
    finite unless it overflows (a NaN or an infinity makes it NaN or
    infinite). Values near the dtype's limit overflow it: numpy warns once,
    and the exact check decides."""
    return math.isfinite(_sum(features if features.ndim == 1 else features.reshape(-1)))


def nonfinite_rows(arrays: list[np.ndarray | None], n: int) -> np.ndarray | None:
    """A boolean mask of the rows (of ``n``, the first axis of every array)
    where any of ``arrays`` holds NaN or infinity, or None when all values are
    finite (one sum per array, once per array object - post-processing often
    hands the model's output on as ``inference`` - and only a non-finite sum is
    looked at row by row)."""
    bad: np.ndarray | None = None
    seen: set[int] = set()  # (ids of arrays the caller holds for the whole call)
    for values in arrays:
        if values is None or values.dtype.kind != "f" or id(values) in seen:
            continue
        seen.add(id(values))
        if surely_finite(values):
            continue
        rows = ~np.isfinite(values.reshape(n, -1)).all(axis=1)
        bad = rows if bad is None else bad | rows
    return bad if bad is not None and bad.any() else None


# A ufunc reduction, not a dot product: numpy's dot hands small vectors to BLAS
# and releases the GIL around the call, and in a Beam worker (gRPC threads
# always runnable) getting it back costs up to the 5 ms switch interval; a
# per-element dot made the whole bundle wait on the GIL (measured: 0.6 us
# alone, 355 us with one busy thread). A small reduction keeps the GIL.
_sum = np.add.reduce


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


# ------------------------------------------------------------------ batch-native


def batch_of(element: Any, name: str, shape_field: str) -> np.ndarray:
    """The rows of a batch-native element: a numpy array (the element itself,
    or its field ``name``), a list of equal-length lists, or packed float32
    bytes shaped by field ``shape_field``; at least 2-D, rows first, numeric,
    not empty. Raises ValueError (or TypeError for an element without fields)
    saying what is wrong; non-finite rows are for the caller to find."""
    if isinstance(element, np.ndarray):
        raw: Any = element
        fields: Mapping[str, Any] = {}
    else:
        fields = fields_view(element)
        raw = fields.get(name)
    if raw is None:
        raise ValueError(f"field {name!r} is missing or null")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        x = _unpack(raw, fields.get(shape_field), name, shape_field)
    elif isinstance(raw, str):
        raise ValueError(f"field {name!r} must be a batch of numbers, got str")
    else:
        try:
            x = np.asarray(raw)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"field {name!r} is not a numeric array: {exc}") from None
    if x.dtype.kind not in "iuf":
        raise ValueError(f"field {name!r} must contain only numbers (found dtype {x.dtype})")
    if x.ndim < 2:
        raise ValueError(f"field {name!r} must hold a batch, rows first (at least 2 "
                         f"dimensions), got shape {list(x.shape)}")
    if x.size == 0:
        raise ValueError(f"field {name!r} holds an empty batch (shape {list(x.shape)})")
    return x


def _unpack(raw: Any, shape: Any, name: str, shape_field: str) -> np.ndarray:
    if shape is None or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                and d >= 0 for d in shape):
        raise ValueError(f"field {name!r} holds packed float32 bytes, so field "
                         f"{shape_field!r} must give their shape as non-negative integers, "
                         f"rows first; got {shape!r}")
    dims = tuple(int(d) for d in shape)
    values = np.frombuffer(raw, dtype=PACKED)
    if values.size != math.prod(dims):
        raise ValueError(f"field {name!r} holds {values.size} float32 values, but "
                         f"{shape_field!r} {list(dims)} needs {math.prod(dims)}")
    return values.reshape(dims)
