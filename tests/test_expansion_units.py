"""Unit tests of the expansion service's parts, in-process (no child processes)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.coders import RowCoder
from apache_beam.internal import pickler
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import (
    beam_runner_api_pb2,
    external_transforms_pb2,
    schema_pb2,
)
from apache_beam.runners.portability.expansion_service import ExpansionServiceServicer
from apache_beam.transforms import environments as beam_env
from apache_beam.typehints.schemas import named_fields_to_schema, named_tuple_to_schema

from crossinfer.expansion import client, environments, payload, schemas, security, service
from crossinfer.expansion.servicer import CrossinferExpansionServicer, needs_key
from crossinfer.expansion.urns import (
    AB_TEST_URN,
    BY_URN,
    KEYED_URN,
    MODEL_URN,
    SEQUENCE_URN,
    urn_for_node,
)
from crossinfer.policy import BUILTIN_CLASSES, LoadPolicy
from crossinfer.spec import load_spec
from xlang_fixtures import Digit, Plain, assert_valid_expansion, build_request, expansion_stub

# ------------------------------------------------------------------ payload


def test_payload_round_trip_and_defaults() -> None:
    data = payload.encode_payload('{"version": 1}', None, "user")
    decoded = payload.decode_payload(data)
    assert decoded.spec == {"version": 1}
    assert (decoded.features_field, decoded.key_field) == ("features", "user")
    assert decoded.key_field_given
    config = external_transforms_pb2.ExternalConfigurationPayload.FromString(data)
    assert [(f.name, f.type.nullable) for f in config.schema.fields] == [
        ("spec", False), ("features_field", True), ("key_field", True)]


def test_payload_accepts_a_subset_of_fields_in_any_order() -> None:
    schema = named_fields_to_schema([("key_field", str), ("spec", str)])
    data = external_transforms_pb2.ExternalConfigurationPayload(
        schema=schema, payload=RowCoder(schema).encode(beam.Row(key_field="k", spec="{}"))
    ).SerializeToString()
    decoded = payload.decode_payload(data)
    assert (decoded.spec, decoded.key_field, decoded.features_field) == ({}, "k", "features")


def _raw(fields: list[tuple[str, Any]], row: Any) -> bytes:
    schema = named_fields_to_schema(fields)
    return external_transforms_pb2.ExternalConfigurationPayload(
        schema=schema, payload=RowCoder(schema).encode(row)).SerializeToString()


@pytest.mark.parametrize(("data", "message"), [
    (_raw([("spec", str), ("fn", str)], beam.Row(spec="{}", fn="x")),
     "payload: unknown field(s) 'fn'"),
    (_raw([("features_field", str)], beam.Row(features_field="f")), "payload.spec: is required"),
    (_raw([("spec", int)], beam.Row(spec=1)), "payload.spec: must be a STRING, got INT64"),
    (_raw([("spec", str), ("key_field", str)], beam.Row(spec="{}", key_field=" k")),
     "payload.key_field: ' k' is not a field name"),
    (b"\x0a\xff", "payload: not an ExternalConfigurationPayload"),
])
def test_payload_refusals(data: bytes, message: str) -> None:
    with pytest.raises(payload.PayloadError, match=None) as err:
        payload.decode_payload(data)
    assert message in str(err.value)


@pytest.mark.parametrize(("text", "message"), [
    ('{"a": NaN}', "NaN is not a JSON number"),
    ('{"a": Infinity}', "Infinity is not a JSON number"),
    ('{"a": 1, "a": 2}', "duplicate key 'a'"),
    ("[1]", "expected a JSON object"),
    ("[" * 100000, "nested too deeply"),
    ('{"a":' * 70 + "1" + "}" * 70, "nested deeper than 32 levels"),
    (json.dumps({"x": "y" * (1 << 20)}), "at most 262144 are allowed"),
    ("{'a': 1}", "not plain JSON"),
])
def test_spec_text_must_be_plain_json(text: str, message: str) -> None:
    with pytest.raises(payload.PayloadError) as err:
        payload.parse_spec_json(text)
    assert message in str(err.value)


def test_payload_logical_type_is_refused_before_decoding() -> None:
    field_type = schema_pb2.FieldType(logical_type=schema_pb2.LogicalType(
        urn="beam:logical_type:python_callable:v1",
        representation=schema_pb2.FieldType(atomic_type=schema_pb2.STRING)))
    config = external_transforms_pb2.ExternalConfigurationPayload(
        schema=schema_pb2.Schema(fields=[schema_pb2.Field(name="spec", type=field_type)]),
        payload=b"\x01\x00\x1a__import__('os').system('x')")
    with pytest.raises(payload.PayloadError, match="logical type"):
        payload.decode_payload(config.SerializeToString())


# ------------------------------------------------------------------ schemas


def test_results_schema_is_input_plus_outputs_with_outputs_winning() -> None:
    schema = named_fields_to_schema([("id", int), ("model", str), ("features", list[float])])
    results = schemas.results_schema(schema)
    assert [f.name for f in results.fields] == ["id", "features", "model", "path", "inference",
                                                "label", "score", "labels", "scores"]
    assert schemas.describe(results.fields[4].type) == "ARRAY<DOUBLE>"
    assert results.fields[5].type.nullable and not results.fields[2].type.nullable
    # content-derived UUIDs (Beam Java parses schema ids as UUIDs): one type per
    # input schema, reused
    assert schemas.results_schema(schema).id == results.id
    assert str(uuid.UUID(results.id)) == results.id


def test_failures_schema_nests_the_input_row() -> None:
    schema = named_tuple_to_schema(Plain)
    failures = schemas.failures_schema(schema)
    assert [f.name for f in failures.fields] == ["element", "node", "error"]
    assert failures.fields[0].type.row_type.schema == schema
    results_type, failures_type = schemas.output_types(schema)
    # the nested type is the one Beam resolves for the input schema id
    assert failures_type.__annotations__["element"]._fields == Plain._fields
    assert "inference" in results_type._fields


@pytest.mark.parametrize(("fields", "features", "key", "needs", "message"), [
    ([("x", list[float])], "features", "key", False, "has no field 'features' (fields: x)"),
    ([("features", str)], "features", "key", False, "must be an ARRAY (or ITERABLE)"),
    ([("features", list[str])], "features", "key", False, "got ARRAY<STRING>"),
    ([("features", int)], "features", "key", False, "or BYTES of packed float32 values"),
    ([("features", list[float])], "features", "key", True, "key_field: the spec routes"),
    ([("features", list[float]), ("key", int)], "features", "key", True,
     "input field 'key' must be a STRING, got INT64"),
])
def test_input_schema_refusals(fields: list, features: str, key: str, needs: bool,
                               message: str) -> None:
    with pytest.raises(schemas.InputSchemaError) as err:
        schemas.check_input_schema(named_fields_to_schema(fields), features, key, needs)
    assert message in str(err.value)


@pytest.mark.parametrize("name", ["_id", "class", "user-id", "2x"])
def test_input_field_names_must_suit_python_rows(name: str) -> None:
    nested = schema_pb2.Schema(fields=[schema_pb2.Field(
        name=name, type=schema_pb2.FieldType(atomic_type=schema_pb2.INT64))])
    schema = named_fields_to_schema([("features", list[float])])
    schema.fields.add(name="meta", type=schema_pb2.FieldType(
        row_type=schema_pb2.RowType(schema=nested)))
    with pytest.raises(schemas.InputSchemaError) as err:
        schemas.check_input_schema(schema, "features", "key", key_required=False)
    assert f"input schema field 'meta.{name}': Python workers need field names" in str(err.value)


def test_input_schema_accepts_numeric_arrays_and_iterables() -> None:
    for element in (schema_pb2.INT32, schema_pb2.FLOAT, schema_pb2.DOUBLE, schema_pb2.INT64):
        for container in ("array_type", "iterable_type"):
            field_type = schema_pb2.FieldType(nullable=True, **{
                container: {"element_type": schema_pb2.FieldType(atomic_type=element)}})
            schema = schema_pb2.Schema(fields=[schema_pb2.Field(name="f", type=field_type)])
            schemas.check_input_schema(schema, "f", "key", key_required=False)
    packed = schema_pb2.FieldType(atomic_type=schema_pb2.BYTES)  # float32, little-endian
    schema = schema_pb2.Schema(fields=[schema_pb2.Field(name="f", type=packed)])
    schemas.check_input_schema(schema, "f", "key", key_required=False)


def test_input_schema_with_pickled_any_field_is_refused() -> None:
    schema = named_fields_to_schema([("features", list[float]), ("blob", Any)])
    with pytest.raises(schemas.InputSchemaError, match="pythonsdk_any"):
        schemas.check_input_schema(schema, "features", "key", key_required=False)


def test_a_code_logical_type_hidden_in_a_logical_types_argument_is_refused() -> None:
    """A logical type's argument type is a type too: the check walks into it
    (one walk, registry.contained_types, for every pass over a client's types)."""
    callable_type = schema_pb2.FieldType(logical_type=schema_pb2.LogicalType(
        urn="beam:logical_type:python_callable:v1",
        representation=schema_pb2.FieldType(atomic_type=schema_pb2.STRING)))
    outer = schema_pb2.FieldType(logical_type=schema_pb2.LogicalType(
        urn="beam:logical_type:fixed_bytes:v1", argument_type=callable_type,
        representation=schema_pb2.FieldType(atomic_type=schema_pb2.BYTES)))
    schema = schema_pb2.Schema(fields=[
        schema_pb2.Field(name="features", type=schema_pb2.FieldType(
            array_type=schema_pb2.ArrayType(element_type=schema_pb2.FieldType(
                atomic_type=schema_pb2.FLOAT)))),
        schema_pb2.Field(name="tag", type=outer)])
    with pytest.raises(schemas.InputSchemaError, match="python_callable"):
        schemas.check_input_schema(schema, "features", "key", key_required=False)


def test_client_schema_ids_are_replaced_by_content_ids() -> None:
    """Beam reuses a registered id whatever its fields: no id a client chose is kept
    (nested ones included), and the same fields always get the same id."""
    from crossinfer.expansion.registry import with_content_ids

    schema = named_tuple_to_schema(Plain)
    nested = schema_pb2.Schema(id=schema.id, fields=list(schema.fields)[:1])
    schema.fields.add(name="inner", type=schema_pb2.FieldType(
        nullable=True, row_type=schema_pb2.RowType(schema=nested)))
    once, twice = with_content_ids(schema), with_content_ids(schema)
    inner = once.fields[-1].type.row_type.schema
    assert once == twice and once.id != schema.id and inner.id not in (schema.id, once.id)
    assert [f.name for f in inner.fields] == [schema.fields[0].name]
    assert str(uuid.UUID(once.id)) == once.id


# ------------------------------------------------------------------ security


class Canary:
    """Unpickling this creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_sanitize_keeps_only_what_expansion_needs() -> None:
    request = build_request(MODEL_URN, b"payload", element_type=Digit)
    request.components.transforms["extra"].CopyFrom(beam_runner_api_pb2.PTransform(
        unique_name="extra", spec=beam_runner_api_pb2.FunctionSpec(
            urn=python_urns.PICKLED_TRANSFORM, payload=b"evil")))
    request.pipeline_options.fields["beam:option:environment_type:v1"].string_value = "LOOPBACK"
    request.pipeline_options.fields["beam:option:streaming:v1"].bool_value = True
    request.output_coder_requests["results"] = "whatever"
    clean = security.sanitize(request)
    comps = clean.request.components
    assert list(comps.transforms) == ["IMPULSE_input"]
    assert comps.transforms["IMPULSE_input"].spec.urn == common_urns.primitives.IMPULSE.urn
    assert not comps.transforms["IMPULSE_input"].spec.payload
    assert set(clean.request.pipeline_options.fields) == {"beam:option:streaming:v1"}
    assert not clean.request.output_coder_requests
    assert [f.name for f in clean.input_schema.fields] == list(Digit._fields)


def test_stock_beam_servicer_unpickles_components_but_ours_does_not(tmp_path: Path,
                                                                    models: Any) -> None:
    """Why sanitize exists: Beam's servicer runs pickled code from any request."""
    spec = json.loads((models.root / "ab.json").read_text())
    request = build_request(AB_TEST_URN, payload.encode_payload(json.dumps(spec)))
    producer = request.components.transforms["IMPULSE_input"]
    producer.spec.urn = python_urns.PICKLED_TRANSFORM

    stock_canary = tmp_path / "stock"
    producer.spec.payload = pickler.dumps(Canary(stock_canary))
    ExpansionServiceServicer().Expand(request)
    assert stock_canary.exists()  # arbitrary code ran in the service

    ours_canary = tmp_path / "ours"
    producer.spec.payload = pickler.dumps(Canary(ours_canary))
    assert_valid_expansion(servicer_for(models).Expand(request))
    assert not ours_canary.exists()


def test_sanitize_refuses_pickled_window_coder() -> None:
    request = build_request(MODEL_URN, b"")
    pcoll = next(iter(request.components.pcollections.values()))
    strategy = request.components.windowing_strategies[pcoll.windowing_strategy_id]
    request.components.coders[strategy.window_coder_id].spec.urn = python_urns.PICKLED_CODER
    with pytest.raises(security.RequestRefused, match="window coder has coder"):
        security.sanitize(request)


def test_sanitize_refuses_two_inputs() -> None:
    request = build_request(MODEL_URN, b"")
    request.transform.inputs["other"] = "x"
    with pytest.raises(security.RequestRefused, match="exactly one input"):
        security.sanitize(request)


# ------------------------------------------------------------------ environments


def test_environments_from_flags() -> None:
    ext = environments.build_environment("external", "localhost:5000")
    assert isinstance(ext, beam_env.ExternalEnvironment) and ext.url == "localhost:5000"
    loop = environments.build_environment("loopback", None, loopback_address="127.0.0.1:9")
    assert loop.url == "127.0.0.1:9"
    proc = environments.build_environment("process", '{"command": "/boot", "env": {"A": "1"}}')
    assert (proc.command, proc.env) == ("/boot", {"A": "1"})
    assert environments.build_environment("process", "/opt/boot").command == "/opt/boot"
    docker = environments.build_environment("docker", "me/crossinfer:1")
    assert docker.container_image == "me/crossinfer:1"
    proto = ext.to_runner_api(None)
    assert proto.urn == common_urns.environments.EXTERNAL.urn
    assert common_urns.coders.ROW.urn in proto.capabilities


@pytest.mark.parametrize(("kind", "config", "message"), [
    ("external", None, "needs --environment-config HOST:PORT"),
    ("external", "http://x", "HOST:PORT"),
    ("external", "localhost:70000", "port 0..65535"),
    ("external", "localhost:1\n", "HOST:PORT"),
    ("process", None, "needs --environment-config COMMAND"),
    ("process", "{not json", "expected a command"),
    ("docker", None, "IMAGE"),
])
def test_environment_flag_errors(kind: str, config: str | None, message: str) -> None:
    with pytest.raises(environments.EnvironmentConfigError, match=None) as err:
        environments.build_environment(kind, config)
    assert message in str(err.value)


# ------------------------------------------------------------------ CLI


def test_help_names_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        service.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--port", "--bind", "--environment", "--environment-config",
                 "--start-worker-pool", "--model-root", "--allow-class", "--require-sha256",
                 "loopback", "external", "process", "docker", "current working directory"):
        assert flag in text


