"""End to end: a Python pipeline reaches crossinfer ONLY through the expansion service.

Real processes on free loopback ports: a worker pool, Beam's Python job server
and ``python -m crossinfer.expansion`` (external environment = that pool). One
PortableRunner pipeline applies the demo A/B, sequence and keyed specs through
``beam.ExternalTransform`` (payloads from the client helper); its outputs must
equal, element for element, those of ``crossinfer.Inference`` run directly on
the FnApiRunner. Bad inputs must come back on ``failures`` with their message.

Client environment: LOOPBACK. It works because the service ignores the
client's environment options (Beam's stock service merges them and fails with
"environment_config is not compatible with LOOPBACK"); the expanded transforms
run in the service's external worker pool, the client's own steps (Create, the
collecting Map) in this process, which is what lets them fill ``STORE``.
"""

from __future__ import annotations

import json
import math
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import crossinfer
from crossinfer.expansion import ExternalInference
from crossinfer.policy import LoadPolicy
from support import DIGITS_TOL, assert_same_label
from xlang_fixtures import STORE, Collect, Digit, shared_stack

pytestmark = pytest.mark.slow

KEYS = ("sklearn", "torch", "pytorch", "onnx")
#: spec name -> key field used for it (A/B is sticky on the user, keyed routes on key).
CASES = {"ab": "user", "sequence": "key", "keyed": "key"}


def make_rows(x: np.ndarray) -> list[Digit]:
    rows = [Digit(i, KEYS[i % len(KEYS)], f"user-{i}", [float(v) for v in x[i]])
            for i in range(48)]
    nan = [float(v) for v in x[0]]
    nan[3] = math.nan
    rows += [
        Digit(1000, "sklearn", "user-a", nan),                       # NaN
        Digit(1001, "torch", "user-b", []),                          # empty
        Digit(1002, "onnx", "user-c", [1.0] * 10),                   # wrong length
        Digit(1003, "no-such-route", "user-d", [float(v) for v in x[5]]),  # unknown key
        Digit(1004, None, None, [float(v) for v in x[6]]),           # no key at all
    ]
    return rows


def summarize(results: list[Any], failures: list[Any]) -> tuple[dict, dict]:
    res = {(r.id, r.path): (r.model, r.label, list(r.inference)) for r in results}
    assert len(res) == len(results), "duplicate (id, path) results"
    fail = {(f.element.id, f.node): f.error for f in failures}
    assert len(fail) == len(failures), "duplicate (id, node) failures"
    return res, fail


def spec_of(models: Any, name: str) -> dict:
    return json.loads((models.root / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def rows(digits_data: tuple[np.ndarray, np.ndarray]) -> list[Digit]:
    return make_rows(digits_data[0])


@pytest.fixture(scope="module")
def direct(models: Any, rows: list[Digit]) -> dict[str, tuple[dict, dict]]:
    """crossinfer.Inference on the FnApiRunner, in this process."""
    out = {}
    policy = LoadPolicy(model_roots=(str(models.root),))
    with beam.Pipeline(runner="FnApiRunner") as p:
        pcoll = p | beam.Create(rows).with_output_types(Digit)
        for name, key_field in CASES.items():
            o = pcoll | f"direct_{name}" >> crossinfer.Inference(
                spec_of(models, name), features_field="pixels", key_field=key_field,
                policy=policy)
            _ = o.results | f"r_{name}" >> beam.Map(Collect(f"direct/{name}/results"))
            _ = o.failures | f"f_{name}" >> beam.Map(Collect(f"direct/{name}/failures"))
    for name in CASES:
        out[name] = summarize(STORE.pop(f"direct/{name}/results", []),
                              STORE.pop(f"direct/{name}/failures", []))
    return out


@pytest.fixture(scope="module")
def xlang(models: Any, rows: list[Digit]) -> dict[str, tuple[list, list]]:
    """The same three specs through the service, on PortableRunner."""
    stack = shared_stack(models.root)
    options = PipelineOptions(runner="PortableRunner", job_endpoint=stack.job_endpoint,
                              environment_type="LOOPBACK")
    with beam.Pipeline(options=options) as p:
        pcoll = p | beam.Create(rows).with_output_types(Digit)
        for name, key_field in CASES.items():
            o = pcoll | f"xlang_{name}" >> ExternalInference(
                spec_of(models, name), stack.service_address, features_field="pixels",
                key_field=key_field)
            _ = o.results | f"r_{name}" >> beam.Map(Collect(f"xlang/{name}/results"))
            _ = o.failures | f"f_{name}" >> beam.Map(Collect(f"xlang/{name}/failures"))
    return {name: (STORE.pop(f"xlang/{name}/results", []),
                   STORE.pop(f"xlang/{name}/failures", [])) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_direct_pipeline(name: str, xlang: dict, direct: dict,
                                 rows: list[Digit]) -> None:
    results, failures = xlang[name]
    got_res, got_fail = summarize(results, failures)
    want_res, want_fail = direct[name]
    assert got_res.keys() == want_res.keys()
    for key, (model, label, inference) in want_res.items():
        g_model, g_label, g_inference = got_res[key]
        assert g_model == model, key
        # Other processes, other batches: float32 within the tolerance, labels equal
        # unless the top scores tie within it.
        np.testing.assert_allclose(g_inference, inference, **DIGITS_TOL, err_msg=str(key))
        assert_same_label(g_label, label, inference, DIGITS_TOL["atol"])
    assert got_fail == want_fail
    # every element accounted for (A/B and keyed route each element once)
    assert len({i for i, _ in got_res} | {i for i, _ in got_fail}) == len(rows)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_inputs_come_back_as_failures(name: str, xlang: dict) -> None:
    _, failures = xlang[name]
    errors = {f.element.id: f.error for f in failures}
    assert "contains NaN or infinity (first at index 3)" in errors[1000]
    assert "'pixels' is empty" in errors[1001]
    assert errors.get(1002)  # 10 pixels into 64-input models
    if name == "keyed":
        assert "no route for key 'no-such-route'" in errors[1003]
        assert "has no key" in errors[1004]
    if name == "ab":
        assert "needs a key" in errors[1004]


def test_outputs_are_rows_with_the_contract_fields(xlang: dict) -> None:
    results, failures = xlang["ab"]
    row = results[0]
    assert row._fields == ("id", "key", "user", "pixels", "model", "path", "inference",
                           "label", "score", "labels", "scores")
    assert row.path.startswith("digits_ab/")
    assert isinstance(row.label, int) and isinstance(row.inference[0], float)
    failure = failures[0]
    assert failure._fields == ("element", "node", "error")
    assert failure.element._fields == Digit._fields


def test_service_logged_each_expansion(xlang: dict, models: Any) -> None:
    log = shared_stack(models.root).service.log_text()
    for urn in ("ab_test", "sequence", "keyed"):
        assert f"urn=beam:transform:crossinfer:{urn}:v1 outcome=ok ms=" in log
