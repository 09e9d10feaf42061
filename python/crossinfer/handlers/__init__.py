"""Spec -> Beam ModelHandler, one module per framework."""

from crossinfer.handlers.adapter import FrameworkAdapter, ModelLoadError
from crossinfer.handlers.node_handler import ModelNodeHandler
from crossinfer.handlers.registry import adapter_for, model_handler

__all__ = ["FrameworkAdapter", "ModelLoadError", "ModelNodeHandler", "adapter_for",
           "model_handler"]
