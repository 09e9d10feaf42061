"""A model node: Beam's RunInference with the node's ModelNodeHandler."""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from crossinfer.engine.block import Block
from crossinfer.handlers.node_handler import Arrival, batch_bounds
from crossinfer.handlers.registry import model_handler
from crossinfer.patterns.context import ExpandContext, Flow, child_path
from crossinfer.spec.nodes import ModelNode


class _Cut(beam.DoFn):
    """Blocks of at most ``size`` rows, cut between elements."""

    def __init__(self, size: int) -> None:
        self._size = size

    def process(self, block: Block) -> Iterable[Block]:
        return block.cut(self._size)


def expand_model(flow: Flow, node: ModelNode, parent: str, ctx: ExpandContext) -> Flow:
    path = child_path(parent, node.name)
    blocks, rows = flow.blocks, flow.max_rows
    if rows is None:  # Beam batches the blocks, as many rows as the node asks for
        arrival = Arrival.BATCHES if flow.multirow else Arrival.ROWS
    else:  # crossinfer made the blocks: RunInference takes them as they are
        arrival = Arrival.BLOCKS
        most = batch_bounds(node.batching)[1]
        if rows > most:
            blocks = blocks | f"Cut[{path}]" >> beam.ParDo(_Cut(most)).with_output_types(Block)
            rows = most
    handler = model_handler(node, ctx.policy, path, arrival=arrival, bounded=blocks.is_bounded)
    out = blocks | f"RunInference[{path}]" >> RunInference(handler)
    # Typed, blocks use their coder's cheap size estimate in Beam's metrics.
    out.element_type = Block
    return Flow(out, rows, flow.multirow)
