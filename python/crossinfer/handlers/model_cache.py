"""A bounded LRU of loaded models for keyed inference.

Guarantees, before mechanics:

* never more than ``max_models`` models are resident at once in one cache
  (one cache per worker process, shared by its threads);
* eviction is least-recently-used among models not in use; a model being run
  is never evicted under a thread using it (callers wait instead);
* two threads asking for the same model load it once;
* eviction releases the model eagerly (framework cleanup, and a full ``gc``
  when a reference cycle would keep it alive), unlike Beam's keyed handler,
  which leaks a server process per reload;
* every load and eviction is timed, logged with the model id and counted in
  Beam metrics (``model_loads``, ``model_evictions``, ``resident_models``), so
  thrashing is visible instead of guessed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from apache_beam.metrics.metric import Metrics

_LOG = logging.getLogger(__name__)


class ModelCache:
    def __init__(self, loaders: dict[str, Callable[[], Any]],
                 releasers: dict[str, Callable[[Any], None]], max_models: int,
                 namespace: str) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models}")
        self._loaders = loaders
        self._releasers = releasers
        self.max_models = max_models
        self._namespace = namespace
        self._resident: OrderedDict[str, Any] = OrderedDict()
        self._in_use: dict[str, int] = {}
        self._loading: set[str] = set()
        self._cond = threading.Condition()
        self.loads = 0
        self.evictions = 0
        self.peak_resident = 0

    @property
    def resident(self) -> list[str]:
        with self._cond:
            return list(self._resident)

    @contextlib.contextmanager
    def lease(self, model_id: str) -> Iterator[Any]:
        """The loaded model for ``model_id``, held resident while the block runs."""
        model = self._acquire(model_id)
        try:
            yield model
        finally:
            with self._cond:
                self._in_use[model_id] -= 1
                self._cond.notify_all()

    def _acquire(self, model_id: str) -> Any:
        with self._cond:
            while True:
                if model_id in self._resident:
                    self._resident.move_to_end(model_id)
                    self._in_use[model_id] = self._in_use.get(model_id, 0) + 1
                    return self._resident[model_id]
                if model_id in self._loading:
                    self._cond.wait()
                    continue
                slots = len(self._resident) + len(self._loading)
                if slots < self.max_models:
                    break
                if not self._evict_one_locked():
                    self._cond.wait()  # every resident model is in use
            self._loading.add(model_id)
        try:
            model = self._load(model_id)
        except BaseException:
            with self._cond:
                self._loading.discard(model_id)
                self._cond.notify_all()
            raise
        with self._cond:
            self._loading.discard(model_id)
            self._resident[model_id] = model
            self._in_use[model_id] = self._in_use.get(model_id, 0) + 1
            self.peak_resident = max(self.peak_resident, len(self._resident))
            Metrics.gauge(self._namespace, "resident_models").set(len(self._resident))
            self._cond.notify_all()
            return model

    def _load(self, model_id: str) -> Any:
        start = time.perf_counter()
        model = self._loaders[model_id]()
        millis = (time.perf_counter() - start) * 1e3
        self.loads += 1
        Metrics.counter(self._namespace, "model_loads").inc()
        Metrics.counter(f"{self._namespace}/{model_id}", "model_loads").inc()
        Metrics.distribution(self._namespace, "model_load_ms").update(int(millis))
        _LOG.info("crossinfer: loaded keyed model %r in %.1f ms (resident: %d/%d)", model_id,
                  millis, len(self._resident) + 1, self.max_models)
        return model

    def _evict_one_locked(self) -> bool:
        for victim in self._resident:
            if self._in_use.get(victim, 0) == 0:
                model = self._resident.pop(victim)
                start = time.perf_counter()
                with contextlib.suppress(Exception):
                    self._releasers[victim](model)
                alive = _weak(model)
                del model
                # Dropping the last reference usually frees the model; a full
                # collection (~0.15 s with torch and Beam loaded) only when a
                # reference cycle keeps it alive, or when that cannot be told.
                if alive is None or alive() is not None:
                    gc.collect()
                self.evictions += 1
                Metrics.counter(self._namespace, "model_evictions").inc()
                _LOG.info("crossinfer: evicted keyed model %r in %.1f ms", victim,
                          (time.perf_counter() - start) * 1e3)
                return True
        return False


def _weak(obj: Any) -> weakref.ref[Any] | None:
    try:
        return weakref.ref(obj)
    except TypeError:  # not weak-referenceable
        return None
