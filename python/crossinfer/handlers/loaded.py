"""A loaded model, or why it could not be loaded, behind two methods.

Guarantees, before mechanics:

* **A model that cannot load fails its own elements only.** Loading never
  raises: a missing or truncated file, a wrong SHA-256 pin, a class that will
  not import - the cause is kept, and :meth:`LoadedModel.load_error` returns a
  sentence naming the model, the file and the cause. The model's step turns it
  into a failure row for each of its elements; every other model, arm, route
  and stage goes on. (Raised from Beam's ``load_model``, the error would stop
  the whole pipeline.)
* **The load is tried again**, at most once every :data:`RELOAD_AFTER_SECS`
  seconds, when elements keep coming: a file put right (or a storage hiccup
  gone) heals a long-running streaming pipeline without a restart.
* **It works through Beam's cross-process proxy.** With ``large_model`` or
  ``model_copies`` Beam keeps what ``load_model`` returned in one process and
  hands every worker process a proxy to it, through which only public method
  calls with picklable arguments and results work (no attributes, generators
  or tensors). A LoadedModel takes a numpy batch and returns a numpy array; the
  framework's objects never leave the process that loaded them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from crossinfer.engine.block import error_text
from crossinfer.handlers.adapter import FrameworkAdapter
from crossinfer.handlers.signatures import loaded_args_problem

_LOG = logging.getLogger(__name__)

#: Seconds between attempts to load a model that failed to load.
RELOAD_AFTER_SECS = 30.0


class LoadedModel:
    """One model node's model in this process: ``predict`` or ``load_error``."""

    def __init__(self, adapter: FrameworkAdapter,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._adapter = adapter
        self._clock = clock
        self._lock = threading.Lock()
        self._model: Any = None
        self._error: str | None = None
        self._retry_at = 0.0
        self._load()

    def _load(self) -> None:
        node = self._adapter.node
        start = time.perf_counter()
        try:
            model = self._adapter.load()
            problem = loaded_args_problem(node, model)
            if problem is not None:
                raise TypeError(problem)
        except Exception as exc:  # any failure to load is this model's elements' failure
            where = f" from {node.uri!r}" if node.uri else ""
            self._error = f"model {node.name!r} could not be loaded{where}: {error_text(exc)}"
            self._retry_at = self._clock() + RELOAD_AFTER_SECS
            _LOG.error("crossinfer: %s (its elements fail; retrying in %.0f s)", self._error,
                       RELOAD_AFTER_SECS, exc_info=True)
            return
        self._model, self._error = model, None
        _LOG.info("crossinfer: loaded model %r (%s) in %.1f ms", node.name,
                  self._adapter.framework, (time.perf_counter() - start) * 1e3)

    def load_error(self) -> str | None:
        """None when the model is loaded; otherwise why not (after trying to load it
        again, when :data:`RELOAD_AFTER_SECS` have passed since the last attempt)."""
        if self._error is None:
            return None
        with self._lock:
            if self._error is not None and self._clock() >= self._retry_at:
                self._load()
            return self._error

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """The node's selected output for a stacked batch, one row per element."""
        if self._error is not None:
            raise RuntimeError(self._error)
        return self._adapter.predict(self._model, batch, dict(self._adapter.node.inference_args))

    def release(self) -> None:
        """Free what the model holds beyond Python references (GPU memory)."""
        if self._model is not None:
            self._adapter.release(self._model)
            self._model = None
