"""ModelCache, the one class shared by a worker's threads: its guarantees
(at most ``max_models`` resident, LRU among models not in use, a model in use
never evicted, one load per model however many threads ask) under real threads."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from crossinfer.handlers.model_cache import ModelCache

#: Seconds a test waits for a thread before calling it stuck.
JOIN_SECS = 30


class Model:
    """A loaded model (weak-referenceable, as real ones are: the cache then
    needs no full collection to know it is gone)."""

    def __init__(self, model_id: str) -> None:
        self.id = model_id


class Models:
    """Loaders and releasers that count what is alive (loaded, not released)."""

    def __init__(self, ids: list[str], load: Callable[[str], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.alive: set[str] = set()
        self.peak = 0
        self.loads: dict[str, int] = dict.fromkeys(ids, 0)
        self.released: list[str] = []
        self._load = load
        self.loaders = {i: (lambda i=i: self.load(i)) for i in ids}
        self.releasers = {i: (lambda model, i=i: self.release(i)) for i in ids}

    def load(self, model_id: str) -> Model:
        if self._load is not None:
            self._load(model_id)
        with self.lock:
            self.loads[model_id] += 1
            self.alive.add(model_id)
            self.peak = max(self.peak, len(self.alive))
        return Model(model_id)

    def release(self, model_id: str) -> None:
        with self.lock:
            self.alive.discard(model_id)
            self.released.append(model_id)

    def cache(self, max_models: int) -> ModelCache:
        return ModelCache(self.loaders, self.releasers, max_models, "test/cache")


def start(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_SECS)
        assert not thread.is_alive(), "a thread is stuck in the cache"


def test_at_most_max_models_are_resident_under_many_threads() -> None:
    ids = [f"m{i}" for i in range(6)]
    models = Models(ids)
    cache = models.cache(max_models=2)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                model_id = rng.choice(ids)
                with cache.lease(model_id) as model:
                    assert model.id == model_id  # the model asked for, not another
                    assert len(models.alive) <= 2
                    time.sleep(rng.random() / 2000)
                del model  # no reference left behind (the cache would run a full gc to check)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    join([start(lambda s=s: work(s)) for s in range(8)])
    assert errors == []
    assert models.peak <= 2 and cache.peak_resident <= 2
    assert len(cache.resident) <= 2
    assert cache.loads == sum(models.loads.values()) > 2  # the cache did load and evict
    assert cache.evictions == cache.loads - len(cache.resident) == len(models.released)


def test_threads_asking_for_one_model_load_it_once() -> None:
    gate = threading.Event()
    models = Models(["m"], load=lambda _: gate.wait(JOIN_SECS))
    cache = models.cache(max_models=1)
    got: list[Any] = []

    def use() -> None:
        with cache.lease("m") as model:
            got.append(model)

    threads = [start(use) for _ in range(8)]
    time.sleep(0.1)  # let every thread reach the cache while the load is in progress
    gate.set()
    join(threads)
    assert models.loads == {"m": 1} and cache.loads == 1
    assert len(got) == 8 and all(model is got[0] for model in got)


def test_a_model_in_use_is_not_evicted_the_other_thread_waits() -> None:
    models = Models(["a", "b"])
    cache = models.cache(max_models=1)
    holding, done = threading.Event(), threading.Event()
    order: list[str] = []

    def hold_a() -> None:
        with cache.lease("a"):
            holding.set()
            done.wait(JOIN_SECS)
            order.append("a released")

    def use_b() -> None:
        with cache.lease("b"):
            order.append("b leased")

    first = start(hold_a)
    assert holding.wait(JOIN_SECS)
    second = start(use_b)
    time.sleep(0.2)
    assert order == [] and models.alive == {"a"}  # b waits: a is in use, so not evicted
    done.set()
    join([first, second])
    assert order == ["a released", "b leased"]
    assert models.released == ["a"] and cache.resident == ["b"]


def test_eviction_is_least_recently_used() -> None:
    models = Models(["a", "b", "c"])
    cache = models.cache(max_models=2)
    for model_id in ("a", "b", "a", "c"):  # b is the least recently used when c comes
        with cache.lease(model_id):
            pass
    assert models.released == ["b"] and cache.resident == ["a", "c"]
    assert models.loads == {"a": 1, "b": 1, "c": 1}


def test_a_failed_load_frees_its_slot_and_wakes_the_waiting_threads() -> None:
    gate = threading.Event()
    attempts: list[str] = []

    def load(model_id: str) -> None:
        attempts.append(model_id)
        if len(attempts) == 1:
            gate.wait(JOIN_SECS)
            raise OSError("disk gone")

    models = Models(["m"], load=load)
    cache = models.cache(max_models=1)
    outcomes: list[str] = []

    def use() -> None:
        try:
            with cache.lease("m"):
                outcomes.append("ok")
        except OSError as exc:
            outcomes.append(str(exc))

    threads = [start(use) for _ in range(3)]
    time.sleep(0.1)
    gate.set()
    join(threads)
    # The first load fails its caller only; a waiting thread loads again, once.
    assert sorted(outcomes) == ["disk gone", "ok", "ok"]
    assert models.loads == {"m": 1} and cache.resident == ["m"]


def test_max_models_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_models must be at least 1"):
        Models(["m"]).cache(max_models=0)
