"""The framework adapter interface: how one framework loads and runs a model.

Loading reads the model file once (local paths, or any Beam FileSystems URI),
verifies its pin on those bytes and deserialises the same bytes, after the
worker has checked the load policy again. Running is vectorised:
``predict`` takes one stacked numpy batch and returns one numpy batch, instead
of Beam's per-element tensors and PredictionResults, which dominate the cost of
small models.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossinfer.errors import CrossinferError
from crossinfer.handlers.files import read_model
from crossinfer.policy import LoadPolicy, LocationRefused
from crossinfer.spec.nodes import ModelNode


class ModelLoadError(CrossinferError, RuntimeError):
    """A model could not be loaded; the message names the model and the cause."""


class FrameworkAdapter:
    """Loads and runs the models of one framework. Subclasses override
    ``_load`` and ``predict``; instances are pickled to workers, so they hold
    only the spec, the policy and the model's location, and settle devices at
    load time, on the worker.

    The location is normalised once, where the pipeline is constructed (the
    service or the Python program: relative paths resolve against its working
    directory), and workers open exactly that location after checking the
    policy again (:meth:`load`).
    """

    framework = ""
    #: Whether ``_load`` takes the model file's bytes (read and verified once by
    #: :meth:`load`); adapters whose library opens the file itself say False.
    reads_bytes = True

    def __init__(self, node: ModelNode, policy: LoadPolicy) -> None:
        self.node = node
        self.policy = policy
        self.location: str | None = None
        if node.uri is not None:
            try:
                self.location = policy.resolve_location(node.uri)
            except LocationRefused as exc:
                raise ModelLoadError(f"model {node.name!r}: {exc}") from exc

    def load(self) -> Any:
        """Check the policy again, read the file once (safely: see
        :mod:`crossinfer.handlers.files`), verify the pin on those bytes, then load
        the model from the same bytes (nothing is re-read between the check and
        the load). Raises ModelLoadError."""
        self.check_policy()
        data = None
        if self.location is not None:
            if self.reads_bytes:
                data = read_verified(self.location, self.node.sha256, self.node.name)
            elif self.node.sha256:
                read_verified(self.location, self.node.sha256, self.node.name)
        return self._load(data)

    def check_policy(self) -> None:
        """The worker's own check of what construction checked: the format is
        allowed, the pin is there when required, and the location still
        resolves to itself inside the model roots (a symlink swapped since
        construction, or a changed root, is refused)."""
        name = self.node.name
        problem = self.policy.format_problem(self.node.resolved_format)
        if problem:
            raise ModelLoadError(f"model {name!r}: {problem}")
        if self.policy.require_sha256 and self.node.uri and not self.node.sha256:
            raise ModelLoadError(f"model {name!r}: no sha256 pin, and the policy requires one")
        if self.location is not None:
            try:
                again = self.policy.resolve_location(self.location)
            except LocationRefused as exc:
                raise ModelLoadError(f"model {name!r}: {exc}") from exc
            if again != self.location:
                raise ModelLoadError(f"model {name!r}: {self.location!r} now resolves to "
                                     f"{again!r}; refusing a location that changed since the "
                                     "pipeline was constructed")

    def _load(self, data: bytes | None) -> Any:
        """The model, from the verified bytes of its file (None: no file)."""
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


def read_verified(location: str, expected: str | None, name: str) -> bytes:
    """The bytes of the model file at ``location`` (local path or FileSystems URI),
    refused with ModelLoadError when it cannot be read safely (a symlink, a FIFO,
    a swapped directory: :func:`crossinfer.handlers.files.open_file`) or a pinned
    SHA-256 differs."""
    try:
        return read_model(location, expected)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {name!r}: {exc}") from exc


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
