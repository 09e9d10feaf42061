"""crossinfer: multi-model inference (A/B, sequence, keyed) on Apache Beam's RunInference."""

import crossinfer._quiet  # noqa: F401  (first: before anything imports Beam)
from crossinfer.patterns import ABTest, Inference, InferenceOutputs, Keyed, Model, Sequence
from crossinfer.policy import LoadPolicy
from crossinfer.spec import (
    ABTestNode,
    Arm,
    Batching,
    InferenceSpec,
    KeyedNode,
    Memory,
    ModelNode,
    Op,
    Route,
    SequenceNode,
    SpecError,
    load_spec,
)

__version__ = "0.1.0"

__all__ = [
    "ABTest",
    "ABTestNode",
    "Arm",
    "Batching",
    "Inference",
    "InferenceOutputs",
    "InferenceSpec",
    "Keyed",
    "KeyedNode",
    "LoadPolicy",
    "Memory",
    "Model",
    "ModelNode",
    "Op",
    "Route",
    "Sequence",
    "SequenceNode",
    "SpecError",
    "load_spec",
]
