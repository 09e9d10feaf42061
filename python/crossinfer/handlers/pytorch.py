"""PyTorch models: a TorchScript file, or a state dict plus an allow-listed class.

Loading goes through Beam's PytorchModelHandlerTensor (FileSystems, map_location,
TorchScript vs state dict). Inference runs the whole stacked batch as one tensor
under ``torch.inference_mode``, on the device the model was placed on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossinfer.handlers.adapter import FrameworkAdapter, ModelLoadError
from crossinfer.policy import import_object


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

    def _load(self) -> Any:
        from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

        device = resolve_torch_device(self.node.device, self.node.name)
        if self.node.resolved_format == "torchscript":
            handler = PytorchModelHandlerTensor(torch_script_model_path=self.node.uri,
                                                device=device)
        else:
            assert self.node.model_class is not None
            if not self.policy.class_allowed(self.node.model_class):
                raise ModelLoadError(f"model {self.node.name!r}: class "
                                     f"{self.node.model_class!r} is not allow-listed")
            handler = PytorchModelHandlerTensor(
                state_dict_path=self.node.uri,
                model_class=import_object(self.node.model_class),
                model_params=dict(self.node.model_params),
                device=device)
        model = handler.load_model()
        model.eval()
        return model

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
        return value.detach().cpu().numpy() if hasattr(value, "detach") else value

    def _device_of(self, model: Any) -> Any:
        """The model's device, looked up once per loaded model (walking its
        parameters costs more than a small model's batch). Keyed by the
        model's id: a model this adapter loads again lands on the same device."""
        cached = getattr(self, "_device_cache", None)
        if cached is not None and cached[0] == id(model):
            return cached[1]
        device = _model_device(model)
        self._device_cache = (id(model), device)
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
