"""ModelNodeHandler: the Beam ModelHandler behind every crossinfer model node.

It extends Beam's RunInference rather than replacing it: RunInference batches
(or not: see below), loads (shared per process, or across processes for
``large_model`` / ``model_copies``), times and counts; the handler hands each
batch of :class:`~crossinfer.engine.block.Block`\\ s to the node's
:class:`~crossinfer.engine.runner.BlockRunner`, which adds what Beam lacks:
ragged batches, per-row failures, non-finite outputs as failures, vectorised
pre- and post-processing. Also:

* a model that cannot load fails this node's rows only, each with the cause
  (:class:`~crossinfer.handlers.loaded.LoadedModel`);
* ``large_model`` / ``model_copies`` for every framework: Beam hands the
  handler a cross-process proxy, and a LoadedModel is called only through
  methods that take and return numpy arrays;
* a cheap ``get_num_bytes`` (Beam's PyTorch handler walks every scalar).

How blocks arrive is fixed when the pipeline is built (:class:`Arrival`):
made by crossinfer at the node's batch size (bounded input in the global
window; RunInference then skips its batching step), or one element at a time
for Beam to batch.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

from crossinfer.engine.block import Block
from crossinfer.engine.runner import BlockRunner
from crossinfer.handlers.adapter import FrameworkAdapter
from crossinfer.handlers.loaded import LoadedModel
from crossinfer.spec.nodes import Batching, ModelNode

#: Batching when a spec sets none: Beam's default starts adaptive batching at
#: one element. crossinfer batches a fixed 256 rows unless the spec sets
#: ``min_batch_size`` (then Beam batches adaptively between min and max): a
#: fixed size keeps per-batch overhead off small models and spares Beam's
#: batch-size regression, which runs after every adaptive batch (measured:
#: +10-20% elements/s on small models, see bench/README.md).
DEFAULT_MAX_BATCH = 256


def batch_bounds(batching: Batching) -> tuple[int, int]:
    """(min, max) rows per model call for a node's batching settings."""
    most = batching.max_batch_size or max(DEFAULT_MAX_BATCH, batching.min_batch_size or 0)
    return batching.min_batch_size or most, most


class Arrival(enum.Enum):
    """How blocks reach a model node's RunInference."""

    #: Made by crossinfer, each at most the node's max_batch_size rows (input
    #: rows, cut between elements): RunInference skips its batching step.
    BLOCKS = "blocks"
    #: One row per block (streaming, windows): Beam batches them, by count.
    ROWS = "rows"
    #: Many rows per block (batch-native streaming input): Beam batches them,
    #: weighing each by its rows.
    BATCHES = "batches"


class ModelNodeHandler(ModelHandler[Block, Block, LoadedModel]):
    """Runs one model node (at ``path`` in the spec) on blocks arriving as
    ``arrival`` says; ``bounded``: the input is bounded (``max_wait_secs`` is
    for streaming, see :func:`batch_kwargs`)."""

    def __init__(self, node: ModelNode, adapter: FrameworkAdapter, path: str, *,
                 arrival: Arrival = Arrival.ROWS, bounded: bool = False) -> None:
        least, most = batch_bounds(node.batching)
        # Beam annotates max_batch_duration_secs as int; it takes seconds as a float.
        extra: dict[str, Any] = {"max_batch_duration_secs": node.batching.max_wait_secs}
        if arrival is Arrival.BATCHES:
            extra["element_size_fn"] = len
        super().__init__(min_batch_size=least, max_batch_size=most,
                         large_model=node.memory.large_model,
                         model_copies=node.memory.model_copies, **extra)
        self.node = node
        self.adapter = adapter
        self.path = path
        self.arrival = arrival
        self.bounded = bounded
        self.runner = BlockRunner(node, path)

    def load_model(self) -> LoadedModel:
        """The model, or why it could not be loaded (never raises: see LoadedModel)."""
        return LoadedModel(self.adapter)

    def run_inference(self, batch: Block | Sequence[Block], model: Any,
                      inference_args: dict[str, Any] | None = None) -> list[Block]:
        """Finished blocks for a block (``Arrival.BLOCKS``) or a batch of them.
        Inference args are the model node's own (``node.inference_args``):
        crossinfer never passes RunInference any."""
        return self.runner.run(as_blocks(batch), model)

    def get_num_bytes(self, batch: Block | Sequence[Block]) -> int:
        return sum(int(b.features.nbytes) for b in as_blocks(batch))

    def get_metrics_namespace(self) -> str:
        return self.runner.namespace

    def should_skip_batching(self) -> bool:
        return self.arrival is Arrival.BLOCKS

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return batch_kwargs(self._batching_kwargs, self.bounded)

    def __repr__(self) -> str:
        return f"ModelNodeHandler({self.path!r}, {self.adapter.framework})"


def as_blocks(batch: Block | Sequence[Block]) -> Sequence[Block]:
    """What RunInference hands a handler - one block (``Arrival.BLOCKS``) or
    Beam's batch of them - as blocks."""
    return [batch] if isinstance(batch, Block) else batch


def batch_kwargs(kwargs: dict[str, Any], bounded: bool) -> dict[str, Any]:
    """Beam's BatchElements arguments for a node's batching. ``max_wait_secs``
    bounds how long a *streaming* pipeline buffers a batch; on bounded input it
    is left out, and batches end with the bundle. (With it, Beam batches in a
    stateful DoFn with timers, and the FnApiRunner - Beam's Python job server -
    fails a bounded job whose elements sit at the end of the global window, as
    held rows and batch-transport elements do: "A total of 1 time-pending
    bundles did not execute".)"""
    kwargs = dict(kwargs)
    if bounded or kwargs.get("max_batch_duration_secs") is None:
        kwargs.pop("max_batch_duration_secs", None)
    return kwargs
