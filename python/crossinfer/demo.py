"""Demo models on real data: scikit-learn's bundled handwritten digits.

Trains, in a few seconds and without any download, the models the examples,
tests, benchmarks and the Java demo use, and writes them plus ready specs to a
directory:

* ``digits_lr.skops`` - LogisticRegression (64 -> 10) in skops' data-only format,
  and the same model as ``digits_lr.pkl`` / ``digits_lr.joblib`` (code-capable
  formats, for pipelines that opt in to them)
* ``digits_mlp.pt`` (state dict of ``crossinfer.models:MLP``), ``digits_mlp.ts``
  (TorchScript, code-capable) and ``digits_mlp.onnx`` - MLP 64-64-10
* ``digits_pca.skops`` (and ``digits_pca.pkl``) - PCA to 16 components, and
  ``digits_pca_mlp.pt`` - MLP 16-32-10 on those components (the two stages of
  the sequence demo)
* ``ab.json``, ``sequence.json``, ``keyed.json`` - specs over those files, using
  only formats that cannot run code (skops, state dicts, ONNX)

``python -m crossinfer.demo DIR`` writes them (used by ``make demo``).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DemoModels:
    root: Path

    def path(self, name: str) -> str:
        return str(self.root / name)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 digit images as float32 rows of 64 pixels (0..16), and labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float32), data.target.astype(np.int64)


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _train_mlp(x: np.ndarray, y: np.ndarray, sizes: list[int], seed: int,
               epochs: int = 300) -> Any:
    import torch

    from crossinfer.models import MLP

    torch.manual_seed(seed)
    model = MLP(sizes)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
    return model.eval()


#: The marker's text: a directory trained by an older version is trained again.
_TRAINED = "2\n"


def train_demo_models(root: str | Path) -> DemoModels:
    """Train every demo model into ``root`` (idempotent: existing files are kept)."""
    import joblib
    import skops.io
    import torch
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    models = DemoModels(out)
    marker = out / ".trained"
    if marker.exists() and marker.read_text() == _TRAINED:
        return models
    x, y = digits()
    x_scaled = x / 16.0

    lr = LogisticRegression(max_iter=2000, random_state=0).fit(x_scaled, y)
    with open(out / "digits_lr.pkl", "wb") as f:
        pickle.dump(lr, f)
    joblib.dump(lr, out / "digits_lr.joblib")
    skops.io.dump(lr, out / "digits_lr.skops")

    mlp = _train_mlp(x_scaled, y, [64, 64, 10], seed=0)
    torch.save(mlp.state_dict(), out / "digits_mlp.pt")
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.x, still supported
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(mlp).save(str(out / "digits_mlp.ts"))
    torch.onnx.export(mlp, (torch.zeros(1, 64),), str(out / "digits_mlp.onnx"),
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)

    pca = PCA(n_components=16, random_state=0).fit(x_scaled)
    with open(out / "digits_pca.pkl", "wb") as f:
        pickle.dump(pca, f)
    skops.io.dump(pca, out / "digits_pca.skops")
    components = pca.transform(x_scaled).astype(np.float32)
    pca_mlp = _train_mlp(components, y, [16, 32, 10], seed=1)
    torch.save(pca_mlp.state_dict(), out / "digits_pca_mlp.pt")

    for name, spec in demo_specs(models).items():
        (out / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")
    marker.write_text(_TRAINED)
    return models


def demo_specs(models: DemoModels) -> dict[str, dict[str, Any]]:
    """The demo specs as JSON objects (the same documents the Java builders make)."""
    scale = {"op": "scale", "factor": 1.0 / 16.0}
    lr = {"kind": "model", "name": "digits_lr", "framework": "sklearn", "format": "skops",
          "uri": models.path("digits_lr.skops"), "method": "predict_proba",
          "sha256": sha256_of(models.path("digits_lr.skops")),
          "preprocess": [scale], "postprocess": [{"op": "argmax"}]}
    mlp = {"kind": "model", "name": "digits_mlp", "framework": "pytorch",
           "uri": models.path("digits_mlp.pt"), "format": "state_dict",
           "model_class": "crossinfer.models:MLP", "model_params": {"sizes": [64, 64, 10]},
           "preprocess": [scale], "postprocess": [{"op": "softmax"}, {"op": "argmax"}]}
    pca = {"kind": "model", "name": "digits_pca", "framework": "sklearn", "format": "skops",
           "uri": models.path("digits_pca.skops"), "method": "transform",
           "preprocess": [scale]}
    pca_mlp = {"kind": "model", "name": "digits_pca_mlp", "framework": "pytorch",
               "uri": models.path("digits_pca_mlp.pt"), "format": "state_dict",
               "model_class": "crossinfer.models:MLP", "model_params": {"sizes": [16, 32, 10]},
               "postprocess": [{"op": "softmax"}, {"op": "argmax"}]}
    onnx = {"kind": "model", "name": "digits_onnx", "framework": "onnx",
            "uri": models.path("digits_mlp.onnx"), "preprocess": [scale],
            "postprocess": [{"op": "softmax"}, {"op": "argmax"}]}
    return {
        "ab": {"version": 1, "node": {
            "kind": "ab_test", "name": "digits_ab", "split": "hash", "salt": "digits-2026",
            "arms": [{"name": "control", "weight": 90, "node": lr},
                     {"name": "treatment", "weight": 10, "node": mlp}]}},
        "sequence": {"version": 1, "node": {
            "kind": "sequence", "name": "digits_seq", "stages": [pca, pca_mlp]}},
        "keyed": {"version": 1, "node": {
            "kind": "keyed", "name": "digits_keyed", "max_models_per_worker": 2,
            "routes": [{"keys": ["sklearn"], "node": lr},
                       {"keys": ["torch", "pytorch"], "node": mlp},
                       {"keys": ["onnx"], "node": onnx}]}},
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m crossinfer.demo DIR", file=sys.stderr)
        return 2
    models = train_demo_models(argv[0])
    print(f"demo models and specs in {models.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
