"""Fuzz the running service's Expand endpoint with random and mutated requests.

Starting from valid requests for all four URNs, each case mutates one or more of:
the spec JSON (structure and values), the payload Row bytes and schema, the URN,
the request's components and options - or sends raw random bytes. Every answer
must be an error or a valid expansion (Row-coded ``results`` and ``failures``);
no RPC may fail; the service process must be alive and serving at the end.
Seeded, so a failure reproduces; bounded in count and time; loopback only.
"""

from __future__ import annotations

import copy
import json
import random
import time
from typing import Any

import grpc
import pytest
from apache_beam.portability.api import (
    beam_expansion_api_pb2,
    external_transforms_pb2,
    schema_pb2,
)

from crossinfer.expansion import encode_payload
from crossinfer.expansion.urns import AB_TEST_URN, KEYED_URN, MODEL_URN, SEQUENCE_URN
from xlang_fixtures import assert_valid_expansion, build_request, expansion_stub, shared_stack

pytestmark = pytest.mark.slow

CASES = 320
TIME_BUDGET_SECS = 150.0
SEED = 20261121

URNS = [MODEL_URN, AB_TEST_URN, SEQUENCE_URN, KEYED_URN,
        "beam:transforms:python:fully_qualified_named", "beam:transform:pickled_python:v1",
        "beam:transform:crossinfer:model:v2", "beam:transform:pardo:v1", "", "x" * 300]
ODD_VALUES: list[Any] = [None, True, 0, -1, 10**30, 1e308, -0.5, "", "x" * 2000, "../../etc/passwd",
                         "gs://bucket/m.pkl", "file:///etc/passwd", "os:system", [], {}, [1, [2]],
                         {"op": "softmax"}, "\u0000\ud7ff", "crossinfer.models:MLP"]


def base_specs(models: Any) -> dict[str, dict]:
    ab = json.loads((models.root / "ab.json").read_text())
    return {
        MODEL_URN: {"version": 1, "node": ab["node"]["arms"][0]["node"]},
        AB_TEST_URN: ab,
        SEQUENCE_URN: json.loads((models.root / "sequence.json").read_text()),
        KEYED_URN: json.loads((models.root / "keyed.json").read_text()),
    }


def paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON document."""
    found = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += paths(v, (*prefix, i))
    return found


def mutate_spec(rng: random.Random, doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths(doc)[1:] or [()])
        if not path:
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        op = rng.random()
        if op < 0.35:
            parent[last] = rng.choice(ODD_VALUES)
        elif op < 0.55 and isinstance(parent, dict):
            del parent[last]
        elif op < 0.7 and isinstance(parent, dict):
            parent[rng.choice(["fn", "code", "__reduce__", "pickle", str(last) + "_"])] = "x"
        elif op < 0.85:
            parent[last] = copy.deepcopy(doc)  # nest the document in itself
        else:
            parent[last] = rng.choice(["model", "ab_test", "sequence", "keyed", "nope"])
    return doc


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    op = rng.random()
    if op < 0.4 and data:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif op < 0.6:
        data = data[: rng.randrange(len(data) + 1)]
    elif op < 0.8:
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        data = bytearray(rng.randbytes(rng.randint(0, 512)))
    return bytes(data)


def mutate_schema(rng: random.Random, payload: bytes) -> bytes:
    config = external_transforms_pb2.ExternalConfigurationPayload.FromString(payload)
    field = rng.choice(list(config.schema.fields))
    op = rng.random()
    if op < 0.3:
        field.type.CopyFrom(schema_pb2.FieldType(atomic_type=rng.choice(
            list(schema_pb2.AtomicType.values()))))
    elif op < 0.5:
        field.type.CopyFrom(schema_pb2.FieldType(logical_type=schema_pb2.LogicalType(
            urn=rng.choice(["beam:logical_type:python_callable:v1",
                            "beam:logical:pythonsdk_any:v1",
                            "beam:logical_type:micros_instant:v1"]),
            representation=schema_pb2.FieldType(atomic_type=schema_pb2.STRING))))
    elif op < 0.65:
        field.name = rng.choice(["fn", "spec", "features_field", "", "Spec"])
    elif op < 0.8:
        config.schema.encoding_positions_set = True
        for f in config.schema.fields:
            f.encoding_position = rng.randint(-1, 4)
    else:
        field.type.nullable = not field.type.nullable
    return config.SerializeToString()


def mutate_components(rng: random.Random, request: Any) -> None:
    comps = request.components
    op = rng.random()
    if op < 0.2:
        comps.pcollections.clear()
    elif op < 0.4 and comps.coders:
        coder = comps.coders[rng.choice(list(comps.coders))]
        coder.spec.urn = rng.choice(["beam:coder:pickled_python:v1", "beam:coder:row:v1",
                                     "beam:coders:javasdk:0.1", "beam:coder:bytes:v1"])
        coder.spec.payload = rng.randbytes(rng.randint(0, 64))
    elif op < 0.55:
        comps.transforms.clear()
    elif op < 0.7:
        for ws in comps.windowing_strategies.values():
            ws.window_fn.urn = rng.choice(["beam:window_fn:pickled_python:v1",
                                           "beam:window_fn:fixed_windows:v1", "x"])
            ws.window_fn.payload = rng.randbytes(16)
    elif op < 0.85:
        request.transform.inputs["second"] = "nonexistent"
    else:
        request.pipeline_options.fields["beam:option:environment_type:v1"].string_value = \
            "LOOPBACK"
        request.pipeline_options.fields["beam:option:environment_config:v1"].string_value = \
            "localhost:1"


def make_case(rng: random.Random, bases: dict[str, Any], specs: dict[str, dict]) -> Any:
    urn = rng.choice(list(bases))
    request = copy.deepcopy(bases[urn])
    kind = rng.random()
    if kind < 0.35:
        request.transform.spec.payload = encode_payload(
            json.dumps(mutate_spec(rng, specs[urn])))
    elif kind < 0.45:
        text = json.dumps(specs[urn])
        cut = rng.randrange(len(text))
        request.transform.spec.payload = encode_payload(
            text[:cut] + rng.choice(["", "NaN", "}", "\"", "\\u", "[" * 5000]) + text[cut:])
    elif kind < 0.6:
        request.transform.spec.payload = mutate_bytes(rng, request.transform.spec.payload)
    elif kind < 0.7:
        request.transform.spec.payload = mutate_schema(rng, request.transform.spec.payload)
    elif kind < 0.8:
        request.transform.spec.urn = rng.choice(URNS)
    elif kind < 0.93:
        mutate_components(rng, request)
    else:
        try:
            return beam_expansion_api_pb2.ExpansionRequest.FromString(
                mutate_bytes(rng, request.SerializeToString()))
        except Exception:
            return beam_expansion_api_pb2.ExpansionRequest()
    return request


def test_fuzzed_requests_never_crash_the_service(models: Any) -> None:
    stack = shared_stack(models.root)
    stub = expansion_stub(stack.service_address)
    specs = base_specs(models)
    bases = {urn: build_request(urn, encode_payload(json.dumps(spec)))
             for urn, spec in specs.items()}
    for request in bases.values():  # the seeds themselves are valid
        assert_valid_expansion(stub.Expand(request, timeout=60))

    rng = random.Random(SEED)
    outcomes = {"ok": 0, "error": 0}
    start = time.monotonic()
    for i in range(CASES):
        request = make_case(rng, bases, specs)
        try:
            response = stub.Expand(request, timeout=60)
        except grpc.RpcError as exc:  # the handler raised or the process died
            pytest.fail(f"case {i}: RPC failed: {exc}")
        if response.error:
            outcomes["error"] += 1
            assert response.error.startswith("crossinfer: "), (i, response.error[:500])
            assert "Traceback" not in response.error, (i, response.error[:2000])
        else:
            outcomes["ok"] += 1
            assert_valid_expansion(response)
        assert time.monotonic() - start < TIME_BUDGET_SECS, f"over budget after {i} cases"
    assert stack.service.alive()
    assert_valid_expansion(stub.Expand(bases[AB_TEST_URN], timeout=60))
    assert outcomes["error"] > CASES // 2 and sum(outcomes.values()) == CASES, outcomes
    print(f"fuzz: {outcomes} in {time.monotonic() - start:.1f} s")
