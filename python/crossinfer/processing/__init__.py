"""Named pre/post-processing ops and ragged-input batching."""

from crossinfer.processing.ops import REGISTRY, BuiltOp, Outputs, build_op, build_ops

__all__ = ["REGISTRY", "BuiltOp", "Outputs", "build_op", "build_ops"]
