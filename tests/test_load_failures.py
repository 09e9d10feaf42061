"""A model that cannot load fails its own elements only, in batch and in streaming.

Three scikit-learn models (skops files); one file is truncated (or its pin is wrong) *after*
the pipeline is built, as when a model store changes under a running job.
Before, the whole pipeline raised ``UnpicklingError: pickle data was
truncated`` naming neither model nor file, and the healthy models' elements
came out neither as results nor as failures (the report used pickle files; the
format makes no difference). Now that model's elements fail, each naming the
model, the file and the cause; everything else comes out.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import FixedWindows, TimestampedValue

import crossinfer as ci
from crossinfer.handlers.loaded import RELOAD_AFTER_SECS, LoadedModel
from crossinfer.handlers.registry import adapter_for
from paths import paths_for, run_path
from support import STORE, Collect

POLICY = ci.LoadPolicy()
SCALE = ci.Op("scale", {"factor": 1 / 16})
NAMES = ("lr_a", "lr_b", "lr_c")
BROKEN = "lr_b"
#: What a truncated skops file (a zip archive cut in half) fails with.
TRUNCATED = "ModelLoadError: model 'lr_b': not a readable skops file: BadZipFile"


@pytest.fixture()
def files(models, tmp_path) -> dict[str, str]:
    """Three copies of the digits LR, one per model."""
    out = {}
    for name in NAMES:
        out[name] = str(tmp_path / f"{name}.skops")
        shutil.copy(models.path("digits_lr.skops"), out[name])
    return out


def lr(name: str, files: dict[str, str], **extra) -> ci.ModelNode:
    return ci.ModelNode(name=name, framework="sklearn", format="skops", uri=files[name],
                        method="predict_proba", preprocess=(SCALE,), **extra)


def truncate(path: str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def specs(files: dict[str, str]) -> dict[str, ci.InferenceSpec]:
    """The broken model as a model node, an A/B arm, a sequence stage, a keyed route."""
    keyed = ci.KeyedNode(name="keyed", routes=tuple(
        ci.Route((name,), lr(name, files)) for name in NAMES))
    mirror = ci.ABTestNode(name="ab", split="mirror", arms=tuple(
        ci.Arm(name, lr(name, files)) for name in NAMES))
    scaled = ci.ModelNode(name="first", framework="custom",
                          handler_class="support:CountingHandler",
                          handler_params={"name": "first"})
    sequence = ci.SequenceNode(name="seq", stages=(scaled, lr(BROKEN, files)))
    return {"model": ci.InferenceSpec(lr(BROKEN, files)), "ab": ci.InferenceSpec(mirror),
            "sequence": ci.InferenceSpec(sequence), "keyed": ci.InferenceSpec(keyed)}


#: The broken model's node path in each spec.
BROKEN_PATH = {"model": BROKEN, "ab": f"ab/{BROKEN}/{BROKEN}", "sequence": f"seq/{BROKEN}",
               "keyed": f"keyed/{BROKEN}"}


def rows_of(digits_data, n: int = 90) -> list[tuple[int, str, np.ndarray]]:
    x = digits_data[0]
    return [(i, NAMES[i % 3], x[i]) for i in range(n)]


def check(outcome, kind: str, rows: list, path: str, file: str, cause: str) -> None:
    broken = outcome.failed_at(BROKEN_PATH[kind])
    if kind == "keyed":  # the broken route's keys fail; the others' come out
        assert sorted(broken) == [i for i, key, _ in rows if key == BROKEN], path
        healthy = [i for i, key, _ in rows if key != BROKEN]
        assert sorted(outcome.results) == healthy, path
    else:  # every element meets the broken model (a mirror arm, the sequence's stage 2)
        assert sorted(broken) == [i for i, _, _ in rows], path
    for error in broken.values():
        assert error.startswith(f"model {BROKEN!r} could not be loaded from {file!r}: "), error
        assert cause in error, error
    if kind == "ab":  # the other arms of the mirror give every element its result
        for name in NAMES:
            if name != BROKEN:
                assert sorted(outcome.by_path(f"ab/{name}/{name}")) == [i for i, _, _ in rows]
    assert set(outcome.failures) | set(outcome.results) == {i for i, _, _ in rows}, path
    others = {i for i, fs in outcome.failures.items() for node, _ in fs
              if node != BROKEN_PATH[kind]}
    assert others == set(), f"{path}: unexpected failures {others}"


@pytest.mark.parametrize("kind", ["model", "ab", "sequence", "keyed"])
def test_a_truncated_model_file_fails_only_its_own_elements(files, digits_data, kind) -> None:
    spec = specs(files)[kind]
    policy = ci.LoadPolicy(allowed_classes=("crossinfer.models:*", "support:*"))
    ci.Inference(spec, policy=policy)  # built while the file is whole
    truncate(files[BROKEN])
    rows = rows_of(digits_data)
    for path in paths_for(spec):
        outcome = run_path(path, rows, spec, policy)
        check(outcome, kind, rows, path, files[BROKEN], TRUNCATED)


def test_a_wrong_pin_fails_only_that_routes_elements(files, digits_data) -> None:
    keyed = ci.KeyedNode(name="keyed", routes=tuple(
        ci.Route((name,), lr(name, files, sha256="0" * 64 if name == BROKEN else None))
        for name in NAMES))
    spec = ci.InferenceSpec(keyed)
    rows = rows_of(digits_data)
    for path in paths_for(spec):
        check(run_path(path, rows, spec, POLICY), "keyed", rows, path, files[BROKEN],
              "refusing to load it (the file changed or the pin is wrong)")


# ------------------------------------------------------------ streaming


def _stream(n: int) -> TestStream:
    stream = TestStream()
    for second in range(0, n, 10):
        stream = stream.advance_watermark_to(second)
        stream = stream.add_elements([TimestampedValue(
            beam.Row(id=i, key=NAMES[i % 3], features=np.full(64, float(i % 16), np.float32)),
            i) for i in range(second, min(n, second + 10))])
    return stream.advance_watermark_to_infinity()


@pytest.mark.parametrize("kind", ["model", "ab", "sequence", "keyed"])
def test_a_truncated_model_fails_only_its_own_elements_in_streaming(files, kind) -> None:
    spec = specs(files)[kind]
    transform = ci.Inference(spec, policy=ci.LoadPolicy(
        allowed_classes=("crossinfer.models:*", "support:*")))
    truncate(files[BROKEN])
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    tag = f"stream-broken-{kind}"
    with beam.Pipeline(options=options) as p:
        out = p | _stream(60) | beam.WindowInto(FixedWindows(20)) | transform
        _ = out.results | beam.Map(Collect(tag))
        _ = out.failures | "F" >> beam.Map(Collect(tag + "/failures"))
    results, failures = STORE.pop(tag, []), STORE.pop(tag + "/failures", [])
    broken = [f for f in failures if f.node == BROKEN_PATH[kind]]
    assert len(broken) == len(failures), {f.node for f in failures}
    assert all(f.error.startswith(f"model {BROKEN!r} could not be loaded from "
                                  f"{files[BROKEN]!r}: {TRUNCATED}")
               for f in broken)
    if kind == "keyed":
        assert sorted(f.element.id for f in broken) == [i for i in range(60) if i % 3 == 1]
        assert sorted(r.id for r in results) == [i for i in range(60) if i % 3 != 1]
    elif kind == "ab":
        assert sorted(f.element.id for f in broken) == list(range(60))
        assert sorted(r.id for r in results) == sorted(list(range(60)) * 2)
    else:
        assert sorted(f.element.id for f in broken) == list(range(60))
        assert results == []


# ------------------------------------------------------------ trying again


def test_a_model_that_could_not_load_is_loaded_again_after_a_while(files) -> None:
    node = lr(BROKEN, files)
    good = Path(files[BROKEN]).read_bytes()
    truncate(files[BROKEN])
    now = [0.0]
    loaded = LoadedModel(adapter_for(node, POLICY), clock=lambda: now[0])
    assert TRUNCATED in (loaded.load_error() or "")
    Path(files[BROKEN]).write_bytes(good)  # the file is put right
    now[0] = RELOAD_AFTER_SECS - 1
    assert loaded.load_error() is not None, "not tried again before the interval"
    now[0] = RELOAD_AFTER_SECS + 1
    assert loaded.load_error() is None
    x = np.ones((2, 64), np.float32)
    assert loaded.predict(x).shape == (2, 10)
