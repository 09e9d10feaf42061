"""TensorRT engines through Beam's TensorRTEngineHandlerNumPy.

TensorRT needs the ``tensorrt`` package and an NVIDIA GPU. Where either is
missing the adapter refuses at pipeline construction with a sentence saying so;
nothing is emulated on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossinfer.handlers.adapter import FrameworkAdapter, ModelLoadError, as_batch_output
from crossinfer.policy import LoadPolicy
from crossinfer.spec.nodes import ModelNode


def tensorrt_problem() -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        return (f"framework 'tensorrt' needs the 'tensorrt' Python package and an NVIDIA GPU "
                f"with CUDA; the package is not installed here ({exc})")
    try:
        import torch

        if not torch.cuda.is_available():
            return "framework 'tensorrt' needs an NVIDIA GPU with CUDA; none is available here"
    except ImportError:
        pass
    return None


class TensorRTAdapter(FrameworkAdapter):
    framework = "tensorrt"
    # Beam's handler opens the engine itself (after load() checked the policy
    # and the pin); engines are a code-capable format, allowed only by opt-in.
    reads_bytes = False

    def __init__(self, node: ModelNode, policy: LoadPolicy) -> None:
        super().__init__(node, policy)
        problem = tensorrt_problem()
        if problem:
            raise ModelLoadError(f"model {node.name!r}: {problem}")

    def _beam_handler(self) -> Any:
        from apache_beam.ml.inference.tensorrt_inference import TensorRTEngineHandlerNumPy

        return TensorRTEngineHandlerNumPy(
            min_batch_size=self.node.batching.min_batch_size or 1,
            max_batch_size=self.node.batching.max_batch_size or 64,
            engine_path=self.location)

    def _load(self, data: bytes | None) -> Any:
        return self._beam_handler().load_model()

    def predict(self, model: Any, batch: np.ndarray, inference_args: dict[str, Any]
                ) -> np.ndarray:
        results = self._beam_handler().run_inference(list(batch), model, inference_args)
        return as_batch_output(np.stack([np.asarray(r.inference) for r in results]),
                               len(batch), self.node.name)
