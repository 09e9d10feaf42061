"""A sequence node: each stage consumes the previous stage's post-processed output."""

from __future__ import annotations

import apache_beam as beam

from crossinfer.patterns.context import ExpandContext, child_path
from crossinfer.spec.nodes import SequenceNode


def expand_sequence(records: beam.PCollection, node: SequenceNode, parent: str,
                    ctx: ExpandContext) -> beam.PCollection:
    from crossinfer.patterns.graph import expand_node

    path = child_path(parent, node.name)
    for stage in node.stages:
        # Failures of earlier stages pass through later stages untouched.
        records = expand_node(records, stage, path, ctx)
    return records
