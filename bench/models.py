"""The benchmark models and synthetic data, deterministic and built on the spot.

* ``lr.pkl``: scikit-learn LogisticRegression, 32 features -> 10 classes (for
  Beam's own handler), and the same model as ``lr.skops`` (for crossinfer,
  whose default policy refuses pickles).
* ``mlp.pt``: state dict of ``crossinfer.models:MLP`` with sizes 32-256-256-10,
  and ``mlp.onnx``, its ONNX export (dynamic batch axis).
* ``mlp_<i>.pt`` for i in 0..5: six differently seeded MLPs (keyed benchmark;
  ``mlp_0.pt`` is also the A/B test's second arm).
* ``mlp_stage2.pt``: MLP 10-64-10, the sequence's second stage.
* ``meanpool.pt``: ``crossinfer.models:MeanPoolClassifier`` (ragged benchmark).
* ``big_mlp.pt``: a larger MLP 1024-4096-4096-1024 (GPU benchmark).
"""

from __future__ import annotations

import functools
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIM = 32
CLASSES = 10
MLP_SIZES = [DIM, 256, 256, CLASSES]
STAGE2_SIZES = [CLASSES, 64, CLASSES]
BIG_MLP_SIZES = [1024, 4096, 4096, 1024]
MEANPOOL_PARAMS = {"hidden": 16, "classes": 2}
KEYED_MODELS = 6
DEFAULT_ROOT = Path(".work/bench_models")


@dataclass(frozen=True)
class BenchModels:
    root: Path

    def path(self, name: str) -> str:
        return str(self.root / name)


@functools.lru_cache(maxsize=64)
def shard_data(seed: int, shard: int, rows: int, dim: int = DIM) -> np.ndarray:
    """Deterministic float32 rows for one shard of a synthetic data set.

    Cached per process (never written to): the pipelines run in this process, so
    after the first run their source reads rows from memory, as the raw loops
    do, and no variant is timed generating data.
    """
    rng = np.random.default_rng([seed, shard])
    data = rng.standard_normal((rows, dim), dtype=np.float32)
    return data


def shard_sizes(n: int, shards: int) -> list[int]:
    base, extra = divmod(n, shards)
    return [base + (1 if i < extra else 0) for i in range(shards)]


def dataset(n: int, shards: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    """Exactly the rows the pipelines' sources generate, concatenated."""
    return np.concatenate([shard_data(seed, i, size, dim)
                           for i, size in enumerate(shard_sizes(n, shards))])


@functools.lru_cache(maxsize=64)
def ragged_lengths(seed: int, shard: int, rows: int, low: int = 4, high: int = 64,
                   runs: int | None = None) -> np.ndarray:
    """Lengths drawn uniformly from ``low..high``; with ``runs``, the same
    lengths in runs of ``runs`` rows of one length (every length as often,
    the runs in a fixed shuffled order), so input arrives already grouped."""
    if runs is not None:
        count = high - low + 1
        run = np.arange(rows) // runs
        return low + (run * 17 + shard) % count  # 17 is prime: every length comes up
    rng = np.random.default_rng([seed, shard, 1])
    lengths = rng.integers(low, high + 1, size=rows)
    return lengths


def prepare(root: str | Path = DEFAULT_ROOT) -> BenchModels:
    """Build every benchmark model into ``root`` (kept when already there)."""
    import skops.io
    import torch
    from sklearn.linear_model import LogisticRegression

    from crossinfer.models import MLP, MeanPoolClassifier

    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    models = BenchModels(out)
    marker = out / ".built-v3"
    if marker.exists():
        return models

    rng = np.random.default_rng(1234)
    x = rng.standard_normal((4000, DIM)).astype(np.float32)
    teacher = rng.standard_normal((DIM, CLASSES)).astype(np.float32)
    y = np.argmax(x @ teacher, axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = LogisticRegression(max_iter=500).fit(x, y)
    with open(models.path("lr.pkl"), "wb") as f:
        pickle.dump(lr, f)
    skops.io.dump(lr, models.path("lr.skops"))

    torch.manual_seed(0)
    mlp = MLP(MLP_SIZES).eval()
    torch.save(mlp.state_dict(), models.path("mlp.pt"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(mlp, (torch.zeros(1, DIM),), models.path("mlp.onnx"),
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    for i in range(KEYED_MODELS):
        torch.manual_seed(100 + i)
        torch.save(MLP(MLP_SIZES).state_dict(), models.path(f"mlp_{i}.pt"))
    torch.manual_seed(9)
    torch.save(MLP(STAGE2_SIZES).state_dict(), models.path("mlp_stage2.pt"))
    torch.manual_seed(7)
    torch.save(MeanPoolClassifier(**MEANPOOL_PARAMS).state_dict(), models.path("meanpool.pt"))
    torch.manual_seed(8)
    torch.save(MLP(BIG_MLP_SIZES).state_dict(), models.path("big_mlp.pt"))
    marker.touch()
    return models
