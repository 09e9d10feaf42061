"""Batch-native input: elements that already carry many rows.

``rows | BatchedInference(spec)`` takes elements that each hold a batch -
a numpy array with the rows first, a Row/dict whose features field holds one
(or a list of equal-length lists), or a *packed tensor*: the features field
holds little-endian float32 bytes and a ``shape`` field their shape, rows
first, which is how a batch crosses a language boundary cheaply. An element's
rows stay together end to end: small elements are joined into one model call
up to the model's ``max_batch_size`` rows, large ones run alone, so the
per-element cost of the runner is paid once per element, not once per row.

Outputs, one result row per input element: the input fields, plus ``model``,
``path``, ``inference`` (a numpy array, one row per row), ``label``/``score``
and ``labels``/``scores`` (numpy arrays, when post-processing sets them) and
``index`` (the rows of the input element these results are for, in order),
and with ``timing=True`` ``model_ms`` (list of float: per model stage, its
call's wall time over its rows, ms) and ``batch_size`` (list of int: that
call's rows) - an element's rows run in one call per stage, so one list each.
Failures: one row per failed input row - ``element`` (the input element),
``node``, ``error`` and ``index`` (the row; None when the whole element is
malformed). Rows in == rows in results + failures.

Model and sequence specs are supported; A/B and keyed specs route single
rows and are refused at construction (use :class:`Inference`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossinfer.engine.assemble import Assembler
from crossinfer.engine.block import Block, Failure
from crossinfer.engine.emit import BatchRowFormat, Format
from crossinfer.patterns.edges import Reader
from crossinfer.patterns.graph import routing_node
from crossinfer.patterns.transforms import Inference
from crossinfer.rows import batch_of
from crossinfer.wire import INPUT_NODE


class BatchReader:
    """Many rows per element (:func:`crossinfer.rows.batch_of`)."""

    def __init__(self, features_field: str, shape_field: str) -> None:
        self._name = features_field
        self._shape_field = shape_field

    def setup(self) -> None:
        pass

    def read(self, element: Any, into: Assembler) -> tuple[Block, ...]:
        try:
            x = batch_of(element, self._name, self._shape_field)
        except (ValueError, TypeError) as exc:
            return into.fail(Failure(element, INPUT_NODE, str(exc)))
        n = len(x)
        return into.add_rows([element], x, owner=np.zeros(n, dtype=np.int64),
                             index=np.arange(n))


class BatchedInference(Inference):
    """Run a model or sequence spec on batch-native elements (see the module doc).

    Takes the arguments of :class:`Inference` (``timing=True`` included: each
    result row gets ``model_ms`` and ``batch_size``), plus ``shape_field`` (the
    field giving the shape of a packed float32 ``bytes`` features field).

    Raises:
      TypeError: the spec routes single rows (an A/B or keyed node).
    """

    multirow = True

    def __init__(self, spec: Any, *, features_field: str = "features",
                 shape_field: str = "shape", **kwargs: Any) -> None:
        super().__init__(spec, features_field=features_field, **kwargs)
        routing = routing_node(self.spec.node)
        if routing is not None:
            raise TypeError(f"BatchedInference runs model and sequence nodes; {routing.kind} "
                            f"node {routing.name!r} routes single elements: use "
                            "crossinfer.Inference")
        self.shape_field = shape_field

    def _reader(self) -> Reader:
        return BatchReader(self.io.features_field, self.shape_field)

    def _format(self) -> Format:
        return BatchRowFormat(self._output_factory, self._failure_factory)
