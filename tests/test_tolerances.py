"""The assumption behind the suite's float tolerances (support.float_tolerance):
the dot products of the models the tests compare cancel at most
``CANCELLATION``-fold (``sum|a_i * b_i| <= CANCELLATION * max(1, |result|)``).

If a retrained demo model cancels more, this test says so, instead of another
test failing on another CPU's rounding.
"""

from __future__ import annotations

import pickle

import numpy as np
import torch

from crossinfer.models import MLP, MeanPoolClassifier
from support import CANCELLATION, DIGITS_TOL, float_tolerance


def cancellation(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> float:
    """max over outputs of sum|a_i * b_i| / max(1, |result|) for x @ weight.T + bias."""
    x, weight, bias = (np.asarray(a, np.float64) for a in (x, weight, bias))
    magnitude = np.abs(x) @ np.abs(weight).T + np.abs(bias)
    return float((magnitude / np.maximum(1.0, np.abs(x @ weight.T + bias))).max())


def mlp_factors(path: str, sizes: list[int], x: np.ndarray) -> list[float]:
    mlp = MLP(sizes)
    mlp.load_state_dict(torch.load(path))
    factors = []
    for layer in mlp.net:
        if isinstance(layer, torch.nn.Linear):
            w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
            factors.append(cancellation(x, w, b))
            x = np.maximum(0.0, x @ w.T + b)
    return factors


def test_the_digits_models_cancel_at_most_the_allowance(models, digits_data) -> None:
    x = digits_data[0] / 16.0
    with open(models.path("digits_lr.pkl"), "rb") as f:
        lr = pickle.load(f)
    factors = {"lr": [cancellation(x, lr.coef_, lr.intercept_)],
               "mlp": mlp_factors(models.path("digits_mlp.pt"), [64, 64, 10], x)}
    with open(models.path("digits_pca.pkl"), "rb") as f:
        pca = pickle.load(f)
    factors["pca"] = [cancellation(x - pca.mean_, pca.components_, np.zeros(16))]
    components = pca.transform(x)
    factors["pca_mlp"] = mlp_factors(models.path("digits_pca_mlp.pt"), [16, 32, 10],
                                     components)
    worst = max(max(f) for f in factors.values())
    assert 1.0 <= worst <= CANCELLATION, factors
    assert DIGITS_TOL["rtol"] < 2e-3  # still far below what a wrong model or row gives


def test_the_ragged_reference_model_cancels_at_most_the_allowance() -> None:
    torch.manual_seed(0)  # as the ragged tests make it
    model = MeanPoolClassifier(hidden=8, classes=3)
    rng = np.random.default_rng(0)
    signal = rng.normal(size=64)
    embed_w = model.embed.weight.detach().numpy()
    embed_b = model.embed.bias.detach().numpy()
    h = np.maximum(0.0, signal[:, None] @ embed_w.T + embed_b).mean(axis=0, keepdims=True)
    factor = cancellation(h, model.out.weight.detach().numpy(), model.out.bias.detach().numpy())
    assert factor <= CANCELLATION
    assert float_tolerance(terms=64, layers=3)["rtol"] == DIGITS_TOL["rtol"]
