"""Attacks on the parts of a request around the spec, on the port, and on model files
(the red-team findings after issue #14), against a real service over gRPC.

One service process (``--model-root``, ``--receive-timeout-secs 3``, Beam's
``SklearnModelHandlerNumpy`` allow-listed as a custom handler, an external
environment nobody runs). Each attack that used to work - calls that never send
their request, nested or very wide input schemas, schema ids chosen to poison
Beam's registry, an over-long transform name, ``handler_params.model_uri``, a
FIFO as a model file - is refused with a message naming its field, or answered
with a gRPC status, quickly; a marker file proves nothing ran; the service then
answers a valid request. The model-file races (a FIFO, a directory swapped for
a symlink) and ONNX external data are checked on the code the workers run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from apache_beam.portability import common_urns
from apache_beam.portability.api import (
    beam_expansion_api_pb2,
    beam_expansion_api_pb2_grpc,
    beam_runner_api_pb2,
    schema_pb2,
    standard_window_fns_pb2,
)
from google.protobuf import duration_pb2

from attack_payloads import evil_pickle, evil_skops
from crossinfer.demo import DemoModels, sha256_of
from crossinfer.expansion import encode_payload, transport
from crossinfer.expansion.environments import build_environment
from crossinfer.expansion.registry import BUDGET
from crossinfer.expansion.server import MAX_WAITING
from crossinfer.expansion.service import build_policy
from crossinfer.expansion.servicer import CrossinferExpansionServicer
from crossinfer.expansion.urns import AB_TEST_URN, KEYED_URN, MODEL_URN, REPORT_URN
from crossinfer.handlers.adapter import ModelLoadError, read_verified
from crossinfer.handlers.files import FileRefused, open_file
from crossinfer.policy import LoadPolicy
from xlang_fixtures import (
    SERVICE_READY,
    Proc,
    assert_valid_expansion,
    expansion_stub,
    service_args,
    start_process,
)

pytestmark = pytest.mark.slow

CUSTOM = "apache_beam.ml.inference.sklearn_inference:SklearnModelHandlerNumpy"
RECEIVE_TIMEOUT_SECS = 3
#: ``field.path: message`` after the service's prefix.
_FIELD = re.compile(
    r"^\s*(crossinfer: )?(invalid inference spec:\s*)?"
    r"(input|payload|node|transform\.unique_name)[\w.\[\]']*[: ]", re.M)
DOUBLE = schema_pb2.FieldType(atomic_type=schema_pb2.DOUBLE)
FEATURES = ("features", schema_pb2.FieldType(array_type=schema_pb2.ArrayType(
    element_type=DOUBLE)))


@dataclass
class Service:
    proc: Proc
    address: str
    root: Path
    outside: Path
    markers: Path
    stub: Any

    def expand(self, request: Any, timeout: float = 120) -> Any:
        return self.stub.Expand(request, timeout=timeout)

    def answers_next(self) -> float:
        """Seconds a valid one-model request took (it must expand)."""
        start = time.perf_counter()
        assert_valid_expansion(self.expand(request(lr(self.root))))
        assert self.proc.alive()
        return time.perf_counter() - start

    def nothing_ran(self) -> None:
        assert sorted(p.name for p in self.markers.iterdir()) == []


@pytest.fixture(scope="module")
def service(models: DemoModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root, outside = tmp_path_factory.mktemp("root"), tmp_path_factory.mktemp("outside")
    markers, logs = tmp_path_factory.mktemp("markers"), tmp_path_factory.mktemp("logs")
    shutil.copy(models.path("digits_lr.skops"), root / "digits_lr.skops")
    evil_pickle(outside / "evil.pkl", markers / "pickle-ran")
    proc = start_process("request_attacks", service_args(
        "--model-root", str(root), "--receive-timeout-secs", str(RECEIVE_TIMEOUT_SECS),
        "--allow-class", CUSTOM, "--environment", "external",
        "--environment-config", "127.0.0.1:9"), logs, ready_prefix=SERVICE_READY)
    try:
        address = proc.ready_line[len(SERVICE_READY):].strip()
        yield Service(proc, address, root, outside, markers, expansion_stub(address))
    finally:
        proc.stop()


# ------------------------------------------------------------------ requests


def lr(root: Path, **changes: Any) -> dict:
    node = {"kind": "model", "name": "lr", "framework": "sklearn", "format": "skops",
            "uri": str(root / "digits_lr.skops"), "method": "predict_proba",
            "preprocess": [{"op": "scale", "factor": 1 / 16}], "postprocess": [{"op": "argmax"}]}
    node.update(changes)
    return node


def schema(*fields: tuple[str, schema_pb2.FieldType], schema_id: str = "") -> schema_pb2.Schema:
    out = schema_pb2.Schema(id=schema_id or "5e2b8c1a-0000-4000-8000-000000000001")
    for name, field_type in fields:
        out.fields.add(name=name, type=field_type)
    return out


def request(node: dict | str, input_schema: schema_pb2.Schema | None = None, *,
            payload: bytes | None = None, unique_name: str = "ci",
            window: beam_runner_api_pb2.FunctionSpec | None = None,
            trigger: beam_runner_api_pb2.Trigger | None = None, urn: str = MODEL_URN
            ) -> beam_expansion_api_pb2.ExpansionRequest:
    """The request a client sends: an input PCollection of rows of ``input_schema``
    (default: ``features`` only), its coder and windowing (``trigger``: default),
    an Impulse producing it."""
    rows = input_schema if input_schema is not None else schema(FEATURES)
    text = node if isinstance(node, str) else json.dumps({"version": 1, "node": node})
    components = beam_runner_api_pb2.Components()
    components.coders["row"].CopyFrom(beam_runner_api_pb2.Coder(spec=beam_runner_api_pb2.
                                      FunctionSpec(urn=common_urns.coders.ROW.urn,
                                                   payload=rows.SerializeToString())))
    window_coder = (common_urns.coders.GLOBAL_WINDOW.urn if window is None
                    else common_urns.coders.INTERVAL_WINDOW.urn)
    components.coders["w"].CopyFrom(beam_runner_api_pb2.Coder(
        spec=beam_runner_api_pb2.FunctionSpec(urn=window_coder)))
    components.windowing_strategies["ws"].CopyFrom(beam_runner_api_pb2.WindowingStrategy(
        window_fn=window or beam_runner_api_pb2.FunctionSpec(urn=common_urns.global_windows.urn),
        window_coder_id="w", merge_status=beam_runner_api_pb2.MergeStatus.NON_MERGING,
        trigger=trigger or beam_runner_api_pb2.Trigger(
            default=beam_runner_api_pb2.Trigger.Default()),
        accumulation_mode=beam_runner_api_pb2.AccumulationMode.DISCARDING,
        output_time=beam_runner_api_pb2.OutputTime.END_OF_WINDOW,
        closing_behavior=beam_runner_api_pb2.ClosingBehavior.EMIT_IF_NONEMPTY,
        on_time_behavior=beam_runner_api_pb2.OnTimeBehavior.FIRE_ALWAYS))
    components.pcollections["in"].CopyFrom(beam_runner_api_pb2.PCollection(
        unique_name="in", coder_id="row", is_bounded=beam_runner_api_pb2.IsBounded.BOUNDED,
        windowing_strategy_id="ws"))
    components.transforms["src"].CopyFrom(beam_runner_api_pb2.PTransform(
        unique_name="src", spec=beam_runner_api_pb2.FunctionSpec(
            urn=common_urns.primitives.IMPULSE.urn), outputs={"out": "in"}))
    return beam_expansion_api_pb2.ExpansionRequest(
        components=components, namespace="ns", transform=beam_runner_api_pb2.PTransform(
            unique_name=unique_name, inputs={"input": "in"}, spec=beam_runner_api_pb2.
            FunctionSpec(urn=urn, payload=payload if payload is not None
                         else encode_payload(text))))


def refused(service: Service, req: Any, *fragments: str) -> tuple[str, float]:
    """(the error, seconds it took): refused naming its field, nothing ran, and the
    service answers the next valid request."""
    start = time.perf_counter()
    error = service.expand(req).error
    took = time.perf_counter() - start
    assert error.startswith("crossinfer: "), error or "expanded!"
    assert _FIELD.search(error), f"no field path in {error!r}"
    for bad in ("Traceback", "internal error", "duplicate argument", "set_int_max_str_digits"):
        assert bad not in error, error
    for fragment in fragments:
        assert fragment in error, error
    service.nothing_ran()
    service.answers_next()
    return error, took


def nested_rows(depth: int) -> schema_pb2.FieldType:
    """A field whose type is a row of a row of ... ``depth`` rows (a few bytes each)."""
    field_type = DOUBLE
    for level in range(depth):
        inner = schema(("a", field_type), schema_id=f"5e2b8c1a-0000-4000-8000-{level:012d}")
        field_type = schema_pb2.FieldType(row_type=schema_pb2.RowType(schema=inner))
    return field_type


# ------------------------------------------------------------------ the port


def test_calls_that_never_send_their_request_do_not_lock_out_other_clients(
        service: Service) -> None:
    """Red team #1: one connection held 41 calls without sending their request, and
    every other client got gRPC's ``Concurrent RPC limit exceeded!`` for as long as
    it liked. Now a waiting call holds no thread, at most MAX_WAITING wait (one more
    pushes out the oldest: "the service is busy"), and each waits at most
    --receive-timeout-secs."""
    release = threading.Event()

    def never() -> Iterator[bytes]:
        release.wait()
        return
        yield b""  # a generator that sends nothing

    # Each channel its own connection (gRPC would otherwise share one per target).
    idle = service.answers_next()  # the first expansion warms the service up
    idle = service.answers_next()
    channels = [grpc.insecure_channel(service.address,
                                      options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(6)]
    held = []
    try:
        for i, channel in enumerate(channels):  # 41 on one connection, then 5 x 16 more
            method = channel.stream_unary(
                "/org.apache.beam.model.expansion.v1.ExpansionService/Expand",
                request_serializer=lambda b: b, response_deserializer=lambda b: b)
            held += [method.future(never()) for _ in range(41 if i == 0 else 16)]
        time.sleep(1.0)  # the held calls are open now
        took = service.answers_next()
        print(f"a valid request took {took:.3f} s while {len(held)} calls were held "
              f"({idle:.3f} s before)")
        codes: dict[str, list[str]] = {}
        for call in held:  # every held call ends on its own, without the client
            with pytest.raises(grpc.RpcError) as info:
                call.result(timeout=RECEIVE_TIMEOUT_SECS * 8 + 60)
            codes.setdefault(info.value.code().name, []).append(info.value.details())
        # UNAVAILABLE: streams past a connection's limit, refused by HTTP/2 itself.
        assert set(codes) <= {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "UNAVAILABLE"}, codes
        assert any("the service is busy" in d for d in codes["RESOURCE_EXHAUSTED"]), codes
        assert len(held) > MAX_WAITING
        assert all("--receive-timeout-secs" in d for d in codes.get("DEADLINE_EXCEEDED", []))
        assert all("RST_STREAM" in d for d in codes.get("UNAVAILABLE", []))
        print({code: len(details) for code, details in codes.items()})
        assert "Concurrent RPC limit exceeded" not in repr(codes)
    finally:
        release.set()
        for channel in channels:
            channel.close()
    service.answers_next()


# ------------------------------------------------------------------ the input schema


def test_nested_rows_are_refused_before_beam_reads_them(service: Service) -> None:
    """Red team #2: Beam's schema code costs ~4x more per level of nested rows; a
    depth-14 request (~1.4 KB) kept the CPU busy long after its client left."""
    assert_valid_expansion(service.expand(request(lr(service.root), schema(
        ("n", nested_rows(2)), FEATURES))))  # the default allows two levels
    _, took = refused(service, request(lr(service.root), schema(
        ("n", nested_rows(14)), FEATURES)), "input: input schema field 'n.a.a'",
        "--max-input-row-nesting")
    print(f"a depth-14 request was refused in {took:.3f} s")


def test_wide_input_schemas_are_refused(service: Service) -> None:
    """Red team #6: a one-node spec over 30,000 input fields cost 12-15 s per
    expansion in the small lane."""
    wide = schema(*[(f"f{i}", DOUBLE) for i in range(30_000)], FEATURES)
    _, took = refused(service, request(lr(service.root), wide), "input: the schema of the input "
                      "coder 'row' is", "at most 262,144 are allowed")
    print(f"a 30,000-field request was refused in {took:.3f} s")
    refused(service, request(lr(service.root), schema(
        *[(f"f{i}", DOUBLE) for i in range(5_000)], FEATURES)), "--max-input-fields")
    # Below the bound, still more fields than a small request: it expands (large lane).
    assert_valid_expansion(service.expand(request(lr(service.root), schema(
        *[(f"f{i}", DOUBLE) for i in range(300)], FEATURES))))


def test_schema_ids_a_client_chooses_never_reach_beams_registry(service: Service) -> None:
    """Red team #4: rows nested under the ids crossinfer uses itself (the payload
    schema's, the batch transport's fixed ones) broke every later client."""
    from apache_beam.portability.api import external_transforms_pb2

    from crossinfer.expansion.payload import _checked_schema

    spec_text = json.dumps({"version": 1, "node": lr(service.root)})
    payload_id = _checked_schema(external_transforms_pb2.ExternalConfigurationPayload.FromString(
        encode_payload(spec_text)).schema).id  # what every crossinfer client sends
    ids = [payload_id, transport.RESULT_BATCH_SCHEMA.id, transport.FAILURE_SCHEMA.id,
           transport.BATCH_SCHEMA.id]
    bogus = [(f"n{i}", schema_pb2.FieldType(nullable=True, row_type=schema_pb2.RowType(
        schema=schema(("zz", schema_pb2.FieldType(atomic_type=schema_pb2.INT64)),
                      schema_id=sid)))) for i, sid in enumerate(ids)]
    service.expand(request(lr(service.root), schema(FEATURES, *bogus)))  # expands or not
    service.answers_next()
    # The batch transport still returns its own result schemas.
    rows = schema(FEATURES)
    batches = schema(*[(f.name, f.type) for f in transport.BATCH_SCHEMA.fields],
                     schema_id="5e2b8c1a-0000-4000-8000-0000000000bb")
    response = service.expand(request(lr(service.root), batches, payload=encode_payload(
        spec_text, input_schema=rows)))
    assert not response.error, response.error
    for tag, expected in (("results", transport.RESULT_BATCH_SCHEMA),
                          ("failures", transport.FAILURE_SCHEMA)):
        pcoll = response.components.pcollections[response.transform.outputs[tag]]
        got = schema_pb2.Schema.FromString(response.components.coders[pcoll.coder_id].spec.payload)
        assert [f.name for f in got.fields] == [f.name for f in expected.fields], tag
    service.nothing_ran()


@pytest.mark.parametrize(("fields", "fragments"), [
    ([("ﬁ", DOUBLE), ("fi", DOUBLE), FEATURES], ("input schema field 'ﬁ'", "NFKC")),
    ([("\uff46eatures", DOUBLE), FEATURES], ("input schema field '\uff46eatures'", "NFKC")),
    ([("a", DOUBLE), ("a", DOUBLE), FEATURES], ("input schema field 'a'", "used twice")),
    ([("a", schema_pb2.FieldType()), FEATURES], ("input schema field 'a'", "has no type")),
    ([("b", schema_pb2.FieldType(logical_type=schema_pb2.LogicalType(
        urn="beam:logical_type:fixed_bytes:v1",
        representation=schema_pb2.FieldType(atomic_type=schema_pb2.BYTES)))), FEATURES],
     ("input schema field 'b'",)),
], ids=["ligature", "fullwidth", "duplicate", "untyped", "fixed-bytes-without-argument"])
def test_bad_input_schemas_are_refused_naming_the_field(
        service: Service, fields: list, fragments: tuple[str, ...]) -> None:
    """Red team #11: these came back as ``SyntaxError: duplicate argument``, raw
    ValueErrors or a multi-line proto dump."""
    refused(service, request(lr(service.root), schema(*fields)), *fragments)


def _window(urn: str, payload: Any) -> beam_runner_api_pb2.FunctionSpec:
    return beam_runner_api_pb2.FunctionSpec(urn=urn, payload=payload.SerializeToString()
                                            if hasattr(payload, "SerializeToString")
                                            else payload)


@pytest.mark.parametrize("window", [
    _window(common_urns.fixed_windows.urn, standard_window_fns_pb2.FixedWindowsPayload(
        size=duration_pb2.Duration(seconds=0))),
    _window(common_urns.sliding_windows.urn, standard_window_fns_pb2.SlidingWindowsPayload(
        size=duration_pb2.Duration(seconds=10), period=duration_pb2.Duration(seconds=0))),
    _window(common_urns.fixed_windows.urn, b"\xff\xff\xff"),
], ids=["fixed-size-0", "sliding-period-0", "garbage"])
def test_bad_window_payloads_are_refused_naming_the_input(
        service: Service, window: beam_runner_api_pb2.FunctionSpec) -> None:
    """Red team #11: ``internal error while expanding: ZeroDivisionError``."""
    refused(service, request(lr(service.root), window=window), "input: the windowing strategy")