def test_flags_reach_the_policy_the_limits_and_the_admission(models: Any) -> None:
    """--allow-code-format, --max-*, and the admission flags, through a running service."""
    lr = json.loads((models.root / "ab.json").read_text())["node"]["arms"][0]["node"]
    pickled = {**lr, "format": "pickle", "uri": str(models.root / "digits_lr.pkl"),
               "sha256": None}
    three = {"kind": "ab_test", "name": "ab", "arms": [
        {"name": f"a{i}", "weight": 1, "node": {**lr, "name": f"m{i}"}} for i in range(3)]}

    def expand(address: str, node: dict, urn: str = MODEL_URN) -> Any:
        text = json.dumps({"version": 1, "node": node})
        return expansion_stub(address).Expand(build_request(urn, payload.encode_payload(text)),
                                              timeout=60)

    base = ["--port", "0", "--model-root", str(models.root)]
    strict = service.start(service.build_parser().parse_args([*base, "--max-arms", "2"]))
    opted = service.start(service.build_parser().parse_args(
        [*base, "--allow-code-format", "pickle", "--max-concurrent-expansions", "3",
         "--max-queued-expansions", "5", "--expansion-timeout-secs", "7.5"]))
    try:
        assert "node.format: format 'pickle' can run code" in expand(strict.address,
                                                                      pickled).error
        assert_valid_expansion(expand(opted.address, pickled))
        assert "node.arms: has 3 arms; at most 2 are allowed (--max-arms)" in expand(
            strict.address, three, AB_TEST_URN).error
        assert_valid_expansion(expand(opted.address, three, AB_TEST_URN))
        assert (opted.admission.timeout_secs, opted.admission.capacity) == (7.5, 4 + 5 + 3 + 5)
    finally:
        strict.stop(0)
        opted.stop(0)


