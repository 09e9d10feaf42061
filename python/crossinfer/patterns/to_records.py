"""Input elements -> records, batched by shape where that cannot be observed.

Three ways to hand records on, chosen at construction (see
:func:`crossinfer.patterns.transforms.Inference.expand`):

* ``items``: one record per element, as they come (unbounded input, windows
  other than the global one);
* ``bucket``: one record per element, but when a bundle turns out to hold more
  than one feature shape, records are held and emitted grouped by shape, so
  Beam's batches downstream (an A/B split, a keyed node) hold one or two
  shapes instead of dozens;
* ``batches``: when the first step is a model with a fixed batch size,
  records leave as :class:`~crossinfer.records.ItemBatch` elements of one
  shape and up to that size, and RunInference skips Beam's own batching
  (:meth:`ModelNodeHandler.should_skip_batching`). Ragged input then never
  shares a batch across shapes, and Beam's per-element batching step is saved;
  so is a per-element NaN/infinity check: a batch is checked with one sum
  when it leaves, and its features are stacked in the same pass
  (:func:`crossinfer.rows.stack_batch`).

A shape's records leave as soon as they fill a batch, when too many are held
(the largest group leaves first), or at the end of the bundle. "Too many" is
``HELD_BATCHES`` batches' worth of records, or ``HELD_BYTES`` of features once
more than one shape is held (a single shape is held only until it fills a
batch, as Beam's own batching would hold it). Holding more does not pay: with
~60 lengths, 16 or 24 batches held made batches two or three times as large
but were no faster beyond the machine's noise, and 32 promoted enough held
records to the collector's oldest generation to cost a full collection
(~0.2 s) nearly every 100,000 records (``python -m bench.ragged --held
16,24,32``; ``--decompose`` puts ragged input's cost on holding records back
and the smaller batches, not on the number of shapes). Reordering and
batching here are only done for bounded input in the global window, where
RunInference's own batching would give every output the end of the window as
its timestamp anyway. Equal-shape input pays one dictionary lookup per element.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from crossinfer.records import Item, ItemBatch
from crossinfer.rows import IOConfig, stack_batch, to_item

#: Elements held per bundle at most, in batches of ``chunk``.
HELD_BATCHES = 8
#: Bytes of features held per bundle at most, once records of more than one
#: shape are held.
HELD_BYTES = 64 << 20
MODES = ("items", "bucket", "batches")
_FAILED = ("failed",)  # the group key of failures (no shape is a 1-tuple of str)


class ToRecords(beam.DoFn):
    def __init__(self, io: IOConfig, mode: str = "items", chunk: int = 256) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self._io = io
        self._mode = mode
        self._chunk = max(1, chunk)
        self._limit = self._chunk * HELD_BATCHES
        # A batch is screened for NaN/infinity once, when it leaves (_batch).
        self._screen_each = mode != "batches"

    def start_bundle(self) -> None:
        self._last_shape: tuple[Any, ...] | None = None
        self._last_group: list[Any] = []
        self._last_unit = 0
        self._groups: dict[tuple[Any, ...], list[Any]] | None = None
        #: Bytes of features per record of each group, taken from its first
        #: record (a group holds one shape; its dtype is the input's).
        self._units: dict[tuple[Any, ...], int] = {}
        self._held = 0
        self._held_bytes = 0
        if self._mode == "batches":
            self._groups = {}

    def process(self, element: Any) -> Iterable[Any]:
        record = to_item(element, self._io, screen_finite=self._screen_each)
        if self._mode == "items":
            return (record,)  # a tuple: cheaper for Beam than a generator
        shape = record.features.shape if type(record) is Item else _FAILED
        if self._groups is None:  # "bucket" mode, one shape so far: pass on
            if shape == self._last_shape or self._last_shape is None:
                self._last_shape = shape
                return (record,)
            self._groups = {}  # shapes vary in this bundle: group from now on
            self._last_shape = None
        if shape == self._last_shape:  # the common case: the same shape again
            group, unit = self._last_group, self._last_unit
        else:
            group = self._groups.get(shape)
            if group is None:
                group = self._groups[shape] = []
                self._units[shape] = record.features.nbytes if shape is not _FAILED else 0
            unit = self._units[shape]
            self._last_shape, self._last_group, self._last_unit = shape, group, unit
        group.append(record)
        self._held += 1
        self._held_bytes += unit
        if len(group) >= self._chunk:
            return self._release(shape)
        if self._held > self._limit or (self._held_bytes > HELD_BYTES and len(self._groups) > 1):
            return self._release(self._largest())
        return ()

    def _largest(self) -> tuple[Any, ...]:
        assert self._groups is not None
        best, size = None, -1
        for shape, group in self._groups.items():
            if len(group) > size:
                best, size = shape, len(group)
        return best  # type: ignore[return-value]

    def _release(self, shape: tuple[Any, ...]) -> Iterable[Any]:
        assert self._groups is not None
        group = self._groups.pop(shape)
        self._held -= len(group)
        self._held_bytes -= len(group) * self._units.pop(shape)
        if shape == self._last_shape:
            self._last_shape, self._last_group, self._last_unit = None, [], 0
        if self._mode == "batches":
            return (self._batch(group),)
        return group

    def _batch(self, group: list[Any]) -> ItemBatch:
        return stack_batch(group, self._io.features_field)

    def finish_bundle(self) -> Iterator[Any]:
        for group in (self._groups or {}).values():
            if self._mode == "batches":
                yield GlobalWindows.windowed_value_at_end_of_window(self._batch(group))
            else:
                for record in group:
                    yield GlobalWindows.windowed_value_at_end_of_window(record)
        self._groups = None
        self._units = {}
        self._held = self._held_bytes = 0
        self._last_shape, self._last_group, self._last_unit = None, [], 0

