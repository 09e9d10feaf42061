"""Models and rows for the experiment report tests: scikit-learn's digits,
models trained on the even rows, the odd rows (898) as the experiment's traffic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np

import crossinfer as ci


@dataclass(frozen=True)
class Zoo:
    root: Path
    x: np.ndarray  # the traffic's features, float32 (898, 64)
    y: np.ndarray  # their labels
    ids: np.ndarray  # their ids (row numbers in load_digits)

    def model(self, name: str) -> Any:
        import skops.io

        path = self.root / f"{name}.skops"
        # Our own file: trust exactly the types it names (sklearn's, for these models).
        return skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))

    def node(self, name: str, node_name: str | None = None) -> ci.ModelNode:
        """A classifier node: predict_proba, argmax (label, score)."""
        return ci.ModelNode(name=node_name or name, framework="sklearn", format="skops",
                            uri=str(self.root / f"{name}.skops"), method="predict_proba",
                            postprocess=(ci.Op("argmax"),))

    def regressor(self, name: str) -> ci.ModelNode:
        return ci.ModelNode(name=name, framework="sklearn", format="skops",
                            uri=str(self.root / f"{name}.skops"), method="predict")

    def rows(self, with_key: bool = True) -> list[beam.Row]:
        return [beam.Row(id=int(i), key=f"user{int(i)}", features=self.x[j].tolist(),
                         truth=int(self.y[j])) if with_key else
                beam.Row(id=int(i), features=self.x[j].tolist(), truth=int(self.y[j]))
                for j, i in enumerate(self.ids)]


def train_zoo(root: Path) -> Zoo:
    from sklearn.datasets import load_digits
    from sklearn.dummy import DummyRegressor
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.naive_bayes import GaussianNB

    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    train, test = np.arange(0, len(y), 2), np.arange(1, len(y), 2)
    models = {
        "good": LogisticRegression(max_iter=3000).fit(x[train], y[train]),
        # trained on 150 rows: a decent model that disagrees with "good" now and then
        "small": LogisticRegression(max_iter=3000).fit(x[train[:150]], y[train[:150]]),
        # ~78% accurate (a depth-3 tree would be worse, but skops' trusted defaults
        # do not include sklearn's Tree type, and the models load as skops files)
        "bad": GaussianNB().fit(x[train], y[train]),
        "ridge": Ridge(alpha=1.0).fit(x[train], y[train].astype(np.float64)),
        "mean": DummyRegressor().fit(x[train], y[train].astype(np.float64)),
    }
    root.mkdir(parents=True, exist_ok=True)
    import skops.io

    for name, model in models.items():
        skops.io.dump(model, root / f"{name}.skops")
    return Zoo(root, x[test], y[test], test)


def ab(name: str, control: ci.ModelNode, treatment: Any, split: str = "random",
       weights: tuple[float, float] = (50, 50), seed: int = 0) -> ci.ABTestNode:
    return ci.ABTestNode(name=name, split=split, seed=seed, arms=(
        ci.Arm("control", control, weights[0]), ci.Arm("treatment", treatment, weights[1])))
