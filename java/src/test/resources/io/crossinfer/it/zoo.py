"""Models for the model settings the demo models do not exercise (ModelSettingsIT):

    python zoo.py DEMO_MODELS_DIR OUT_DIR

* ``ridge.skops``: BayesianRidge on the digits, in skops' data-only format;
  ``predict(X, return_std=True)`` returns ``(mean, std)`` (``withInferenceArgs``
  + ``withOutput(int)``);
* ``two_outputs.onnx``: the digits MLP with outputs ``logits`` and ``probs``
  (``withOutput(String)``);
* ``meanpool.pt``: a state dict of ``crossinfer.models:MeanPoolClassifier()``
  with its default parameters (``withModelClass(String)``).
"""

import os
import sys

import skops.io
import torch
from sklearn.linear_model import BayesianRidge

from crossinfer.demo import digits
from crossinfer.models import MLP, MeanPoolClassifier


class _Probs(torch.nn.Module):
    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def forward(self, x):
        logits = self.mlp(x)
        return logits, torch.softmax(logits, dim=1)


def main(models, out):
    os.makedirs(out, exist_ok=True)
    x, y = digits()
    skops.io.dump(BayesianRidge().fit(x / 16.0, y.astype("float64")),
                  os.path.join(out, "ridge.skops"))
    mlp = MLP([64, 64, 10])
    mlp.load_state_dict(torch.load(os.path.join(models, "digits_mlp.pt")))
    torch.onnx.export(_Probs(mlp.eval()), (torch.zeros(1, 64),),
                      os.path.join(out, "two_outputs.onnx"), input_names=["x"],
                      output_names=["logits", "probs"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"},
                                    "probs": {0: "batch"}}, dynamo=False)
    torch.manual_seed(0)
    torch.save(MeanPoolClassifier().state_dict(), os.path.join(out, "meanpool.pt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