@pytest.mark.parametrize(("text", "fragments"), [
    (json.dumps({"version": 1, "node": {**{"kind": "model", "name": "lr"},
                                        "uri": "/models/\ud800.skops"}}),
     ("node.uri", "lone surrogate")),
    ('{"version": 1, "node": {"kind": "ab_test", "name": "ab", "seed": ' + "9" * 5000
     + ', "arms": []}}', ("node.seed", "an integer of 5,000 digits")),
], ids=["lone-surrogate", "5000-digit-integer"])
def test_unusual_spec_text_is_refused_naming_the_field(
        service: Service, text: str, fragments: tuple[str, ...]) -> None:
    """Red team #11: ``UnicodeEncodeError`` and ``sys.set_int_max_str_digits()``."""
    refused(service, request(text), *fragments)


def test_names_are_bounded_so_responses_cannot_be_amplified(service: Service) -> None:
    """Red team #10: the transform's name is copied into every sub-transform's name:
    a 4 MB request gave a 45 MB response."""
    refused(service, request(lr(service.root), unique_name="x" * 100_000),
            "transform.unique_name: a name or id of 100,000 characters")
    response = service.expand(request(lr(service.root), unique_name="x" * 1024))
    assert_valid_expansion(response)
    print(f"a 1,024-character name: {response.ByteSize():,} bytes of response")


