"""Python PTransforms for the inference patterns."""

from crossinfer.patterns.transforms import (
    ABTest,
    Inference,
    InferenceOutputs,
    Keyed,
    Model,
    Sequence,
)

__all__ = ["ABTest", "Inference", "InferenceOutputs", "Keyed", "Model", "Sequence"]
