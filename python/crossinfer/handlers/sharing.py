"""``large_model`` / ``model_copies`` for keyed routes: models shared by processes.

Beam's RunInference shares a model node's model itself (its handler says
``share_model_across_processes``). A keyed node runs its routes' models
inside one RunInference, from its own model cache, so it shares them the way
Beam does: each copy is a :class:`~crossinfer.handlers.loaded.LoadedModel`
kept in one process of the machine by Beam's ``multi_process_shared``, under a
tag fixed when the pipeline is built, and every worker process calls it
through a proxy. ``large_model`` is one copy; ``model_copies: N`` is N, used in
turn.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from apache_beam.utils import multi_process_shared


class SharedModel:
    """Proxies to the copies of one route's model; calls go to them in turn."""

    def __init__(self, load: Callable[[], Any], tag: str, copies: int) -> None:
        self._handles = [multi_process_shared.MultiProcessShared(
            load, tag=f"{tag}_{i}", always_proxy=True) for i in range(copies)]
        self._proxies = [handle.acquire() for handle in self._handles]
        self._turn = itertools.cycle(range(copies))
        self._lock = threading.Lock()

    def _proxy(self) -> Any:
        with self._lock:
            return self._proxies[next(self._turn)]

    def load_error(self) -> str | None:
        """The first copy's load error, if any copy failed to load."""
        for proxy in self._proxies:
            error: str | None = proxy.load_error()
            if error is not None:
                return error
        return None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        out: np.ndarray = self._proxy().predict(batch)
        return out

    def release(self) -> None:
        """Give this process's references back; the last one frees each copy."""
        for handle, proxy in zip(self._handles, self._proxies, strict=True):
            handle.release(proxy)
        self._proxies = []
