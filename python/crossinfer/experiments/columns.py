"""Report inputs as columns: the report's per-row work done once per chunk, with numpy.

The report reads each result with one C-level call (an ``operator.itemgetter``
of the fields it needs: ~0.3 us) and extends a chunk with the values; a chunk
of rows becomes :class:`Columns` (numpy arrays, one per :class:`ReportInput`
field), and the accumulators (:mod:`crossinfer.experiments.combiners`) take
whole arms of a chunk: counts, label histograms, moments and, for a mirror,
the pairs of an element's arms (:func:`pair_rows`). Reading a result into a
:class:`ReportInput` and adding it row by row cost ~4.7 us per result (issue
18: the report's share of an A/B pipeline's time, ``bench.experiments``).

Missing values: a label is :data:`NO_LABEL`; a score, value or ground truth
is NaN (the statistics count finite values only, as before).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter, methodcaller
from typing import Any, NamedTuple, cast
from zlib import crc32

import numpy as np
from apache_beam.pvalue import Row

from crossinfer.engine.block import Block, ColumnRows
from crossinfer.engine.emit import output_columns, row_originals
from crossinfer.experiments.schema import ReportInput
from crossinfer.rows import fields_view
from crossinfer.wire import OUTPUT_FIELDS

#: The label of a row without one (an int64 no model's class index is).
NO_LABEL = int(np.iinfo(np.int64).min)
_INT64_MAX = int(np.iinfo(np.int64).max)

#: The columns, in :class:`ReportInput`'s field order.
FIELDS = ReportInput._fields
#: A result row's ``inference`` (a list), read in place of ``value``: a
#: one-value inference is the regression value (:class:`ReportInput`).
INFERENCE = "inference"


#: An element id as the report holds it: its text, or an ``int`` as it is
#: (``1`` and ``"1"`` are one id: ints are made text only where ids of other
#: types meet them, :func:`same_ids`, and when they leave for the join).
Id = str | int


@dataclass
class Columns:
    """A chunk of report inputs, one array per field (n rows).

    ``arm``: each row's arm index (int64, into the report's arm list; the last
    index is the rows of no arm); ``failed`` bool; ``label`` int64
    (:data:`NO_LABEL`: none); ``score``, ``value``, ``truth`` float64 (NaN:
    none); ``id``, ``key``: text or None per row (None when no row has one);
    ``model_ms``, ``batch_size``: each row's raw timing (None: no timing field)."""

    arm: np.ndarray
    failed: np.ndarray
    label: np.ndarray
    score: np.ndarray
    value: np.ndarray
    truth: np.ndarray
    id: list[Id | None] | None
    key: list[str | None] | None
    model_ms: Sequence[Any] | None
    batch_size: Sequence[Any] | None

    def __len__(self) -> int:
        return len(self.arm)

    @staticmethod
    def concat(parts: Sequence[Columns]) -> Columns:
        """The rows of ``parts``, one after another."""
        if len(parts) == 1:
            return parts[0]

        def rows(name: str) -> Any:
            values = [getattr(p, name) for p in parts]
            if all(v is None for v in values):
                return None
            out: list[Any] = []
            for part, v in zip(parts, values, strict=True):
                out.extend([None] * len(part) if v is None else v)
            return out

        def arrays(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        return Columns(arrays("arm"), arrays("failed"), arrays("label"), arrays("score"),
                       arrays("value"), arrays("truth"), rows("id"), rows("key"),
                       rows("model_ms"), rows("batch_size"))


class BlockColumns(NamedTuple):
    """:func:`columns_of_block`'s answer: the ``columns``, how many rows lack
    the ground-truth field (``missing``), and the fields of a result row that
    does (``example``, for the log)."""

    columns: Columns
    missing: int
    example: Sequence[str]


def columns_of_block(block: Block, arm: int, truth: str | None, id_field: str | None,
                     key_field: str | None, value: bool) -> BlockColumns:
    """A finished block's n rows as :class:`Columns`: what :func:`columns_of`
    gives for the block's result rows (:class:`~crossinfer.engine.emit.RowFormat`:
    each row's input fields, then the output fields), read from the block's
    output arrays; only ``truth``, ``id_field`` and ``key_field`` (input fields
    no output field shadows) are read per row, from its input element, and,
    when the transform measured no timing, an element's own ``model_ms`` and
    ``batch_size`` fields (a result row carries them: the report reads them as
    timing). ``arm``: every row's arm index (a block is one path); ``value``:
    the one-value inference is read (else NaN)."""
    n = len(block)
    c = output_columns(block)
    field = _FieldReader(row_originals(block), n)
    missing = 0
    example: Sequence[str] = ()
    truths = np.full(n, np.nan)
    if truth:
        found, missing = field(truth)
        truths = floats_of(found)
        if missing:
            example = (*field.example_without(truth), *OUTPUT_FIELDS)
    values = np.full(n, np.nan)
    inference = c.inference
    if value and inference.shape[1] == 1:  # (a result row's one-value inference list)
        values = inference[:, 0].astype(np.float64)
    if block.timing is not None:
        model_ms: list[Any] | None = [ms for ms, _ in block.timing]
        batch_size: list[Any] | None = [sizes for _, sizes in block.timing]
    elif field.any_has("model_ms"):
        model_ms = _unless_none(list(field("model_ms")[0]))  # (copies: a column is the
        batch_size = _unless_none(list(field("batch_size")[0]))  # block's own)
    else:
        model_ms = batch_size = None
    return BlockColumns(Columns(
        arm=np.full(n, arm, dtype=np.int64), failed=np.zeros(n, dtype=bool),
        label=np.full(n, NO_LABEL, dtype=np.int64) if c.label is None
        else c.label.astype(np.int64).reshape(n),
        score=np.full(n, np.nan) if c.score is None else c.score.astype(np.float64).reshape(n),
        value=values, truth=truths,
        id=ids_of(field(id_field)[0]) if id_field else None,
        key=texts_of(field(key_field)[0]) if key_field else None,
        model_ms=model_ms, batch_size=batch_size), missing, example)


class _FieldReader:
    """One field of every original of a block's rows: from the originals'
    columns when the block was rebuilt from them (:class:`ColumnRows`: every
    row has the same fields), else read row by row (each row's fields found
    once, on the first read)."""

    def __init__(self, originals: list[Any], n: int) -> None:
        self._originals = originals
        self._n = n
        self._columns: dict[str, Any] | None = \
            originals.columns if type(originals) is ColumnRows else None
        self._fields: tuple[list[Mapping[str, Any]], bool] | None = None

    def __call__(self, name: str) -> tuple[list[Any], int]:
        """Each row's value of ``name`` (None where it has none, as in the copy
        of its fields a result row is), and how many have none."""
        if self._columns is not None:
            column = self._columns.get(name)
            if column is None:
                return [None] * self._n, self._n
            if type(column) is list:  # (a stacked array's rows: read from the rows)
                return column, 0
        return _field(*self._rows(), name)

    def any_has(self, name: str) -> bool:
        if self._columns is not None:
            return name in self._columns
        return any(map(methodcaller("__contains__", name), self._rows()[0]))

    def example_without(self, name: str) -> Sequence[str]:
        """The fields of a row without ``name`` (for the log)."""
        return tuple(next(f for f in self._rows()[0] if name not in f))

    def _rows(self) -> tuple[list[Mapping[str, Any]], bool]:
        if self._fields is None:
            self._fields = _fields_of(self._originals)
        return self._fields


def _fields_of(originals: list[Any]) -> tuple[list[Mapping[str, Any]], bool]:
    """Each element's fields (:func:`~crossinfer.rows.fields_view`), and
    whether each is a plain ``dict`` (a Row's ``__dict__``, or a dict: read by
    ``itemgetter``; a dict subclass's ``__missing__`` would make up a value,
    and write it into the element)."""
    kinds = set(map(type, originals))
    if kinds == _ROW:
        return list(map(vars, originals)), True  # (a Row keeps its fields in its __dict__)
    if kinds == _DICT:
        return originals, True
    return list(map(fields_view, originals)), False


_ROW = {Row}
_DICT = {dict}


def _field(fields: list[Mapping[str, Any]], plain: bool, name: str) -> tuple[list[Any], int]:
    """Each row's value of ``name`` (None where it has none, as in the copy
    of its fields a result row is), and how many have none."""
    if plain:
        try:
            return list(map(itemgetter(name), fields)), 0
        except KeyError:
            pass
    return [f.get(name) for f in fields], sum(name not in f for f in fields)


def columns_of(values: list[Any], roles: Sequence[str],
               arm_index: Callable[[list[Any]], list[int]]) -> Columns:
    """Rows' field values, one row after another (each row's values in the
    fields ``roles`` names: a :data:`FIELDS` name or :data:`INFERENCE`) ->
    :class:`Columns`. ``arm_index``: the paths of the rows -> their arm
    indexes. A role not in ``roles`` is missing in every row."""
    k = len(roles)
    n = len(values) // k
    cols: dict[str, list[Any]] = {role: values[i::k] for i, role in enumerate(roles)}
    value = cols.get("value")
    if value is None and INFERENCE in cols:
        value = [v[0] if v is not None and length(v) == 1 else None for v in cols[INFERENCE]]
    failed = cols.get("failed")
    return Columns(
        arm=np.asarray(arm_index(cols["path"] if "path" in cols else [None] * n),
                       dtype=np.int64).reshape(n),
        failed=np.zeros(n, dtype=bool) if failed is None else np.array(
            [bool(x) for x in failed], dtype=bool).reshape(n),
        label=labels_of(cols["label"]) if "label" in cols else np.full(n, NO_LABEL),
        score=_floats_or_nan(cols.get("score"), n),
        value=_floats_or_nan(value, n),
        truth=_floats_or_nan(cols.get("truth"), n),
        id=ids_of(cols["id"]) if "id" in cols else None,
        key=texts_of(cols["key"]) if "key" in cols else None,
        model_ms=_unless_none(cols.get("model_ms")),
        batch_size=_unless_none(cols.get("batch_size")))


def _unless_none(values: list[Any] | None) -> list[Any] | None:
    """``values``, or None when every one is None (rows without timing)."""
    return None if values is None or values.count(None) == len(values) else values


def _floats_or_nan(values: Sequence[Any] | None, n: int) -> np.ndarray:
    return np.full(n, np.nan) if values is None else floats_of(values)


def length(x: Any) -> int:
    """``len(x)``; -1 for a value without one (a malformed field)."""
    try:
        return len(x)
    except TypeError:
        return -1


def labels_of(values: Sequence[Any]) -> np.ndarray:
    """int64 labels; :data:`NO_LABEL` for a value that is none or no integer
    (``int()`` of it, as a label field is read; NaN, infinities and text
    that is not a number have none)."""
    n = len(values)
    kinds = set(map(type, values))  # one C pass; the common case: all ints, or all None
    if kinds == _INT:
        try:
            return np.array(values, dtype=np.int64).reshape(n)
        except OverflowError:
            pass
    elif kinds == _NONE:
        return np.full(n, NO_LABEL, dtype=np.int64)
    return np.array([_label(x) for x in values], dtype=np.int64).reshape(n)


_INT = {int}
_NONE = {type(None)}
_NUMBERS = {int, float}


def label_of(x: Any) -> int | None:
    """A label field's value as the report reads it (``int()`` of it, as
    :func:`labels_of`); None where it has none - none, text that is no
    integer, NaN, an infinity, or past int64."""
    v = _label(x)
    return None if v == NO_LABEL else v


def _label(x: Any) -> int:
    if x is None:
        return NO_LABEL
    try:
        v = int(x)
    except (TypeError, ValueError, OverflowError):
        return NO_LABEL
    return v if NO_LABEL < v <= _INT64_MAX else NO_LABEL


def floats_of(values: Sequence[Any]) -> np.ndarray:
    """float64 values; NaN for a value that is none, text, bytes or no number."""
    n = len(values)
    kinds = set(map(type, values))  # (np.array of any objects could make a huge text array)
    if kinds <= _NUMBERS:
        try:
            return np.array(values, dtype=np.float64).reshape(n)
        except OverflowError:
            pass
    elif kinds == _NONE:
        return np.full(n, np.nan)
    # (np.array takes each None as NaN)
    return np.array([number(x) for x in values], dtype=np.float64).reshape(n)


def number(x: Any) -> float | None:
    """A field's value as a float; None for none, text, bytes or no number
    (a column holds it as NaN)."""
    if type(x) is float:
        return x
    if x is None or isinstance(x, (str, bytes)):
        return None
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return None


def text(x: Any) -> str | None:
    """A field's value as text, None kept. An ``int`` too long for its decimal
    text (CPython refuses ``str()`` of one past ``sys.get_int_max_str_digits()``
    digits, 4,300 by default: its conversion takes quadratic time) is its hex
    text, ``0x...`` - still one text per int, the same in every process, so
    such an id pairs with its own copies and such a key counts once; it
    cannot meet its decimal text."""
    if x is None:
        return None
    try:
        return str(x)
    except ValueError:
        if isinstance(x, int):
            return format(x, "#x")
        raise


def ids_of(values: Sequence[Any]) -> list[Id | None]:
    """Element ids to pair a mirror's results on: ints as they are when every
    value is an ``int`` (an int's text names it alone, so ints pair as their
    texts would, without making 100,000 texts a bundle), else as text; None
    kept."""
    kinds = set(map(type, values))
    if kinds == _STR or kinds == _INT:
        return list(values)
    return cast(list[Id | None], texts_of(values))


def same_ids(ids: list[list[Id]]) -> list[list[Id]]:
    """Per arm, its held ids, as they are when every arm's are all ``int`` or
    all text, else as text (ids read as ints from one chunk and as text from
    another pair as text: ``1`` and ``"1"`` are one id)."""
    kinds: set[type] = set().union(*(set(map(type, arm_ids)) for arm_ids in ids))
    if kinds <= _INT or kinds <= _STR:
        return ids
    return [cast(list[Id], texts_of(arm_ids)) for arm_ids in ids]


_STR = {str}


def texts_of(values: Sequence[Any]) -> list[str | None]:
    """Each value as text, None kept."""
    if all(type(x) is str for x in values):
        return list(values)
    return [x if type(x) is str else text(x) for x in values]


def label_counts(labels: np.ndarray) -> Counter[int]:
    """The histogram of ``labels`` (int64), :data:`NO_LABEL` left out."""
    return Counter(dict(_counts(labels[labels != NO_LABEL])))


def pair_counts(first: np.ndarray, second: np.ndarray) -> Counter[tuple[int, int]]:
    """How often each ``(first[i], second[i])`` occurs (int64 labels, aligned)."""
    if not len(first):
        return Counter()
    lo = int(min(first.min(), second.min()))
    span = int(max(first.max(), second.max())) - lo + 1
    if span > 1 << 31:  # labels far apart: codes could overflow int64; sort the pairs
        found, counts = np.unique(np.stack([first, second], axis=1), axis=0, return_counts=True)
        return Counter({(int(a), int(b)): int(c)
                        for (a, b), c in zip(found.tolist(), counts.tolist(), strict=True)})
    return Counter({(lo + code // span, lo + code % span): n
                    for code, n in _counts((first - lo) * span + (second - lo))})


#: The widest range of values a histogram counts in one pass (np.bincount:
#: 512 KiB of counts) rather than by sorting.
_MAX_BINS = 1 << 16


def _counts(values: np.ndarray) -> Iterable[tuple[int, int]]:
    """(value, count) of each distinct int64 value: class indices (a small
    range) in one pass, others by sorting."""
    if not len(values):
        return []
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < _MAX_BINS:
        counts = np.bincount(values - lo)
        found = np.flatnonzero(counts)
        return zip((found + lo).tolist(), counts[found].tolist(), strict=True)
    found, counts = np.unique(values, return_counts=True)
    return zip(found.tolist(), counts.tolist(), strict=True)


@dataclass
class Sides:
    """What pairing needs of n results of one arm, aligned by row: ``label``
    int64, ``score``, ``value``, ``truth`` float64 (see :class:`Columns`)."""

    label: np.ndarray
    score: np.ndarray
    value: np.ndarray
    truth: np.ndarray

    def take(self, rows: np.ndarray) -> Sides:
        return Sides(self.label[rows], self.score[rows], self.value[rows], self.truth[rows])

    @staticmethod
    def concat(parts: Sequence[Sides]) -> Sides:
        if len(parts) == 1:
            return parts[0]
        return Sides(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in ("label", "score", "value", "truth")))


def sides_of(cols: Columns, rows: np.ndarray) -> Sides:
    return Sides(cols.label[rows], cols.score[rows], cols.value[rows], cols.truth[rows])


def pair_rows(ids: Sequence[Sequence[Any]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The elements every arm has exactly once, by id.

    ``ids``: per arm, its held results' ids (in row order). Returns, per arm,
    the rows of the complete elements (aligned: row ``k`` of every arm is one
    element), and the rows left (ids not yet in every arm, and ids seen more
    than once in an arm: not unique, so left for the join to refuse)."""
    aligned = _aligned(ids)
    if aligned:  # row k of every arm is one element (see _aligned): no lookups
        rows = np.arange(aligned)
        return [rows] * len(ids), [np.arange(aligned, len(arm_ids)) for arm_ids in ids]
    where: list[dict[Any, int]] = []
    repeated: set[Any] = set()
    for arm_ids in ids:
        first = dict(zip(arm_ids, range(len(arm_ids)), strict=True))
        if len(first) != len(arm_ids):
            repeated.update(k for k, c in Counter(arm_ids).items() if c > 1)
        where.append(first)
    complete = set(where[0]).intersection(*where[1:])
    complete -= repeated
    order = list(complete)
    paired = [np.fromiter(map(w.__getitem__, order), dtype=np.int64, count=len(order))
              for w in where]
    left = []
    for arm_ids, rows in zip(ids, paired, strict=True):
        keep = np.ones(len(arm_ids), dtype=bool)
        keep[rows] = False
        left.append(np.flatnonzero(keep))
    return paired, left


def utf8(texts: Sequence[str]) -> list[bytes]:
    """Ids or keys as UTF-8, lone surrogates kept (``surrogatepass``): what
    leaves a step for the join (Beam's coders encode ``str`` as strict UTF-8,
    which fails on a lone surrogate; these bytes are the same for the same
    text in every arm and process, and differ for different texts)."""
    return [t.encode("utf-8", "surrogatepass") for t in texts]


def join_buckets(keys: Sequence[bytes], buckets: int) -> Iterator[tuple[int, np.ndarray]]:
    """The rows of ``keys`` (:func:`utf8` ids or keys) per join bucket,
    ``(bucket, rows)`` (int64 row numbers, in row order), for buckets that
    have rows. A key's bucket is ``CRC-32(key) mod buckets``: the same in every
    worker process (Python's ``hash`` of a str or bytes is salted per
    process, so it cannot say where another worker's copy of the key went)."""
    if not keys:
        return
    found = np.fromiter(map(crc32, keys), dtype=np.int64, count=len(keys)) % buckets
    order = np.argsort(found, kind="stable")
    for rows in np.split(order, np.flatnonzero(np.diff(found[order])) + 1):
        yield int(found[rows[0]]), rows


def _aligned(ids: Sequence[Sequence[Any]]) -> int:
    """How many first ids every arm holds in the same order, each once and in
    no arm further on (0: not so): those pair row by row, as the general
    path would pair them. A mirror's arms run the same blocks in the same
    order, so each arm's results usually arrive in the same order."""
    m = min(len(arm_ids) for arm_ids in ids)
    if not m:
        return 0
    first = list(ids[0][:m])
    if any(list(arm_ids[:m]) != first for arm_ids in ids[1:]):
        return 0
    seen = set(first)
    if len(seen) != m or any(not seen.isdisjoint(arm_ids[m:]) for arm_ids in ids):
        return 0
    return m
