"""Named pre/post-processing ops (vectorised over a stack of rows) and their outputs."""

from crossinfer.processing.ops import REGISTRY, BuiltOp, Outputs, build_op, build_ops

__all__ = ["REGISTRY", "BuiltOp", "Outputs", "build_op", "build_ops"]
