"""Run one spec through each of crossinfer's engine paths, with the same rows.

Every way in and out of crossinfer's one engine (rows -> blocks -> the model
runner -> outputs, ``crossinfer.engine``) is a way a promise about models can
break, so each is run:

* ``per_element``: windowed input, a block per element, Beam's batching joins
  them (``ToBlocks`` without a size; ``Arrival.ROWS``);
* ``crossinfer_batches``: bounded input in the global window, blocks made by
  crossinfer itself (``ToBlocks`` with the model's batch size; ``Arrival.BLOCKS``);
* ``batch_native``: elements that are batches (``BatchedInference``;
  ``BatchReader``, ``BatchRowFormat``) - model and sequence specs only;
* ``batch_transport``: rows packed in batches as the Java SDK sends them to
  the expansion service (``BatchTransportInference``; ``BatchTransportReader``,
  ``ResultBatchFormat``), any spec.

A keyed spec takes the keyed route step (blocks grouped by route) on each of them.

:func:`run_path` returns an :class:`Outcome` keyed by row id, whatever the path.
"""

# No ``from __future__ import annotations``: Beam reads Packed's annotations.

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import apache_beam as beam
import numpy as np
from apache_beam.coders import RowCoder
from apache_beam.portability.api import schema_pb2
from apache_beam.transforms import window
from apache_beam.typehints.schemas import named_tuple_to_schema

import crossinfer as ci
from crossinfer.expansion import transport
from crossinfer.patterns.batched import BatchedInference, routing_node
from crossinfer.spec import load_spec
from crossinfer.wire import RESULT_COLUMNS
from support import run

PATHS = ("per_element", "crossinfer_batches", "batch_native", "batch_transport")
#: Rows per element on the batch-native path and per batch on the transport.
BATCH_ROWS = 16


class Packed(NamedTuple):
    id: int
    key: Optional[str]  # noqa: UP045 - Beam's schema inference needs typing.Optional
    features: Optional[bytes]  # noqa: UP045


BatchRow = transport.named_tuple_from_schema(transport.BATCH_SCHEMA)


class Result(NamedTuple):
    path: str
    model: str
    inference: np.ndarray
    label: Optional[int]  # noqa: UP045


@dataclass
class Outcome:
    """Results and failures by row id (a mirror A/B gives a row several)."""

    results: dict[int, list[Result]] = field(default_factory=dict)
    failures: dict[int, list[tuple[str, str]]] = field(default_factory=dict)

    def add_result(self, row_id: int, result: Result) -> None:
        self.results.setdefault(row_id, []).append(result)

    def add_failure(self, row_id: int, node: str, error: str) -> None:
        self.failures.setdefault(row_id, []).append((node, error))

    def by_path(self, path: str) -> dict[int, Result]:
        """The results of one model path, by row id."""
        return {i: r for i, rs in self.results.items() for r in rs if r.path == path}

    def failed_at(self, node: str) -> dict[int, str]:
        """The errors of the failures of one node path, by row id."""
        return {i: e for i, fs in self.failures.items() for n, e in fs if n == node}


def paths_for(spec: Any) -> tuple[str, ...]:
    """The paths a spec can take (batch-native elements need model/sequence specs)."""
    node = load_spec(spec, ci.LoadPolicy(check_files=False)).node if not isinstance(
        spec, ci.InferenceSpec) else spec.node
    return PATHS if routing_node(node) is None else tuple(
        p for p in PATHS if p != "batch_native")


def run_path(path: str, rows: list[tuple[int, Optional[str], np.ndarray]], spec: Any,  # noqa: UP045
             policy: ci.LoadPolicy) -> Outcome:
    """``rows`` (id, key, float32 features) through ``spec`` on one path."""
    runner = {"per_element": _per_element, "crossinfer_batches": _crossinfer_batches,
              "batch_native": _batch_native, "batch_transport": _batch_transport}[path]
    return runner(rows, spec, policy)


def _row_results(outcome: Outcome, results: list[Any], failures: list[Any]) -> Outcome:
    for r in results:
        outcome.add_result(r.id, Result(r.path, r.model, np.asarray(r.inference), r.label))
    for f in failures:
        outcome.add_failure(f.element.id, f.node, f.error)
    return outcome


def _crossinfer_batches(rows: list[tuple], spec: Any, policy: ci.LoadPolicy) -> Outcome:
    elements = [beam.Row(id=i, key=k, features=x) for i, k, x in rows]
    results, failures, _ = run(elements, ci.Inference(spec, policy=policy))
    return _row_results(Outcome(), results, failures)


