"""The two ends of every pattern: input elements -> blocks, finished blocks -> outputs.

* :class:`ToBlocks` reads each element with a :class:`Reader` (how that way
  in carries rows: a row per element, :class:`RowReader`; a batch-native
  element; a client's batch of rows) into an
  :class:`~crossinfer.engine.assemble.Assembler`, which hands on blocks;
* :class:`ToOutputs` writes each finished block with a
  :class:`~crossinfer.engine.emit.Format`: results on the main output,
  failures tagged :data:`~crossinfer.wire.FAILURES_TAG`
  (:func:`finished_blocks`: the blocks a result PCollection came from).

Between the two, a spec's nodes pass blocks on (:mod:`crossinfer.patterns.graph`):
with a model at the end of every branch, an element costs the runner two steps
of its own (being read, and its output row), whatever the spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.pvalue import Row
from apache_beam.transforms.window import GlobalWindows

from crossinfer.engine.assemble import Assembler
from crossinfer.engine.block import NO_TIMING, Block, Failure
from crossinfer.engine.emit import Format, RowFormat
from crossinfer.rows import FAST_DTYPES, IOConfig, features_of, fields_view, key_of
from crossinfer.wire import FAILURES_TAG, INPUT_NODE

_Row = Row
_ndarray = np.ndarray


class Reader(Protocol):
    """How one way in reads an element's rows into an assembler."""

    def setup(self) -> None:
        """Prepare on the worker (once per DoFn instance)."""

    def read(self, element: Any, into: Assembler) -> tuple[Block, ...]:
        """Add ``element``'s rows (or its failure) to ``into``; the blocks it lets go."""


class RowReader:
    """One row per element: its features field (any numeric array, a list,
    packed float32 bytes) and, when ``keyed``, its key."""

    def __init__(self, io: IOConfig, keyed: bool) -> None:
        self._name = io.features_field
        self._key = io.key_field if keyed else None

    def setup(self) -> None:
        pass

    def read(self, element: Any, into: Assembler) -> tuple[Block, ...]:
        fields: Mapping[str, Any]
        if type(element) is _Row:
            fields = element.__dict__
        else:
            try:
                fields = fields_view(element)
            except TypeError as exc:
                return into.fail(Failure(element, INPUT_NODE, str(exc)))
        raw = fields.get(self._name)
        if type(raw) is not _ndarray or raw.ndim != 1 or raw.dtype not in FAST_DTYPES \
                or not raw.size:  # not the common case: a 1-D float array with values
            found = features_of(fields, self._name)
            if isinstance(found, str):
                return into.fail(Failure(element, INPUT_NODE, found))
            raw = found
        if self._key is None:
            return into.add_row(element, raw, None)
        return into.add_row(element, raw, key_of(fields, self._key))



class ToBlocks(beam.DoFn):
    """Input elements -> blocks (see the module doc). With ``size`` (bounded
    input in the global window), blocks of up to ``size`` rows of one shape;
    without, a block per element, for Beam's batching to join. With
    ``timing``, the blocks measure each model call on their rows' paths."""

    def __init__(self, reader: Reader, size: int | None, features_field: str,
                 keyed: bool, timing: bool = False) -> None:
        self._reader = reader
        self._size = size
        self._name = features_field
        self._keyed = keyed
        self._timing = timing

    def setup(self) -> None:
        self._reader.setup()
        self._assembler = Assembler(self._size, self._name, self._keyed)
        self._read = self._reader.read

    def start_bundle(self) -> None:
        self._assembler.start()

    def process(self, element: Any) -> tuple[Block, ...]:
        blocks = self._read(element, self._assembler)
        if self._timing:
            _start_timing(blocks)
        return blocks

    def finish_bundle(self) -> Iterator[Any]:
        blocks = self._assembler.finish()
        if self._timing:
            _start_timing(blocks)
        for block in blocks:
            yield GlobalWindows.windowed_value_at_end_of_window(block)


def _start_timing(blocks: Iterable[Block]) -> None:
    for block in blocks:  # new blocks, not yet handed on: set in place
        block.timing = [NO_TIMING] * len(block)


class ToOutputs(beam.DoFn):
    """Finished blocks -> results (main output) and failures (tagged)."""

    def __init__(self, fmt: Format) -> None:
        self._format = fmt

    @property
    def format(self) -> Format:
        return self._format

    def process(self, block: Block) -> Iterable[Any]:
        out = self._format.results(block)
        if block.failures:
            failure = self._format.failure
            out.extend(pvalue.TaggedOutput(FAILURES_TAG, failure(f)) for f in block.failures)
        return out

    def finish_bundle(self) -> Iterator[Any]:
        for value in self._format.flush():
            yield GlobalWindows.windowed_value_at_end_of_window(value)


def finished_blocks(results: Any) -> Any:
    """The finished blocks ``results`` was written from, when ``results`` is,
    as made, the result rows of a crossinfer transform (the main output of its
    :class:`ToOutputs` step, ``beam.Row`` s of the input's fields then the
    output fields: :attr:`~crossinfer.engine.emit.RowFormat.beam_rows`); None
    for any other PCollection (rows a later step made or passed on, another
    format, rows from another SDK).

    The experiment report reads these blocks rather than the rows: their
    outputs are columns already, so nothing runs per result."""
    producer = getattr(results, "producer", None)
    fn = getattr(getattr(producer, "transform", None), "fn", None)
    if getattr(results, "tag", "") is not None or not isinstance(fn, ToOutputs) \
            or not isinstance(fn.format, RowFormat) or not fn.format.beam_rows:
        return None
    return producer.inputs[0]  # type: ignore[union-attr]  # (a ParDo's main input)