def test_the_worker_pool_command_checks_its_port(capsys: pytest.CaptureFixture[str]) -> None:
    from crossinfer.expansion import worker_pool

    with pytest.raises(SystemExit) as exit_:
        worker_pool.main(["--port", "70000"])
    assert exit_.value.code == 2
    assert "argument --port: expected 0..65535, got 70000" in capsys.readouterr().err


def test_loopback_workers_with_a_public_bind_need_the_flag() -> None:
    running = service.start(service.build_parser().parse_args(
        ["--port", "0", "--bind", "0.0.0.0", "--allow-loopback-with-bind"]))
    try:
        assert running.address.startswith("0.0.0.0:")
        # the worker pool stays on loopback, on a port of its own
        assert running.loopback_address.startswith("127.0.0.1:")
        assert running.loopback_address.rsplit(":", 1)[1] != running.address.rsplit(":", 1)[1]
    finally:
        running.stop(0)


def test_policy_defaults_to_cwd_and_builtin_classes(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    policy = service.build_policy([], [], False)
    assert policy.model_roots == (str(tmp_path),)
    assert policy.allowed_classes == BUILTIN_CLASSES
    policy = service.build_policy(["models", "gs://b/m"], ["my.models:*"], True)
    assert policy.model_roots == (str(tmp_path / "models"), "gs://b/m")
    assert policy.allowed_classes == (*BUILTIN_CLASSES, "my.models:*")
    assert policy.require_sha256


@pytest.mark.parametrize("pattern", ["*", "*:*", "os", ":system"])
def test_allow_class_wildcards_over_modules_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="name the module"):
        service.build_policy([], [pattern], False)


