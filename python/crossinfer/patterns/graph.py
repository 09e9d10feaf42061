"""Expand any node of a spec into Beam transforms over blocks."""

from __future__ import annotations

from crossinfer.patterns.ab_test import expand_ab_test
from crossinfer.patterns.context import ExpandContext, Flow, child_path
from crossinfer.patterns.keyed import expand_keyed
from crossinfer.patterns.model import expand_model
from crossinfer.spec.nodes import ABTestNode, KeyedNode, ModelNode, Node, SequenceNode, walk


def expand_node(flow: Flow, node: Node, parent: str, ctx: ExpandContext) -> Flow:
    """``flow``'s blocks through ``node`` (a child of the node at ``parent``):
    finished blocks, carrying every failure met on the way."""
    if isinstance(node, ModelNode):
        return expand_model(flow, node, parent, ctx)
    if isinstance(node, ABTestNode):
        return expand_ab_test(flow, node, parent, ctx, expand_node)
    if isinstance(node, SequenceNode):
        path = child_path(parent, node.name)
        for stage in node.stages:  # each stage takes the previous one's outputs
            flow = expand_node(flow, stage, path, ctx)
        return flow
    if isinstance(node, KeyedNode):
        return expand_keyed(flow, node, parent, ctx)
    raise TypeError(f"not a spec node: {type(node).__name__}")


def first_model(node: Node) -> ModelNode | None:
    """The model every element meets first, if there is one (a model, or the
    first stage of a sequence that starts with one)."""
    while isinstance(node, SequenceNode) and node.stages:
        node = node.stages[0]
    return node if isinstance(node, ModelNode) else None


def routing_node(node: Node) -> Node | None:
    """The first node in ``node`` that routes single rows (anything but a
    model or a sequence of them), or None when every row meets the same models."""
    if isinstance(node, SequenceNode):
        for stage in node.stages:
            found = routing_node(stage)
            if found is not None:
                return found
        return None
    return None if isinstance(node, ModelNode) else node


def needs_keys(node: Node) -> bool:
    """Whether any node of ``node`` splits or routes by the row's key (a
    random split draws from it too, with the features)."""
    return any(isinstance(n, KeyedNode) or (isinstance(n, ABTestNode) and n.split != "mirror")
               for _, n in walk(node))
