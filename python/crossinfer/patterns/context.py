"""What every node expansion needs: the load policy, the I/O mapping, and the flow of blocks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from apache_beam.pvalue import PCollection

from crossinfer.policy import LoadPolicy
from crossinfer.rows import IOConfig
from crossinfer.spec.nodes import Node


@dataclass(frozen=True)
class ExpandContext:
    policy: LoadPolicy = field(default_factory=LoadPolicy)
    io: IOConfig = field(default_factory=IOConfig)


@dataclass(frozen=True)
class Flow:
    """A PCollection of :class:`~crossinfer.engine.block.Block` and how its
    blocks were made: by crossinfer with at most ``max_rows`` rows each
    (bounded input in the global window; rows cut between elements), or, with
    ``max_rows`` None, one element at a time for Beam's batching to join -
    ``multirow`` when an element is many rows (batch-native input)."""

    blocks: PCollection[Any]
    max_rows: int | None = None
    multirow: bool = False

    def with_blocks(self, blocks: PCollection[Any]) -> Flow:
        return Flow(blocks, self.max_rows, self.multirow)


#: Expands one node of a spec: (flow, node, parent path, context) -> flow.
Expand = Callable[[Flow, Node, str, ExpandContext], Flow]


def child_path(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name