# ------------------------------------------------------------------ model files


def test_handler_params_cannot_replace_the_checked_model_uri(service: Service) -> None:
    """Red team #3: ``handler_params.model_uri`` won over the checked ``uri`` (and
    without ``uri`` no root check ran): an allow-listed handler unpickled a file
    outside the model roots."""
    evil = str(service.outside / "evil.pkl")
    custom = {"kind": "model", "name": "c", "framework": "custom", "handler_class": CUSTOM}
    refused(service, request({**custom, "handler_params": {"model_uri": evil}}),
            "node.handler_params.model_uri", "is set from the node's uri")
    refused(service, request({**custom, "uri": str(service.root / "digits_lr.skops"),
                              "handler_params": {"model_uri": evil}}),
            "node.handler_params.model_uri")
    refused(service, request({**custom, "uri": evil}), "node.uri", "outside the allowed")
    # The allow-listed handler itself still expands, with a uri under the root.
    assert_valid_expansion(service.expand(request(
        {**custom, "uri": str(service.root / "digits_lr.skops")})))


def test_a_fifo_as_a_model_file_never_blocks(service: Service) -> None:
    """Red team #8: a FIFO renamed over a model file between the service's isfile()
    and open() parked a thread for ever (the workers' read too)."""
    fifo = service.root / "fifo.skops"
    os.mkfifo(fifo)
    try:
        refused(service, request(lr(service.root, uri=str(fifo))), "node.uri",
                "is not a regular file")
        start = time.perf_counter()
        with pytest.raises(FileRefused, match="not a regular file"):
            open_file(str(fifo))
        with pytest.raises(ModelLoadError, match="not a regular file"):
            read_verified(str(fifo), None, "lr")
        assert time.perf_counter() - start < 30  # it returned: a blocked open never does
    finally:
        fifo.unlink()


