"""The named pre/post-processing ops, run (declared in :mod:`crossinfer.spec.ops`)."""

from crossinfer.processing.ops import REGISTRY, BuiltOp, Outputs, build_op, build_ops

__all__ = ["REGISTRY", "BuiltOp", "Outputs", "build_op", "build_ops"]
