"""Session fixtures: the demo models trained on sklearn's bundled digits."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from crossinfer.demo import DemoModels, digits, train_demo_models

logging.getLogger("apache_beam").setLevel(logging.WARNING)

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> DemoModels:
    return train_demo_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    return digits()


@pytest.fixture(scope="session")
def zoo(models: DemoModels, tmp_path_factory: pytest.TempPathFactory) -> DemoModels:
    """Models for settings the demo models do not exercise, made from them or on the
    digits (no download): several outputs, a ``temperature`` argument, a tuple
    from scikit-learn.

    * ``temperature_mlp.pt`` / ``.ts``: support.TemperatureMLP holding the digits MLP
      (state dict, TorchScript): ``forward(x, temperature=1.0)``;
    * ``two_heads.pt`` / ``.ts`` (a dict: logits, embedding, total) and
      ``pair_heads.pt`` (a tuple: logits, embedding);
    * ``two_outputs.onnx``: outputs ``logits`` (n, 10) and ``probs`` (n, 10);
    * ``ridge.skops``: BayesianRidge on the digits (``predict(X, return_std=True)``
      returns ``(mean, std)``), in skops' data-only format.

    The TorchScript files (``.ts``) are code-capable: pipelines that load them
    opt in with ``LoadPolicy(code_formats=("torchscript",))``.
    """
    import warnings

    import skops.io
    import torch
    from sklearn.linear_model import BayesianRidge

    from support import TemperatureMLP, TwoHeads

    root = tmp_path_factory.mktemp("zoo")
    temperature = TemperatureMLP([64, 64, 10])
    temperature.mlp.load_state_dict(torch.load(models.path("digits_mlp.pt")))
    temperature.eval()
    torch.save(temperature.state_dict(), root / "temperature_mlp.pt")
    torch.manual_seed(0)
    heads = TwoHeads().eval()
    torch.save(heads.state_dict(), root / "two_heads.pt")
    torch.save(heads.state_dict(), root / "pair_heads.pt")
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.x, still supported
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(temperature).save(str(root / "temperature_mlp.ts"))
        torch.jit.script(heads).save(str(root / "two_heads.ts"))

    class _Probs(torch.nn.Module):
        def __init__(self, mlp: torch.nn.Module) -> None:
            super().__init__()
            self.mlp = mlp

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.mlp(x)
            return logits, torch.softmax(logits, dim=1)

    torch.onnx.export(_Probs(temperature.mlp), (torch.zeros(1, 64),),
                      str(root / "two_outputs.onnx"), input_names=["x"],
                      output_names=["logits", "probs"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"},
                                    "probs": {0: "batch"}}, dynamo=False)
    x, y = digits()
    skops.io.dump(BayesianRidge().fit(x / 16.0, y.astype(np.float64)), root / "ridge.skops")
    return DemoModels(root)