@pytest.mark.parametrize(("flags", "message"), [
    (["--environment", "external"], "needs --environment-config HOST:PORT"),
    (["--environment-config", "localhost:1"], "not used with --environment loopback"),
    (["--start-worker-pool", "--environment", "docker"], "drop --environment docker"),
    (["--allow-class", "*"], "name the module"),
    (["--allow-class", "crossinfer.models:torch.os"], "name the module"),
    (["--port", "70000"], "argument --port: expected 0..65535, got 70000"),
    (["--port", "-1"], "expected 0..65535, got -1"),
    (["--model-root", "/no/such/dir"], "'/no/such/dir' is not an existing directory"),
    (["--model-root", "gs:///"], "(a bucket, then a path"),
    (["--model-root", "gs:///models"], "(a bucket, then a path"),
    (["--model-root", "gs://b/../x"], "without '.' or '..' segments"),
    (["--max-nodes", "0"], "argument --max-nodes: expected above 0"),
    (["--max-spec-bytes", "lots"], "argument --max-spec-bytes: expected an integer"),
    (["--max-queued-expansions", "-1"], "expected 0..1024"),
    (["--expansion-timeout-secs", "nan"], "expected above 0 and at most 3,600"),
    (["--allow-code-format", "skops"], "invalid choice: 'skops'"),
    (["--bind", "0.0.0.0"], "--bind 0.0.0.0 with --environment loopback"),
    (["--bind", "0.0.0.0", "--start-worker-pool"], "--bind 0.0.0.0 with --start-worker-pool"),
    (["--max-spec-bytes", "0"], "expected above 0 and at most 1,073,741,824, got 0"),
    (["--max-input-fields", "100001"], "at most 100,000"),
    (["--receive-timeout-secs", "0"], "--receive-timeout-secs: expected above 0"),
])
def test_bad_flags_exit_with_status_2(flags: list[str], message: str,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "configure_logging", lambda level: None)  # keep pytest's
    try:  # flag types fail in argparse (SystemExit), flag combinations in start()
        code = service.main(["--port", "0", *flags])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_busy_port_is_an_error_not_shared(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # gRPC's default SO_REUSEPORT would let a second service share the port
    monkeypatch.setattr(service, "configure_logging", lambda level: None)
    first = service.start(service.build_parser().parse_args(["--port", "0"]))
    try:
        port = first.address.rsplit(":", 1)[1]
        assert service.main(["--port", port]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    finally:
        first.stop()


# ------------------------------------------------------------------ servicer, in-process


def servicer_for(models: Any, **policy: Any) -> CrossinferExpansionServicer:
    env = environments.build_environment("external", "localhost:1")
    return CrossinferExpansionServicer(
        LoadPolicy(model_roots=(str(models.root),), **policy), env)


@pytest.mark.parametrize("name", ["ab", "sequence", "keyed"])
def test_in_process_expansion_of_each_pattern(models: Any, name: str) -> None:
    text = (models.root / f"{name}.json").read_text()
    urn = urn_for_node(load_spec(text).node)
    response = servicer_for(models).Expand(build_request(urn, payload.encode_payload(text)))
    assert_valid_expansion(response)
    envs = {e.urn for e in response.components.environments.values()}
    assert common_urns.environments.EXTERNAL.urn in envs


def test_model_urn_expands_a_single_model(models: Any) -> None:
    node = json.loads((models.root / "ab.json").read_text())["node"]["arms"][1]["node"]
    text = json.dumps({"version": 1, "node": node})
    assert client.urn_for_spec(text) == MODEL_URN
    assert_valid_expansion(servicer_for(models).Expand(
        build_request(MODEL_URN, payload.encode_payload(text))))


def test_require_sha256_refuses_unpinned_models(models: Any) -> None:
    text = (models.root / "ab.json").read_text()  # the MLP arm has no pin
    response = servicer_for(models, require_sha256=True).Expand(
        build_request(AB_TEST_URN, payload.encode_payload(text)))
    assert "node.arms[1].node.sha256: is required" in response.error


def test_expansion_errors_are_answered_not_raised(models: Any) -> None:
    servicer = servicer_for(models)
    for request in (build_request("", b""), build_request(KEYED_URN, b"\x00"),
                    build_request(SEQUENCE_URN, payload.encode_payload("{}"))):
        response = servicer.Expand(request)
        assert response.error.startswith("crossinfer: ")


def test_needs_key(models: Any) -> None:
    spec = {name: load_spec((models.root / f"{name}.json").read_text())
            for name in ("ab", "sequence", "keyed")}
    assert needs_key(spec["ab"]) and needs_key(spec["keyed"]) and not needs_key(spec["sequence"])


# ------------------------------------------------------------------ client helper


def test_client_picks_the_urn_from_the_spec(models: Any) -> None:
    for name in ("ab", "sequence", "keyed"):
        text = (models.root / f"{name}.json").read_text()
        assert client.urn_for_spec(text) == urn_for_node(load_spec(text).node)
    assert client.urn_for_spec("not json") == MODEL_URN
    assert set(BY_URN) == {MODEL_URN, AB_TEST_URN, SEQUENCE_URN, KEYED_URN}


def test_client_spec_forms(models: Any) -> None:
    spec = load_spec((models.root / "sequence.json").read_text())
    as_text = client.spec_json(spec)
    assert json.loads(as_text) == json.loads(client.spec_json(spec.node))
    assert json.loads(client.spec_json(json.loads(as_text))) == json.loads(as_text)
    with pytest.raises(ValueError):
        client.spec_json({"version": 1, "x": float("nan")})


# ------------------------------------------------------------------ docs agree with the code


DOCS = Path(__file__).parent.parent / "docs"


def test_the_request_limits_table_is_in_the_docs() -> None:
    """docs/security.md carries ``python -m crossinfer.expansion.limits``'s output verbatim."""
    from crossinfer.expansion.limits import markdown_table

    assert markdown_table() in (DOCS / "security.md").read_text()


def test_the_wire_contract_states_the_services_sizes() -> None:
    """The message sizes and spec limits docs/wire-contract.md states are the service's."""
    from crossinfer.expansion.limits import RequestLimits, fixed
    from crossinfer.spec.limits import SpecLimits

    text = " ".join((DOCS / "wire-contract.md").read_text().split())
    limits = SpecLimits()
    for figure in (f"{service.max_request_bytes(limits):,} bytes",
                   f"{service.MAX_SEND_BYTES >> 20} MiB",
                   f"default {limits.max_spec_bytes:,} bytes",
                   f"levels (default {limits.max_spec_depth})",
                   f"at most {fixed('input schema (bytes)'):,} bytes",
                   f"default {RequestLimits().max_input_fields:,}",
                   f"default {RequestLimits().max_input_row_nesting})",
                   f"at most {payload.MAX_INTEGER_DIGITS} digits"):
        assert figure in text, figure
    assert "16 MiB" not in text and "1 MiB of UTF-8" not in text


def test_help_shows_bounds_and_no_import_noise() -> None:
    """--help states each limit flag's range, and Beam's apitools warning is gone."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "crossinfer.expansion", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "apitools" not in done.stdout + done.stderr
    text = " ".join(done.stdout.split())
    assert "1..1,073,741,824" in text and "at most 100,000" in text and "0..1024" in text
