"""Expand any node into Beam transforms over records (Item | Failure)."""

from __future__ import annotations

import apache_beam as beam

from crossinfer.patterns.context import ExpandContext
from crossinfer.spec.nodes import ABTestNode, KeyedNode, ModelNode, Node, SequenceNode


def expand_node(records: beam.PCollection, node: Node, parent: str,
                ctx: ExpandContext) -> beam.PCollection:
    from crossinfer.patterns.ab_test import expand_ab_test
    from crossinfer.patterns.keyed import expand_keyed
    from crossinfer.patterns.model import expand_model
    from crossinfer.patterns.sequence import expand_sequence

    if isinstance(node, ModelNode):
        return expand_model(records, node, parent, ctx)
    if isinstance(node, ABTestNode):
        return expand_ab_test(records, node, parent, ctx)
    if isinstance(node, SequenceNode):
        return expand_sequence(records, node, parent, ctx)
    if isinstance(node, KeyedNode):
        return expand_keyed(records, node, parent, ctx)
    raise TypeError(f"not a spec node: {type(node).__name__}")
