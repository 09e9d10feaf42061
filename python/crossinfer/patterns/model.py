"""A model node: Beam's RunInference with the node's ModelNodeHandler."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from crossinfer.handlers.registry import model_handler
from crossinfer.patterns.context import ExpandContext, child_path
from crossinfer.records import ItemBatch, RecordBase
from crossinfer.spec.nodes import ModelNode


def expand_model(records: beam.PCollection, node: ModelNode, parent: str,
                 ctx: ExpandContext) -> beam.PCollection:
    path = child_path(parent, node.name)
    handler = model_handler(node, ctx.policy, path)
    handler.bounded = records.is_bounded
    if records.element_type is ItemBatch:
        # crossinfer batched the records itself (crossinfer.patterns.to_records)
        handler.prebatched = True
    else:
        # Records have a coder with a cheap size estimate; typing the input
        # lets RunInference's batches use it (Beam samples batch sizes for its
        # metrics, and would otherwise pickle a sampled batch whole).
        records.element_type = RecordBase
    return records | f"RunInference[{path}]" >> RunInference(handler)
