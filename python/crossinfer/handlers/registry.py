"""Spec model node -> framework adapter -> ModelNodeHandler."""

from __future__ import annotations

from crossinfer.handlers.adapter import FrameworkAdapter
from crossinfer.handlers.node_handler import Arrival, ModelNodeHandler
from crossinfer.policy import LoadPolicy
from crossinfer.spec.nodes import ModelNode


def adapter_for(node: ModelNode, policy: LoadPolicy) -> FrameworkAdapter:
    """The adapter for ``node.framework``; frameworks are imported only when used."""
    if node.framework == "pytorch":
        from crossinfer.handlers.pytorch import PytorchAdapter
        return PytorchAdapter(node, policy)
    if node.framework == "sklearn":
        from crossinfer.handlers.sklearn import SklearnAdapter
        return SklearnAdapter(node, policy)
    if node.framework == "onnx":
        from crossinfer.handlers.onnx import OnnxAdapter
        return OnnxAdapter(node, policy)
    if node.framework == "tensorrt":
        from crossinfer.handlers.tensorrt import TensorRTAdapter
        return TensorRTAdapter(node, policy)
    if node.framework == "custom":
        from crossinfer.handlers.custom import CustomAdapter
        return CustomAdapter(node, policy)
    raise ValueError(f"unknown framework {node.framework!r}")


def model_handler(node: ModelNode, policy: LoadPolicy, path: str, *,
                  arrival: Arrival = Arrival.ROWS, bounded: bool = False) -> ModelNodeHandler:
    """The handler of the model node at ``path`` (see :class:`ModelNodeHandler`)."""
    return ModelNodeHandler(node, adapter_for(node, policy), path, arrival=arrival,
                            bounded=bounded)
