"""The public Python PTransforms: Inference (any spec), Model, ABTest, Sequence, Keyed.

Each takes Rows (or dicts / NamedTuples) and returns :class:`InferenceOutputs`:
``results`` (input fields + ``model``, ``path``, ``inference``, ...) and
``failures`` (``element``, ``node``, ``error``). For any input,
``len(results) + len(failures) == len(inputs)`` - per arm for a mirror A/B.

The spec is validated when the transform is constructed, so a bad spec fails
at pipeline construction with the field path, not later on a worker.

Every transform is the same three parts: a way in (:meth:`Inference._reader`:
elements -> rows -> blocks), the spec's nodes over blocks
(:mod:`crossinfer.patterns.graph`), a way out (:meth:`Inference._format`:
finished blocks -> outputs). Batch-native input and the batch transport are
subclasses that change only the two ways.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.pvalue import PCollection

from crossinfer.engine.block import Block
from crossinfer.engine.emit import Format, RowFactory, RowFormat
from crossinfer.handlers.node_handler import DEFAULT_MAX_BATCH, batch_bounds
from crossinfer.patterns.context import ExpandContext, Flow
from crossinfer.patterns.edges import Reader, RowReader, ToBlocks, ToOutputs
from crossinfer.patterns.graph import expand_node, first_model, needs_keys
from crossinfer.policy import LoadPolicy
from crossinfer.rows import IOConfig
from crossinfer.spec import SpecError, load_spec
from crossinfer.spec.limits import SpecLimits
from crossinfer.spec.nodes import (
    ABTestNode,
    InferenceSpec,
    KeyedNode,
    ModelNode,
    Node,
    SequenceNode,
    walk,
)
from crossinfer.wire import (
    DEFAULT_FEATURES_FIELD,
    DEFAULT_KEY_FIELD,
    FAILURES_TAG,
    RESULTS_TAG,
)


class InferenceOutputs(NamedTuple):
    results: PCollection[Any]
    failures: PCollection[Any]


class Inference(beam.PTransform[PCollection[Any], InferenceOutputs]):
    """Run any inference spec (JSON text, a dict, an InferenceSpec or a node).

    Args:
      spec: the spec or its root node.
      features_field / key_field: input field names.
      policy: what the spec may load (defaults: any location, crossinfer's classes).
      limits: how large the spec may be (default: :class:`SpecLimits`'s defaults,
        which the expansion service's ``--max-*`` flags change for its specs).
      output_factory / failure_factory: build output rows (default ``beam.Row``);
        the expansion service passes schema'd NamedTuple types here.
      timing: measure each model call and add two fields to every result row
        (the fields :class:`~crossinfer.experiments.ExperimentReport` reads for
        latency percentiles): ``model_ms`` (list of float, one per model on
        the row's path, in path order: the call's wall time divided by its
        rows, in milliseconds) and ``batch_size`` (list of int: the rows of
        that call). Off by default: result rows keep their fields. Every way
        out writes them (batch-native result rows, the batch transport's
        timing columns), so every subclass takes it.

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
    #: Whether an input element holds many rows (batch-native input).
    multirow = False

    def __init__(self, spec: InferenceSpec | Node | str | dict[str, Any], *,
                 features_field: str = DEFAULT_FEATURES_FIELD,
                 key_field: str = DEFAULT_KEY_FIELD,
                 policy: LoadPolicy | None = None,
                 limits: SpecLimits | None = None,
                 inference_args: dict[str, Any] | None = None,
                 output_factory: RowFactory | None = None,
                 failure_factory: RowFactory | None = None,
                 timing: bool = False,
                 label: str | None = None) -> None:
        super().__init__(label)
        self.timing = timing
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
        #: Whether the spec splits or routes rows by their key (rows then carry it).
        self.keyed = needs_keys(self.spec.node)
        self._ctx = ExpandContext(self.policy, self.io)
        self._output_factory = output_factory
        self._failure_factory = failure_factory
        # Build the graph's handlers now so framework problems (a missing
        # TensorRT, a class outside the allow-list) surface at construction.
        self._check_handlers()

    def _check_handlers(self) -> None:
        from crossinfer.handlers.registry import adapter_for
        from crossinfer.handlers.signatures import construction_problems

        problems: list[tuple[str, str]] = []
        for path, node in walk(self.spec.node):
            if isinstance(node, ModelNode):
                adapter_for(node, self.policy)
                problems.extend((f"{path}.{field}", message) for field, message in
                                construction_problems(node, self.policy))
        if problems:
            raise SpecError(problems)

    # ---------------------------------------------------------------- the ways in and out

    def _reader(self) -> Reader:
        """How an input element is read: one row per element."""
        return RowReader(self.io, self.keyed)

    def _format(self) -> Format:
        """How finished blocks are written: a result row per row."""
        return RowFormat(self._output_factory, self._failure_factory)

    def _block_rows(self) -> int:
        """Rows per block when crossinfer makes the blocks: the first model's
        batch size, or else the largest of the spec's (each model's step cuts
        blocks to its own)."""
        first = first_model(self.spec.node)
        if first is not None:
            return batch_bounds(first.batching)[1]
        return max((batch_bounds(n.batching)[1] for _, n in walk(self.spec.node)
                    if isinstance(n, ModelNode)), default=DEFAULT_MAX_BATCH)

    def expand(self, pcoll: PCollection[Any]) -> InferenceOutputs:
        # crossinfer makes the blocks only where that cannot be observed:
        # bounded input in the global window (RunInference's own batching
        # would give every output the end of the window as its timestamp).
        size = self._block_rows() if pcoll.is_bounded and pcoll.windowing.is_default() \
            else None
        node = self.spec.node
        blocks = pcoll | "ToBlocks" >> beam.ParDo(ToBlocks(
            self._reader(), size, self.io.features_field, self.keyed,
            self.timing)).with_output_types(Block)
        finished = expand_node(Flow(blocks, size, self.multirow), node, "", self._ctx)
        out = finished.blocks | "ToOutputs" >> beam.ParDo(ToOutputs(self._format())).with_outputs(
            FAILURES_TAG, main=RESULTS_TAG)
        return InferenceOutputs(out[RESULTS_TAG], out[FAILURES_TAG])


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
