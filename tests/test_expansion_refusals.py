"""Every refusal of the running service, over gRPC: the error names the problem,
and the service answers the next valid expansion.

Requests are sent to the real service process (``python -m crossinfer.expansion``)
with Beam's ExpansionService stub, or through the client helper inside a Python
pipeline's construction (which raises the service's message as RuntimeError).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_runner_api_pb2, external_transforms_pb2, schema_pb2

from crossinfer.expansion import ExternalInference, encode_payload
from crossinfer.expansion.urns import AB_TEST_URN, KEYED_URN, MODEL_URN, SEQUENCE_URN
from xlang_fixtures import (
    Plain,
    assert_valid_expansion,
    build_request,
    expansion_stub,
    shared_stack,
)

pytestmark = pytest.mark.slow


class Canary:
    """Unpickling this creates a file: proof that a payload was (not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def service(models: Any) -> Any:
    stack = shared_stack(models.root)
    stub = expansion_stub(stack.service_address)

    def expand(request: Any) -> Any:
        return stub.Expand(request, timeout=60)

    expand.address = stack.service_address  # type: ignore[attr-defined]
    expand.proc = stack.service  # type: ignore[attr-defined]
    return expand


def lr_node(models: Any, **changes: Any) -> dict:
    node = copy.deepcopy(json.loads((models.root / "ab.json").read_text())["node"]["arms"][0]
                         ["node"])
    node.update(changes)
    return node


def doc(node: dict) -> str:
    return json.dumps({"version": 1, "node": node})


def expect_error(service: Any, models: Any, request: Any, *fragments: str) -> str:
    response = service(request)
    assert response.error.startswith("crossinfer: "), response.error
    for fragment in fragments:
        assert fragment in response.error, response.error
    # ...and the service still answers the next valid request
    valid = build_request(MODEL_URN, encode_payload(doc(lr_node(models))))
    assert_valid_expansion(service(valid))
    assert service.proc.alive()
    return response.error


def model_request(text: str, urn: str = MODEL_URN, element_type: type = Plain, **kw: Any) -> Any:
    return build_request(urn, encode_payload(text, **kw), element_type=element_type)


# ------------------------------------------------------------------ bad specs


def test_spec_is_not_json(service: Any, models: Any) -> None:
    expect_error(service, models, model_request("{version: 1"), "payload.spec: not plain JSON")


def test_spec_with_nan_is_not_plain_json(service: Any, models: Any) -> None:
    text = doc(lr_node(models)).replace('"weight"', '"w"')[:-1] + ', "x": NaN}'
    expect_error(service, models, model_request(text), "NaN is not a JSON number")


def test_invalid_spec_names_every_field(service: Any, models: Any) -> None:
    node = {"kind": "ab_test", "name": "exp", "arms": [
        {"name": "a", "weight": -1, "node": lr_node(models)},
        {"name": "a", "node": lr_node(models, name="lr2", batching={"max_batch_size": 0})}]}
    error = expect_error(service, models, model_request(doc(node), AB_TEST_URN),
                         "node.arms[0].weight: must be a number above 0",
                         "node.arms[1].name: arm name 'a' is used twice",
                         "node.arms[1].node.batching.max_batch_size: must be an integer from 1")
    assert error.count("\n") >= 2  # one line per problem


def test_unknown_framework(service: Any, models: Any) -> None:
    expect_error(service, models, model_request(doc(lr_node(models, framework="tensorflow"))),
                 "node.framework: expected one of 'pytorch'", "got 'tensorflow'")


def test_missing_model_file(service: Any, models: Any) -> None:
    missing = str(models.root / "nope.pkl")
    expect_error(service, models, model_request(doc(lr_node(models, uri=missing, sha256=None))),
                 f"node.uri: no such file '{missing}'")


def test_class_outside_allow_list(service: Any, models: Any) -> None:
    node = {"kind": "model", "name": "evil", "framework": "pytorch", "format": "state_dict",
            "uri": str(models.root / "digits_mlp.pt"), "model_class": "os:system"}
    expect_error(service, models, model_request(doc(node)),
                 "node.model_class: 'os:system' is not in the allow-list",
                 "allowed: crossinfer.models:*")


def test_custom_handler_outside_allow_list(service: Any, models: Any) -> None:
    node = {"kind": "model", "name": "evil", "framework": "custom",
            "handler_class": "subprocess:Popen", "handler_params": {"args": ["id"]}}
    expect_error(service, models, model_request(doc(node)),
                 "node.handler_class: 'subprocess:Popen' is not in the allow-list")


def test_model_outside_model_roots(service: Any, models: Any,
                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "digits_lr.pkl"
    shutil.copy(models.root / "digits_lr.pkl", elsewhere)
    expect_error(service, models, model_request(doc(lr_node(models, uri=str(elsewhere)))),
                 "node.uri:", "is outside the allowed model roots", str(models.root))


def test_path_traversal_out_of_model_root(service: Any, models: Any) -> None:
    sneaky = str(models.root / ".." / ".." / "etc" / "passwd")
    expect_error(service, models, model_request(doc(lr_node(models, uri=sneaky))),
                 "is outside the allowed model roots")


def test_sha256_mismatch(service: Any, models: Any) -> None:
    wrong = "0" * 64
    expect_error(service, models, model_request(doc(lr_node(models, sha256=wrong))),
                 "node.sha256: the file", f"but the spec pins {wrong}")


def test_urn_and_spec_kind_disagree(service: Any, models: Any) -> None:
    text = (models.root / "ab.json").read_text()
    expect_error(service, models, model_request(text, SEQUENCE_URN),
                 f"{SEQUENCE_URN} expands a 'sequence' spec, but the root node is 'ab_test'",
                 f"use {AB_TEST_URN}")


# ------------------------------------------------------------------ bad inputs / payloads


def test_input_without_features_field(service: Any, models: Any) -> None:
    expect_error(service, models,
                 model_request(doc(lr_node(models)), features_field="pixels"),
                 "features_field: the input schema has no field 'pixels'",
                 "fields: id, key, features")


def test_input_features_not_numeric(service: Any, models: Any) -> None:
    expect_error(service, models,
                 model_request(doc(lr_node(models)), features_field="key"),
                 "features_field: input field 'key' must be an ARRAY", "got STRING")


def test_keyed_spec_without_key_field(service: Any, models: Any) -> None:
    text = (models.root / "keyed.json").read_text()
    expect_error(service, models, model_request(text, KEYED_URN, key_field="tenant"),
                 "key_field: the spec routes or splits by key",
                 "no field 'tenant'")


def _payload(fields: list[tuple[str, schema_pb2.FieldType]], values: bytes) -> bytes:
    schema = schema_pb2.Schema(id="fuzzy", fields=[
        schema_pb2.Field(name=n, type=t) for n, t in fields])
    return external_transforms_pb2.ExternalConfigurationPayload(
        schema=schema, payload=values).SerializeToString()


STRING = schema_pb2.FieldType(atomic_type=schema_pb2.STRING)


def test_unknown_payload_field(service: Any, models: Any) -> None:
    from apache_beam.coders import RowCoder
    from apache_beam.typehints.schemas import named_fields_to_schema

    schema = named_fields_to_schema([("spec", str), ("fn", str)])
    payload = external_transforms_pb2.ExternalConfigurationPayload(
        schema=schema, payload=RowCoder(schema).encode(
            beam.Row(spec=doc(lr_node(models)), fn="lambda x: x"))).SerializeToString()
    expect_error(service, models, build_request(MODEL_URN, payload),
                 "payload: unknown field(s) 'fn'", "only spec, features_field, key_field")


def test_code_bearing_payload_field_is_refused_before_decoding(
        service: Any, models: Any, tmp_path: Path) -> None:
    canary = tmp_path / "unpickled"
    callable_type = schema_pb2.FieldType(logical_type=schema_pb2.LogicalType(
        urn="beam:logical_type:python_callable:v1", representation=STRING))
    payload = _payload([("spec", callable_type)], b"\x01\x00" + b"\x10__import__('os')")
    expect_error(service, models, build_request(MODEL_URN, payload),
                 "payload.spec: must be a STRING, got logical type "
                 "'beam:logical_type:python_callable:v1'")
    # pickled bytes where the Row should be: decoded as a string at most, never unpickled
    pickled = _payload([("spec", STRING)], pickler.dumps(Canary(canary)))
    expect_error(service, models, build_request(MODEL_URN, pickled), "payload")
    assert not canary.exists()


def test_payload_is_not_a_configuration_payload(service: Any, models: Any) -> None:
    expect_error(service, models, build_request(MODEL_URN, b"\xff\xff\xff"),
                 "payload: not an ExternalConfigurationPayload")


# ------------------------------------------------------------------ URNs and components


def test_unknown_urn(service: Any, models: Any) -> None:
    expect_error(service, models,
                 build_request("beam:transform:crossinfer:model:v2",
                               encode_payload(doc(lr_node(models)))),
                 "transform.spec.urn: 'beam:transform:crossinfer:model:v2' is not a crossinfer "
                 "transform", "expands only beam:transform:crossinfer:model:v1")


def test_fully_qualified_named_transform_is_not_exposed(service: Any, models: Any) -> None:
    from apache_beam.transforms.external import ImplicitSchemaPayloadBuilder

    payload = ImplicitSchemaPayloadBuilder(
        {"constructor": "subprocess.check_output", "args": {"args": ["id"]}}).payload()
    expect_error(service, models,
                 build_request("beam:transforms:python:fully_qualified_named", payload),
                 "fully-qualified-name transform is not exposed")


def test_pickled_transform_urn_is_refused(service: Any, models: Any, tmp_path: Path) -> None:
    canary = tmp_path / "unpickled"
    request = build_request(python_urns.PICKLED_TRANSFORM, pickler.dumps(Canary(canary)))
    expect_error(service, models, request, "pickled or Python-source transforms are refused")
    assert not canary.exists()


def test_pickled_producer_in_components_is_never_unpickled(
        service: Any, models: Any, tmp_path: Path) -> None:
    """Beam's stock servicer unpickles every transform in the request's components;
    this one replaces them with inert Impulse stubs, so the expansion succeeds and
    the canary is never created."""
    canary = tmp_path / "unpickled"
    request = build_request(MODEL_URN, encode_payload(doc(lr_node(models))))
    producer = request.components.transforms["IMPULSE_input"]
    producer.spec.urn = python_urns.PICKLED_TRANSFORM
    producer.spec.payload = pickler.dumps(Canary(canary))
    assert_valid_expansion(service(request))
    assert not canary.exists()


def test_pickled_input_coder_is_refused(service: Any, models: Any, tmp_path: Path) -> None:
    canary = tmp_path / "unpickled"
    request = build_request(MODEL_URN, encode_payload(doc(lr_node(models))))
    pcoll = next(iter(request.components.pcollections.values()))
    request.components.coders["evil"].CopyFrom(beam_runner_api_pb2.Coder(
        spec=beam_runner_api_pb2.FunctionSpec(urn=python_urns.PICKLED_CODER,
                                              payload=pickler.dumps(Canary(canary)))))
    pcoll.coder_id = "evil"
    expect_error(service, models, request,
                 "input: the input PCollection must have a schema (coder beam:coder:row:v1)",
                 "got 'beam:coder:pickled_python:v1'")
    assert not canary.exists()


def test_pickled_window_fn_is_refused(service: Any, models: Any, tmp_path: Path) -> None:
    canary = tmp_path / "unpickled"
    request = build_request(MODEL_URN, encode_payload(doc(lr_node(models))))
    pcoll = next(iter(request.components.pcollections.values()))
    strategy = request.components.windowing_strategies[pcoll.windowing_strategy_id]
    strategy.window_fn.urn = python_urns.PICKLED_WINDOWFN
    strategy.window_fn.payload = pickler.dumps(Canary(canary))
    expect_error(service, models, request,
                 "input: window function 'beam:window_fn:pickled_python:v1' is refused")
    assert not canary.exists()


def test_no_input(service: Any, models: Any) -> None:
    request = build_request(MODEL_URN, encode_payload(doc(lr_node(models))))
    request.transform.inputs.clear()
    expect_error(service, models, request, "takes exactly one input PCollection, got 0")


def test_client_helper_raises_the_service_message(service: Any, models: Any) -> None:
    """What a Python pipeline author sees: a RuntimeError at construction."""
    pipeline = beam.Pipeline(options=PipelineOptions([]))
    rows = pipeline | beam.Create([]).with_output_types(Plain)
    bad = lr_node(models, uri=str(models.root / "gone.pkl"), sha256=None)
    with pytest.raises(RuntimeError, match=r"crossinfer: invalid inference spec: node\.uri: "
                                           r"no such file"):
        _ = rows | ExternalInference({"version": 1, "node": bad}, service.address)
    out = rows | "ok" >> ExternalInference({"version": 1, "node": lr_node(models)},
                                           service.address)
    assert set(out._fields) == {"results", "failures"}


def test_service_log_records_outcomes(service: Any) -> None:
    log = service.proc.log_text()
    assert "outcome=error" in log and "outcome=ok" in log
    assert "urn=beam:transforms:python:fully_qualified_named outcome=error" in log

