"""A model node: Beam's RunInference with the node's ModelNodeHandler."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from crossinfer.handlers.registry import model_handler
from crossinfer.patterns.context import ExpandContext, child_path
from crossinfer.spec.nodes import ModelNode


def expand_model(records: beam.PCollection, node: ModelNode, parent: str,
                 ctx: ExpandContext) -> beam.PCollection:
    path = child_path(parent, node.name)
    handler = model_handler(node, ctx.policy, path)
    return records | f"RunInference[{path}]" >> RunInference(
        handler, inference_args=ctx.inference_args or None)
