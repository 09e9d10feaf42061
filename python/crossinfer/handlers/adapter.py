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

    def batch_output(self, value: Any, n: int) -> np.ndarray:
        """The model's output the spec selects (:func:`select_output`), as an
        array of ``n`` rows (:func:`as_batch_output`)."""
        return as_batch_output(self.to_numpy(select_output(value, self.node.output,
                                                           self.node.name)), n, self.node.name)

    def to_numpy(self, value: Any) -> Any:
        """One framework output as numpy (PyTorch moves tensors to the CPU)."""
        return value

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


def select_output(value: Any, output: str | int | None, name: str) -> Any:
    """The one output of a model call that crossinfer uses.

    * one array (or tensor) -> it (``output`` must not be set);
    * a dict, a tuple, or a list of arrays -> the entry ``output`` names (a key
      of a dict, an index of a tuple or list); without ``output``, the only
      entry when there is exactly one;
    * a list of numbers -> one array.

    Raises ValueError listing the entries (keys or indices, with shapes) when
    ``output`` is needed but missing, or names no entry.
    """
    entries = _entries(value)
    if entries is None:
        if output is not None:
            raise ValueError(f"model {name!r} returned one array (shape "
                             f"{_shape_of(value)}), but the spec sets output {output!r}: "
                             "output selects from a dict, tuple or list of outputs; remove it")
        return value
    if output is None:
        if len(entries) == 1:
            return next(iter(entries.values()))
        raise ValueError(f"model {name!r} returned {len(entries)} outputs "
                         f"({_listing(entries)}); set the model node's output to the one "
                         "to use")
    if isinstance(value, dict) and isinstance(output, int):
        raise ValueError(f"model {name!r} returned a dict of outputs ({_listing(entries)}); "
                         f"output must be one of its keys, got the index {output}")
    if not isinstance(value, dict) and isinstance(output, str):
        raise ValueError(f"model {name!r} returned a {type(value).__name__} of outputs "
                         f"({_listing(entries)}); output must be an index, got {output!r}")
    if output not in entries:
        raise ValueError(f"model {name!r} has no output {output!r}; its outputs: "
                         f"{_listing(entries)}")
    return entries[output]


def _entries(value: Any) -> dict[Any, Any] | None:
    """A model's several outputs by key or index, or None for one array."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, tuple):
        return dict(enumerate(value))
    if isinstance(value, list) and value and all(hasattr(v, "shape") for v in value):
        return dict(enumerate(value))
    return None


def _shape_of(value: Any) -> list[int] | str:
    shape = getattr(value, "shape", None)
    if shape is None:
        return type(value).__name__
    return [int(d) for d in shape]


def _listing(entries: dict[Any, Any]) -> str:
    return ", ".join(f"{k!r}: shape {_shape_of(v)}" for k, v in entries.items())


def as_batch_output(value: Any, n: int, name: str) -> np.ndarray:
    """Normalise one model output to a numeric array of shape (n, ...), at least 2-D.

    Raises TypeError for non-numeric outputs and ValueError when the first
    axis is not the batch (an output that is not one row per element)."""
    out = np.asarray(value)
    if out.dtype.kind not in "biuf":
        raise TypeError(f"model {name!r} returned non-numeric outputs (dtype {out.dtype}); "
                        "crossinfer outputs are numeric arrays")
    if out.ndim == 0 or out.shape[0] != n:
        raise ValueError(f"model {name!r} returned an output of shape {list(out.shape)} for a "
                         f"batch of {n} element(s): crossinfer needs one output row per "
                         "element, the batch on the first axis (if the model returns several "
                         "outputs, name the per-element one with the model node's output)")
    if out.ndim == 1:
        out = out[:, None]
    return out
