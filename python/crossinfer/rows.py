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

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np

from crossinfer.records import Failure, Item, ItemBatch

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


def fields_view(element: Any) -> Mapping[str, Any]:
    """Like :func:`field_dict`, without copying a dict's, a Beam Row's or a
    NamedTuple's fields (the hot path: read them, never write them)."""
    t = type(element)
    if t is beam.Row or t is dict:
        return element if t is dict else element.__dict__
    if isinstance(element, beam.Row):
        return element.__dict__  # a Row keeps its fields, in order, in its __dict__
    if _is_named_tuple(t):
        return _TupleFields(element)
    return field_dict(element)


@functools.cache
def _is_named_tuple(t: type) -> bool:
    return issubclass(t, tuple) and isinstance(getattr(t, "_fields", None), tuple)


class _TupleFields(Mapping[str, Any]):
    """A NamedTuple's fields as a read-only mapping, without ``_asdict()``'s
    dict. Rows from another SDK (Java, Go) reach the Python workers as
    NamedTuples: this is the per-element path at the language boundary."""

    __slots__ = ("_t",)

    def __init__(self, t: tuple) -> None:
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


_MISSING = object()
_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: Packed features: little-endian float32 values in a ``bytes`` field.
PACKED_DTYPE = np.dtype("<f4")


def to_item(element: Any, io: IOConfig, stage: str = "input",
            screen_finite: bool = True) -> Item | Failure:
    """Validate an input element and turn it into an :class:`Item`, or a
    :class:`Failure` that says what is wrong with it. With ``screen_finite``
    false, NaN and infinity are left for the caller to find, once for many
    elements (:func:`screen_batch`)."""
    try:
        fields = fields_view(element)
    except TypeError as exc:
        return Failure(element, stage, str(exc))
    name = io.features_field
    raw = fields.get(name, _MISSING)
    if type(raw) is np.ndarray:
        # The common case first: a 1-D float32/64 array with values.
        if raw.ndim == 1 and raw.dtype in _FAST_DTYPES and raw.size and \
                (not screen_finite or math.isfinite(_sum(raw))):
            key = fields.get(io.key_field)
            return Item(element, raw, key if key is None or type(key) is str else str(key))
        features = raw
    else:
        if raw is _MISSING:
            return Failure(element, stage, f"the input has no field {name!r} "
                                           f"(fields: {', '.join(sorted(fields)) or 'none'})")
        if raw is None:
            return Failure(element, stage, f"field {name!r} is null")
        if isinstance(raw, (bytes, bytearray)):
            # Packed features: little-endian float32 values, one flat vector (a
            # `reshape` op gives them a shape). One copy-free view instead of a
            # list of boxed numbers: the cheap encoding across languages.
            if len(raw) % 4:
                return Failure(element, stage,
                               f"field {name!r} holds {len(raw)} bytes; packed features "
                               f"are little-endian float32 values, 4 bytes each")
            features = np.frombuffer(raw, dtype=PACKED_DTYPE)
        elif isinstance(raw, str):
            return Failure(element, stage, f"field {name!r} must be an array of numbers, got "
                                           f"str")
        else:
            try:
                features = np.asarray(raw)
            except (ValueError, TypeError) as exc:
                return Failure(element, stage, f"field {name!r} is not a numeric array: {exc}")
    problem = check_features(features, name, screen_finite)
    if problem is not None:
        return Failure(element, stage, problem)
    key = fields.get(io.key_field)
    return Item(element, features, key if key is None or type(key) is str else str(key))


def check_features(features: np.ndarray, name: str, finite: bool = True) -> str | None:
    """Why ``features`` cannot be inferred, or None when they can: numbers
    only, not empty, and (with ``finite``) finite. The finiteness check is
    one sum (a NaN or an infinity makes it non-finite); only a non-finite sum
    is looked at closely, since finite values can also overflow a sum."""
    kind = features.dtype.kind
    if kind not in "iuf":
        return f"field {name!r} must contain only numbers (found {_kind_name(features)})"
    if features.size == 0:
        return f"field {name!r} is empty"
    if finite and kind == "f" and not surely_finite(features):
        bad = np.flatnonzero(~np.isfinite(features.reshape(-1)))
        if bad.size:
            return f"field {name!r} contains NaN or infinity (first at index {int(bad[0])})"
    return None