def test_a_directory_swapped_for_a_symlink_is_refused_after_the_check(
        tmp_path: Path, models: DemoModels) -> None:
    """Red team #9: swapping a path component between the root check and the open
    reported (service) or loaded (worker) a file outside the root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(models.path("digits_lr.skops"), root / "sub" / "m.skops")
    shutil.copy(models.path("digits_pca.skops"), outside / "m.skops")
    policy = LoadPolicy(model_roots=(str(root),))
    location = policy.resolve_location(str(root / "sub" / "m.skops"))  # checked here
    (root / "sub").rename(root / "old")
    (root / "sub").symlink_to(outside)  # ... then swapped
    secret = sha256_of(str(outside / "m.skops"))
    with pytest.raises(FileRefused, match="a directory on its path changed") as info:
        open_file(location)
    assert secret not in str(info.value)
    with pytest.raises(ModelLoadError, match="a directory on its path changed"):
        read_verified(location, None, "m")
    (root / "sub").unlink()
    (root / "old").rename(root / "sub")
    with open_file(location)[0] as f:  # the control: the same location, unswapped
        assert f.read(2) == b"PK"


def test_onnx_external_data_is_refused_wherever_it_hides(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Red team #5: a Constant node's sparse_value in external data passed the check
    (ONNX's helper skips sparse tensors) and ONNX Runtime read a file relative to
    the worker's working directory into the predictions."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from crossinfer.handlers.onnx import OnnxAdapter, session_options
    from crossinfer.spec import load_spec

    secret = b"TOPSECRET-" * 4
    (tmp_path / "secret.bin").write_bytes(secret)
    monkeypatch.chdir(tmp_path)

    def external(name: str) -> Any:
        t = TensorProto(name=name, data_type=TensorProto.UINT8, dims=[16])
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "secret.bin"), ("offset", "0"), ("length", "16")):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

    def model(kind: str) -> bytes:
        nodes, inits, sparse = [], [], []
        values = external("s_values")
        indices = helper.make_tensor("s_idx", TensorProto.INT64, [16], list(range(16)))
        if kind == "constant_sparse":
            nodes.append(helper.make_node("Constant", [], ["s"], sparse_value=helper.
                                          make_sparse_tensor(values, indices, [16])))
        elif kind == "sparse_initializer":
            sparse.append(helper.make_sparse_tensor(external("s"), indices, [16]))
        else:
            inits.append(external("s"))
        nodes += [helper.make_node("Cast", ["s"], ["y"], to=TensorProto.FLOAT)]
        graph = helper.make_graph(
            nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 64])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])],
            initializer=inits, sparse_initializer=sparse)
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                 ir_version=9).SerializeToString()

    for kind in ("constant_sparse", "sparse_initializer", "initializer"):
        path = tmp_path / f"{kind}.onnx"
        path.write_bytes(model(kind))
        spec = load_spec({"version": 1, "node": {"kind": "model", "name": kind,
                                                  "framework": "onnx", "uri": str(path)}})
        with pytest.raises(ModelLoadError, match="keeps tensors in external data files"):
            OnnxAdapter(spec.node, LoadPolicy()).load()
    # The second line of defence: the workers' session options never look in the
    # working directory (plain ONNX Runtime does read the file: the control).
    leaked = ort.InferenceSession(model("constant_sparse"),
                                  providers=["CPUExecutionProvider"]).run(
        None, {"x": np.zeros((1, 64), np.float32)})[0]
    assert bytes(leaked.astype(np.uint8)) == secret[:16]
    with pytest.raises(Exception, match=r"(?i)external|path|graph"):
        ort.InferenceSession(model("constant_sparse"), sess_options=session_options(ort),
                             providers=["CPUExecutionProvider"])



def test_pins_and_skops_types_are_checked_at_expansion(service: Service) -> None:
    """Red team 2 #1: with the file check gone from the transform's construction, the
    service expanded a wrong pin and a skops file naming an untrusted type (the
    refusal came only from the workers, as failure rows)."""
    refused(service, request(lr(service.root, sha256="ab" * 32)), "node.sha256: the file",
            "but the spec pins " + "ab" * 32)
    evil = evil_skops(service.root / "evil.skops", service.markers / "skops-ran")
    try:
        refused(service, request(lr(service.root, uri=str(evil))), "node.uri: the skops file",
                "names types outside skops' trusted defaults", "RunsCommand")
        # In an A/B arm too, with the arm's field path.
        arms = [{"name": "a", "weight": 1, "node": lr(service.root)},
                {"name": "b", "weight": 1, "node": lr(service.root, name="bad", uri=str(evil))}]
        refused(service, request({"kind": "ab_test", "name": "ab", "arms": arms},
                                 urn=AB_TEST_URN),
                "node.arms[1].node.uri: the skops file")
    finally:
        evil.unlink()
    # The right pin expands.
    assert_valid_expansion(service.expand(request(lr(service.root, sha256=sha256_of(
        service.root / "digits_lr.skops")))))


def report_request(spec: dict | str, trigger: beam_runner_api_pb2.Trigger | None = None,
                   **settings: Any) -> Any:
    """An experiment report request over rows of the report input schema."""
    from apache_beam.typehints.schemas import schema_from_element_type

    from crossinfer.expansion.report import encode_report_payload
    from crossinfer.experiments import ReportInput

    # A copy: Beam hands out the schema it keeps for the type, and the report's
    # own id must stay as it is for the tests that come later.
    rows = schema_pb2.Schema()
    rows.CopyFrom(schema_from_element_type(ReportInput))
    rows.id = "5e2b8c1a-0000-4000-8000-0000000000cc"
    text = spec if isinstance(spec, str) else json.dumps(spec)
    return request(text, rows, urn=REPORT_URN, trigger=trigger,
                   payload=encode_report_payload(text, **settings))


def _ab(root: Path, n: int = 2, **changes: Any) -> dict:
    node = {"kind": "ab_test", "name": "ab", "split": "random", "arms": [
        {"name": f"a{i}", "weight": 1, "node": lr(root, name=f"m{i}")} for i in range(n)]}
    node.update(changes)
    return {"version": 1, "node": node}


def test_report_specs_are_validated_and_sized_as_inference_specs(service: Service) -> None:
    """Red team 2 #2: the report URN skipped spec validation and lane sizing: it took
    2,500 arms past --max-arms (20 such reports at once slowed a one-model request to
    24-35 s), weights 0/0 (then ZeroDivisionError in the pipeline), -1 and 1e300,
    duplicate arm names, a seed of 2^80, a salt of 100,000 characters, and a spec
    without its envelope."""
    from crossinfer.expansion.admission import SMALL_SPEC_NODES
    from crossinfer.expansion.limits import RequestLimits
    from crossinfer.expansion.servicer import check
    from crossinfer.spec.limits import SpecLimits

    root = service.root
    control = service.expand(report_request(_ab(root)))
    assert not control.error and set(control.transform.outputs) == {"arms", "pairs"}

    def weights(a: float, b: float) -> dict:
        spec = _ab(root)
        spec["node"]["arms"][0]["weight"], spec["node"]["arms"][1]["weight"] = a, b
        return spec

    duplicate = _ab(root)
    duplicate["node"]["arms"][1]["name"] = "a0"
    many = _ab(root, arms=[{"name": f"a{i}", "weight": 1, "node": {
        "kind": "model", "name": f"m{i}", "framework": "sklearn", "uri": "x"}}
        for i in range(2_000)])  # small arms: within --max-spec-bytes
    for spec, fragments in (
            (many, ("node: has 2001 nodes; at most 64 are allowed (--max-nodes)",)),
            (_ab(root, 17), ("node.arms: has 17 arms; at most 16", "--max-arms")),
            (weights(0, 0), ("node.arms[0].weight: must be a number above 0",
                             "node.arms[1].weight")),
            (weights(-1, 1), ("node.arms[0].weight: must be a number above 0",)),
            (weights(1e300, 1e300), ("node.arms[0].weight: must be a number above 0 and at "
                                     "most 1,000,000",)),
            (duplicate, ("node.arms[1].name: arm name 'a0' is used twice",)),
            (_ab(root, split="hash", seed=2**80), ("node.seed: must be an integer",)),
            (_ab(root, split="hash", salt="s" * 100_000), ("node.salt: longer than 256",)),
            (_ab(root)["node"], ("node: is required",)),
            (_ab(root, 0), ("node.arms: an A/B test needs at least two arms",))):
        refused(service, report_request(spec), *fragments)
    # The report's own settings keep their field paths.
    refused(service, report_request(_ab(root), control="zzz"), "payload.control")
    # Its lane is sized by its spec, as an inference request's is (a report of 16
    # arms is a large request, not a small one).
    checked = check(report_request(_ab(root, 16)), SpecLimits(), RequestLimits())
    assert checked.nodes == 17 > SMALL_SPEC_NODES
    assert check(report_request(_ab(root)), SpecLimits(), RequestLimits()).nodes == 3


def _keyed(root: Path) -> dict:
    return {"kind": "keyed", "name": "k", "routes": [{"keys": ["a"], "node": lr(root)}]}


KEYED_ROWS = schema(FEATURES, ("key", schema_pb2.FieldType(atomic_type=schema_pb2.STRING)))


def _after_count(n: int) -> beam_runner_api_pb2.Trigger:
    return beam_runner_api_pb2.Trigger(element_count=beam_runner_api_pb2.Trigger.ElementCount(
        element_count=n))


def test_an_unsafe_trigger_on_grouped_input_is_refused_naming_the_windowing(
        service: Service) -> None:
    """Red team 2 #3: a keyed spec over input triggered AfterCount(1) came back as
    ``internal error while expanding: ValueError: GroupByRoute[k]: Unsafe trigger``,
    and a 360 KB AfterAny of 60,000 triggers wrote 906 KB of traceback to the log."""
    refused(service, request(_keyed(service.root), KEYED_ROWS, urn=KEYED_URN,
                             trigger=_after_count(1)),
            "input: the windowing strategy 'ws' has the trigger AfterCount(1)",
            "may lose data", "the keyed node at node groups its input by route")
    refused(service, report_request(_ab(service.root), trigger=_after_count(1)),
            "input: the windowing strategy 'ws'", "the report groups its input")
    # The same trigger is fine where nothing groups (one model), and a repeated
    # trigger where something does.
    assert_valid_expansion(service.expand(request(lr(service.root), trigger=_after_count(1))))
    assert_valid_expansion(service.expand(request(
        _keyed(service.root), KEYED_ROWS, urn=KEYED_URN, trigger=beam_runner_api_pb2.Trigger(
            repeat=beam_runner_api_pb2.Trigger.Repeat(subtrigger=_after_count(1))))))
    wide = beam_runner_api_pb2.Trigger(after_any=beam_runner_api_pb2.Trigger.AfterAny(
        subtriggers=[_after_count(1)] * 60_000))
    req = request(_keyed(service.root), KEYED_ROWS, urn=KEYED_URN, trigger=wide)
    before = service.proc.log.stat().st_size
    error, _ = refused(service, req, "input: the windowing strategy 'ws'", "may lose data")
    written = service.proc.log.stat().st_size - before
    print(f"a {req.ByteSize():,}-byte request: {len(error):,} characters of error, "
          f"{written:,} bytes of log")
    assert len(error) < 2_000 and written < 20_000, (len(error), written)


def test_out_of_root_refusals_never_say_where_links_lead(service: Service) -> None:
    """Red team 2 #4: "(it resolves to ...)" told any client the target of
    /proc/self/exe, the service's working directory, its descriptors and the
    symlinks under a root. Only the URI's lexical form is shown."""
    link = service.root / "elsewhere"
    link.symlink_to(service.outside)
    try:
        error, _ = refused(service, request(lr(service.root, uri=str(link / "evil.pkl"))),
                           "node.uri: ", "is outside the allowed model roots",
                           "a symbolic link on its path leads outside them")
        assert str(service.outside) not in error, error
    finally:
        link.unlink()
    secrets = [os.path.realpath(sys.executable), os.getcwd()]
    for uri in ("/proc/self/exe", "/proc/self/cwd/x.skops", "/proc/self/fd/0",
                "/proc/self/fd/3", "/proc/self/root" + str(service.outside / "evil.pkl")):
        error, _ = refused(service, request(lr(service.root, uri=uri)), "node.uri: ",
                           "is outside the allowed model roots")
        assert "resolves to" not in error and not any(s in error for s in secrets), error
    # '..' is still shown resolved (lexically), and a relative path keeps its hint.
    error, _ = refused(service, request(lr(service.root, uri=str(
        service.root / ".." / service.outside.name / "evil.pkl"))), "node.uri: ")
    assert f"(that is '{service.outside / 'evil.pkl'}')" in error, error
    refused(service, request(lr(service.root, uri="evil.pkl")), "a relative path resolves "
            "against the working directory")