class _Windowed(beam.PTransform):
    """Elements in 1-hour fixed windows, then ``inner``: crossinfer then hands
    on a block per element, for Beam's batching to join."""

    def __init__(self, inner: beam.PTransform) -> None:
        super().__init__()
        self._inner = inner

    def expand(self, pcoll: beam.PCollection) -> Any:
        return (pcoll | "Stamp" >> beam.Map(_stamp)
                | "Window" >> beam.WindowInto(window.FixedWindows(3600)) | self._inner)


def _stamp(row: Any) -> Any:
    return window.TimestampedValue(row, 0)


def _per_element(rows: list[tuple], spec: Any, policy: ci.LoadPolicy) -> Outcome:
    elements = [beam.Row(id=i, key=k, features=x) for i, k, x in rows]
    results, failures, _ = run(elements, _Windowed(ci.Inference(spec, policy=policy)))
    return _row_results(Outcome(), results, failures)


def _batch_native(rows: list[tuple], spec: Any, policy: ci.LoadPolicy) -> Outcome:
    elements = [beam.Row(ids=[i for i, _, _ in rows[lo:lo + BATCH_ROWS]],
                         features=np.stack([x for _, _, x in rows[lo:lo + BATCH_ROWS]]))
                for lo in range(0, len(rows), BATCH_ROWS)]
    results, failures, _ = run(elements, BatchedInference(spec, policy=policy))
    outcome = Outcome()
    for r in results:
        for j, index in enumerate(r.index.tolist()):
            label = None if r.label is None else int(r.label[j])
            outcome.add_result(r.ids[index], Result(r.path, r.model, r.inference[j], label))
    for f in failures:
        ids = f.element.ids if f.index is None else [f.element.ids[f.index]]
        for row_id in ids:
            outcome.add_failure(row_id, f.node, f.error)
    return outcome


def _batch_transport(rows: list[tuple], spec: Any, policy: ci.LoadPolicy) -> Outcome:
    packed = [Packed(i, k, x.astype("<f4").tobytes()) for i, k, x in rows]
    batches, schema = pack(packed, BATCH_ROWS)
    results, failures, _ = run(batches, transport.BatchTransportInference(
        spec, input_schema=schema, policy=policy))
    outcome = Outcome()
    for r in unpack(results, schema):
        label = r["label"]
        outcome.add_result(r["row"].id, Result(r["path"], r["model"], np.asarray(r["inference"]),
                                               label))
    decode = RowCoder(schema).decode
    for f in failures:
        outcome.add_failure(decode(f.element).id, f.node, f.error)
    return outcome


# ------------------------------------------------------------ the transport's client side


def pack(rows: list[Any], size: int = 100) -> tuple[list[Any], schema_pb2.Schema]:
    """Rows -> batches, as a client packs them (bad features: length -1)."""
    schema = named_tuple_to_schema(type(rows[0]))
    coder = RowCoder(schema)
    batches = []
    for lo in range(0, len(rows), size):
        chunk = rows[lo:lo + size]
        lengths, values = [], []
        dtype = "<f4" if type(rows[0]) is Packed else "<f8"
        for r in chunk:
            f = r.features
            if f is None or (isinstance(f, bytes) and len(f) % 4) or (
                    not isinstance(f, bytes) and any(v is None for v in f)):
                lengths.append(transport.UNPACKED)
            elif isinstance(f, bytes):
                lengths.append(len(f) // 4)
                values.append(np.frombuffer(f, "<f4"))
            else:
                lengths.append(len(f))
                values.append(np.asarray(f, "<f8"))
        batches.append(BatchRow(
            rows=[coder.encode(r) for r in chunk],
            features=np.concatenate(values).astype(dtype).tobytes() if values else b"",
            dtype=dtype, lengths=np.asarray(lengths, "<i4").tobytes(),
            keys=[r.key for r in chunk]))
    return batches, schema


def unpack(result_batches: list[Any], schema: schema_pb2.Schema) -> list[dict[str, Any]]:
    """Result batches -> one dict per result, as a client unpacks them."""
    decode = RowCoder(schema).decode
    out = []
    for b in result_batches:
        node = np.frombuffer(b.node, "<i4")
        cols = {n: np.frombuffer(getattr(b, n), d) for n, d in RESULT_COLUMNS.items()}
        offsets = {n: 0 for n in ("inference", "labels", "scores")}
        for i, row in enumerate(b.rows):
            got = {"row": decode(row), "model": b.models[node[i]], "path": b.paths[node[i]]}
            for name in ("inference", "labels", "scores"):
                n = int(cols[name + "_lengths"][i])
                lo = offsets[name]
                got[name] = None if n < 0 else cols[name][lo:lo + n].tolist()
                offsets[name] += max(n, 0)
            got["label"] = int(cols["label"][i]) if cols["label_set"][i] else None
            got["score"] = float(cols["score"][i]) if cols["score_set"][i] else None
            out.append(got)
    return out