def stack_batch(records: list[Any], name: str, stage: str = "input") -> ItemBatch:
    """``records`` (Items of one feature shape, and Failures) as an
    :class:`ItemBatch`, screened as :func:`screen_batch` does. When all are
    Items and all finite, the concatenation the screen sums over is kept,
    shaped rows first, as the batch's ``stacked`` features: the model step
    then takes it as is, instead of visiting every record again to group and
    stack them (one pass over each record fewer: +3-7% elements/s one row per
    element, ``bench/README.md``). The batch holds its features twice, the
    records' and the stacked copy, for as long as it is in flight."""
    arrays = [r.features for r in records if type(r) is Item]
    if arrays and len(arrays) == len(records):
        flat = np.concatenate(arrays, axis=None)
        if flat.dtype.kind != "f" or surely_finite(flat):
            return ItemBatch(records, flat.reshape((len(arrays), *arrays[0].shape)))
    return ItemBatch(screen_batch(records, name, stage))


def screen_batch(records: list[Any], name: str, stage: str = "input") -> list[Any]:
    """``records`` (Items of one feature shape, and Failures) with every Item
    whose features hold NaN or infinity replaced by its Failure, as
    :func:`to_item` would have made it: for Items made with
    ``screen_finite=False``. One sum over the whole batch (~0.1 us an element
    instead of ~1 us for a sum per element); only a non-finite total is
    looked at element by element."""
    arrays = [r.features for r in records if type(r) is Item and r.features.dtype.kind == "f"]
    if not arrays or surely_finite(np.concatenate(arrays, axis=None)):
        return records
    screened = []
    for record in records:
        if type(record) is Item:
            problem = check_features(record.features, name)
            if problem is not None:
                record = Failure(record.original, stage, problem)
        screened.append(record)
    return screened


def surely_finite(features: np.ndarray) -> bool:
    """True when every value is surely finite: the sum of finite values is
    finite unless it overflows (a NaN or an infinity makes it NaN or
    infinite). Values near the dtype's limit overflow it: numpy warns once,
    and the exact check decides."""
    return math.isfinite(_sum(features if features.ndim == 1 else features.reshape(-1)))


def nonfinite_rows(arrays: list[np.ndarray | None], n: int) -> np.ndarray | None:
    """A boolean mask of the rows (of ``n``, the first axis of every array)
    where any of ``arrays`` holds NaN or infinity, or None when all values are
    finite (one sum per array: only a non-finite sum is looked at row by row)."""
    bad: np.ndarray | None = None
    for values in arrays:
        if values is None or values.dtype.kind != "f" or surely_finite(values):
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


def float_list(values: Any) -> list[float]:
    """An array's values, flattened, as Python floats."""
    arr = np.asarray(values)
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr.reshape(-1).tolist()  # float16/32 values convert to float exactly


RowFactory = Callable[..., Any]


def inference_values(item: Item) -> list[float]:
    """The ``inference`` output of a finished item: the model step's list when it
    made one for its whole batch, else its output (or features) flattened."""
    if item.inference_list is not None:
        return item.inference_list
    return float_list(item.inference if item.inference is not None else item.features)


def to_output_row(item: Item, factory: RowFactory = beam.Row) -> Any:
    """Input fields + output fields. Output fields win over input fields of the
    same name."""
    inference = inference_values(item)
    original = item.original
    if factory is not beam.Row and _appends_outputs(factory, type(original)):
        # A NamedTuple in, a NamedTuple type out whose fields are the input's
        # then the output fields (the expansion service's result rows): one
        # tuple, no dict of the fields, no keyword arguments.
        return tuple.__new__(factory, (*original, item.model, item.path, inference, item.label,
                                       item.score, item.labels, item.scores))
    values = dict(fields_view(original))
    values["model"] = item.model
    values["path"] = item.path
    values["inference"] = inference
    values["label"] = item.label
    values["score"] = item.score
    values["labels"] = item.labels
    values["scores"] = item.scores
    if factory is beam.Row:  # Row(**values) without unpacking the keywords
        row = _new_row(beam.Row)
        row.__dict__ = values
        return row
    return factory(**values)


_new_row = object.__new__


@functools.cache
def _appends_outputs(factory: Any, input_type: type) -> bool:
    """Whether ``factory`` is a NamedTuple type whose fields are exactly those of
    the NamedTuple type ``input_type`` followed by :data:`OUTPUT_FIELDS`."""
    return (_is_named_tuple(input_type) and isinstance(factory, type)
            and _is_named_tuple(factory)
            and factory._fields == input_type._fields + OUTPUT_FIELDS)


def to_failure_row(failure: Failure, factory: RowFactory = beam.Row) -> Any:
    return factory(element=failure.original, node=failure.node, error=failure.error)
