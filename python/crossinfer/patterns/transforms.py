"""The public Python PTransforms: Inference (any spec), Model, ABTest, Sequence, Keyed.

Each takes Rows (or dicts / NamedTuples) and returns :class:`InferenceOutputs`:
``results`` (input fields + ``model``, ``path``, ``inference``, ...) and
``failures`` (``element``, ``node``, ``error``). For any input,
``len(results) + len(failures) == len(inputs)`` - per arm for a mirror A/B.

The spec is validated when the transform is constructed, so a bad spec fails
at pipeline construction with the field path, not later on a worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam import pvalue

from crossinfer.patterns.context import ExpandContext
from crossinfer.patterns.graph import expand_node
from crossinfer.patterns.to_records import ToRecords
from crossinfer.policy import LoadPolicy
from crossinfer.records import Failure, Item, ItemBatch, RecordBase
from crossinfer.rows import IOConfig, RowFactory, to_failure_row, to_output_row
from crossinfer.spec import SpecError, load_spec
from crossinfer.spec.limits import SpecLimits
from crossinfer.spec.nodes import (
    ABTestNode,
    InferenceSpec,
    KeyedNode,
    ModelNode,
    Node,
    SequenceNode,
)

_FAILURES = "failures"


class InferenceOutputs(NamedTuple):
    results: beam.PCollection
    failures: beam.PCollection


class _ToRows(beam.DoFn):
    """Finished records -> result rows (main) and failure rows (tagged)."""

    def __init__(self, output_factory: RowFactory | None,
                 failure_factory: RowFactory | None) -> None:
        self._output_factory = output_factory or beam.Row
        self._failure_factory = failure_factory or beam.Row

    def process(self, record: Any) -> Iterable[Any]:
        if type(record) is Item:
            return (to_output_row(record, self._output_factory),)
        if type(record) is Failure:
            return (pvalue.TaggedOutput(
                _FAILURES, to_failure_row(record, self._failure_factory)),)
        raise TypeError(f"unexpected record {record!r}")  # pragma: no cover - a bug


class Inference(beam.PTransform):
    """Run any inference spec (JSON text, a dict, an InferenceSpec or a node).

    Args:
      spec: the spec or its root node.
      features_field / key_field: input field names.
      policy: what the spec may load (defaults: any location, crossinfer's classes).
      limits: how large the spec may be (default: :class:`SpecLimits`'s defaults,
        which the expansion service's ``--max-*`` flags change for its specs).
      output_factory / failure_factory: build output rows (default ``beam.Row``);
        the expansion service passes schema'd NamedTuple types here.

    Keyword arguments of a model's call belong to its node
    (``ModelNode(inference_args=...)``): each model gets its own. The
    transform-wide ``inference_args=`` of earlier versions gave every model the
    same ones and is refused (TypeError).

    Raises:
      SpecError: the spec is invalid, or a model cannot take its inference args
        (where the framework tells before loading), with each field path.
      TypeError: ``inference_args`` is given, or the spec's root is not the
        node kind this transform takes.
    """

    expected_kind: type | None = None

    def __init__(self, spec: InferenceSpec | Node | str | dict[str, Any], *,
                 features_field: str = "features", key_field: str = "key",
                 policy: LoadPolicy | None = None,
                 limits: SpecLimits | None = None,
                 inference_args: dict[str, Any] | None = None,
                 output_factory: RowFactory | None = None,
                 failure_factory: RowFactory | None = None,
                 label: str | None = None) -> None:
        super().__init__(label)
        if inference_args is not None:
            raise TypeError(
                "inference_args is a setting of each model node: ModelNode(..., "
                "inference_args={...}) (JSON: \"inference_args\": {...} in the model node), "
                "so each model gets the args it takes; the transform-wide inference_args gave "
                "every model of the spec the same ones")
        if not isinstance(spec, (InferenceSpec, str, dict)):
            spec = InferenceSpec(node=spec)
        self.policy = policy or LoadPolicy()
        self.spec = load_spec(spec, self.policy, limits)
        if self.expected_kind is not None and not isinstance(self.spec.node, self.expected_kind):
            raise TypeError(f"{type(self).__name__} takes a {self.expected_kind.__name__}, got "
                            f"a {type(self.spec.node).__name__}; use crossinfer.Inference for "
                            "any node")
        self.io = IOConfig(features_field, key_field)
        self._ctx = ExpandContext(self.policy, self.io)
        self._output_factory = output_factory
        self._failure_factory = failure_factory
        # Build the graph's handlers now so framework problems (a missing
        # TensorRT, a class outside the allow-list) surface at construction.
        self._check_handlers()

    def _check_handlers(self) -> None:
        from crossinfer.handlers.registry import adapter_for
        from crossinfer.handlers.signatures import construction_problems
        from crossinfer.spec.nodes import walk

        problems: list[tuple[str, str]] = []
        for path, node in walk(self.spec.node):
            if isinstance(node, ModelNode):
                adapter_for(node, self.policy)
                problems.extend((f"{path}.{field}", message) for field, message in
                                construction_problems(node, self.policy))
        if problems:
            raise SpecError(problems)

    def _records_mode(self, pcoll: beam.PCollection) -> tuple[str, int, type]:
        """How ToRecords hands records on (see :mod:`crossinfer.patterns.to_records`):
        batched by shape for a first model with a fixed batch size, regrouped
        by shape before other nodes - both only for bounded input in the
        global window - else one by one."""
        from crossinfer.handlers.node_handler import DEFAULT_MAX_BATCH
        from crossinfer.spec.nodes import walk

        if not (pcoll.is_bounded and pcoll.windowing.is_default()):
            return "items", DEFAULT_MAX_BATCH, RecordBase
        first = first_model(self.spec.node)
        if first is not None and first.batching.min_batch_size in (
                None, first.batching.max_batch_size):  # a fixed batch size
            return "batches", first.batching.max_batch_size or DEFAULT_MAX_BATCH, ItemBatch
        largest = max((n.batching.max_batch_size or DEFAULT_MAX_BATCH
                       for _, n in walk(self.spec.node) if isinstance(n, ModelNode)),
                      default=DEFAULT_MAX_BATCH)
        return "bucket", largest, RecordBase

    def expand(self, pcoll: beam.PCollection) -> InferenceOutputs:
        mode, chunk, output_type = self._records_mode(pcoll)
        records = pcoll | "ToRecords" >> beam.ParDo(
            ToRecords(self.io, mode, chunk)).with_output_types(output_type)
        finished = expand_node(records, self.spec.node, "", self._ctx)
        rows = finished | "ToRows" >> beam.ParDo(
            _ToRows(self._output_factory, self._failure_factory)).with_outputs(
            _FAILURES, main="results")
        return InferenceOutputs(rows.results, rows[_FAILURES])


def first_model(node: Node) -> ModelNode | None:
    """The model every element meets first, if there is one (a model, or the
    first stage of a sequence that starts with one)."""
    while isinstance(node, SequenceNode) and node.stages:
        node = node.stages[0]
    return node if isinstance(node, ModelNode) else None


class Model(Inference):
    """One model. ``rows | Model(ModelNode(...))``."""

    expected_kind = ModelNode


class ABTest(Inference):
    """An A/B test (weighted random, sticky hash, or mirror to every arm)."""

    expected_kind = ABTestNode


class Sequence(Inference):
    """Model A -> post-processing -> model B (-> ...)."""

    expected_kind = SequenceNode


class Keyed(Inference):
    """Keys -> models, at most ``max_models_per_worker`` resident, without thrashing."""

    expected_kind = KeyedNode
