"""The framework adapter interface: how one framework loads and runs a model.

Loading is delegated to Beam's own handler for the framework (its FileSystems
access, device placement, TorchScript/state-dict logic). Running is vectorised:
``predict`` takes one stacked numpy batch and returns one numpy batch, instead
of Beam's per-element tensors and PredictionResults, which dominate the cost of
small models.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
from apache_beam.io.filesystems import FileSystems

from crossinfer.policy import LoadPolicy
from crossinfer.spec.nodes import ModelNode


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the model and the cause."""


class FrameworkAdapter:
    """Loads and runs the models of one framework. Subclasses override
    ``_load`` and ``predict``; instances are pickled to workers, so they hold
    only the spec and settle devices at load time, on the worker."""

    framework = ""

    def __init__(self, node: ModelNode, policy: LoadPolicy) -> None:
        self.node = node
        self.policy = policy

    def load(self) -> Any:
        """Verify the pinned checksum, then load the model."""
        if self.node.sha256 and self.node.uri:
            verify_sha256(self.node.uri, self.node.sha256, self.node.name)
        return self._load()

    def _load(self) -> Any:
        raise NotImplementedError

    def predict(self, model: Any, batch: np.ndarray, inference_args: dict[str, Any]
                ) -> np.ndarray:
        """Run ``model`` on a stacked batch; return outputs with the batch first."""
        raise NotImplementedError

    def release(self, model: Any) -> None:
        """Free what the model holds beyond Python references (GPU memory)."""

    def describe_device(self) -> str:
        return self.node.device


def verify_sha256(uri: str, expected: str, name: str) -> None:
    """Refuse a model file whose SHA-256 differs from the pinned one. Runs
    before any bytes are unpickled."""
    digest = hashlib.sha256()
    with FileSystems.open(uri) as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        raise ModelLoadError(
            f"model {name!r}: the SHA-256 of {uri!r} is {actual}, but the spec pins "
            f"{expected}; refusing to load it (the file changed or the pin is wrong)")


def as_batch_output(value: Any, n: int, name: str) -> np.ndarray:
    """Normalise a model output to a numeric array of shape (n, ...), at least 2-D."""
    if isinstance(value, (tuple, list)) and len(value) and not np.isscalar(value[0]):
        value = value[0]
    out = np.asarray(value)
    if out.dtype.kind not in "biuf":
        raise TypeError(f"model {name!r} returned non-numeric outputs (dtype {out.dtype}); "
                        "crossinfer outputs are numeric arrays")
    if out.ndim == 0 or out.shape[0] != n:
        raise ValueError(f"model {name!r} returned {out.shape[0] if out.ndim else 0} outputs "
                         f"for a batch of {n}")
    if out.ndim == 1:
        out = out[:, None]
    return out
