"""PyTorch models: a TorchScript file, or a state dict plus an allow-listed class.

A state dict loads with ``torch.load(weights_only=True)`` into the class the
load policy resolves; a TorchScript file (a program: opt-in through the policy's
``code_formats``) with ``torch.jit.load``. Both read the bytes the adapter
verified. Inference runs the whole stacked batch as one tensor under
``torch.inference_mode``, on the device the model was placed on.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from crossinfer.handlers.adapter import FrameworkAdapter, ModelLoadError
from crossinfer.policy import ClassRefused, torch_module_base


def resolve_torch_device(device: str, name: str) -> str:
    """'cpu' | 'gpu' | 'auto' -> Beam's 'CPU' | 'GPU'. Decided on the worker."""
    import torch

    if device == "cpu":
        return "CPU"
    if torch.cuda.is_available():
        return "GPU"
    if device == "auto":
        return "CPU"
    raise ModelLoadError(f"model {name!r}: device 'gpu' was requested but CUDA is not available "
                         "on this worker (torch.cuda.is_available() is False); run on a GPU "
                         "worker or use device 'auto' to fall back to the CPU")


class PytorchAdapter(FrameworkAdapter):
    framework = "pytorch"

    def _load(self, data: bytes | None) -> Any:
        import torch

        assert data is not None
        device = torch.device("cuda" if resolve_torch_device(
            self.node.device, self.node.name) == "GPU" else "cpu")
        if self.node.resolved_format == "torchscript":
            # Code-capable: load() has checked the policy allows it.
            model = torch.jit.load(io.BytesIO(data), map_location=device)
        else:
            model = self._model_class()(**dict(self.node.model_params))
            # weights_only: tensors and plain containers, never arbitrary objects.
            state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
            model.load_state_dict(state)
            model.requires_grad_(False)
        model.to(device)
        model.eval()
        return model

    def _model_class(self) -> type:
        """The allow-listed ``torch.nn.Module`` class, resolved again on the worker."""
        assert self.node.model_class is not None
        try:
            return self.policy.resolve_class(self.node.model_class, torch_module_base())
        except ClassRefused as exc:
            raise ModelLoadError(f"model {self.node.name!r}: model_class: {exc}") from exc

    def predict(self, model: Any, batch: np.ndarray, inference_args: dict[str, Any]
                ) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(np.ascontiguousarray(batch))
            device = self._device_of(model)
            if tensor.device != device:
                tensor = tensor.to(device, non_blocking=True)
            return self.batch_output(model(tensor, **inference_args), len(batch))

    def to_numpy(self, value: Any) -> Any:
        """A CPU tensor's values as a numpy array of their own, not a view of the
        tensor. The output lives on in its block until the results are written;
        a view keeps torch's buffer - allocated during the forward pass, among
        its activations - alive in the heap, and the next calls' activations
        then land on memory that is not in the cache. Measured with
        ``python -m bench.split --framework pytorch --source-batch 256``
        (MLP 32-256-256-10, 1,000,000 rows, 4 alternations): the model calls
        took 2.01-2.07 s with views, 1.77-1.91 s with copies; a copy of a
        256x10 output costs ~1 us. A GPU tensor's ``cpu()`` is a new buffer
        already, made after the forward pass."""
        if not hasattr(value, "detach"):
            return value
        tensor = value.detach()
        if tensor.device.type == "cpu":
            return tensor.numpy().copy()
        return tensor.cpu().numpy()

    def _device_of(self, model: Any) -> Any:
        """The model's device, looked up once per loaded model (walking its
        parameters costs more than a small model's batch). Keyed by the
        model's id: a model this adapter loads again lands on the same device."""
        cached = getattr(self, "_device_cache", None)
        if cached is not None and cached[0] == id(model):
            return cached[1]
        device = _model_device(model)
        self._device_cache: tuple[int, Any] | None = (id(model), device)
        return device

    def release(self, model: Any) -> None:
        self._device_cache = None
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _model_device(model: Any) -> Any:
    import torch

    for param in model.parameters():
        return param.device
    return torch.device("cpu")