# ------------------------------------------------------------------ memory


def test_what_requests_add_to_beams_schema_registry_is_bounded(
        models: DemoModels, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Red team #7: every new input-schema id stayed in Beam's registry for ever
    (+271 MiB after 100 requests). In process (to read the registry), over gRPC."""
    from apache_beam.typehints.schema_registry import SCHEMA_REGISTRY

    shutil.copy(models.path("digits_lr.skops"), tmp_path / "digits_lr.skops")
    servicer = CrossinferExpansionServicer(build_policy([str(tmp_path)], [], False),
                                           build_environment("external", "127.0.0.1:9"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    beam_expansion_api_pb2_grpc.add_ExpansionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setattr(BUDGET, "max_fields", 400)
    try:
        stub = expansion_stub(f"127.0.0.1:{port}")
        before = len(SCHEMA_REGISTRY.by_id)
        sizes = []
        for i in range(40):  # 40 schemas of 21 fields, each new
            fields = [(f"c{i}_{j}", DOUBLE) for j in range(20)]
            assert_valid_expansion(stub.Expand(request(lr(tmp_path), schema(
                *fields, FEATURES)), timeout=120))
            sizes.append(len(SCHEMA_REGISTRY.by_id) - before)
        assert BUDGET.kept_fields <= 400, BUDGET.kept_fields
        assert max(sizes[20:]) <= max(sizes[:20]) + 3, sizes  # it stopped growing
        # A forgotten schema is made again when it comes back.
        assert_valid_expansion(stub.Expand(request(lr(tmp_path), schema(
            *[(f"c0_{j}", DOUBLE) for j in range(20)], FEATURES)), timeout=120))
    finally:
        server.stop(0)
