"""An attacker's requests against the real service, over gRPC with Beam's protos.

Three setups, one service process each, started once for the module: the
default (``--model-root`` only, so the loopback environment), with
``--require-sha256``, and with ``--bind`` on a non-loopback address of this
machine (``0.0.0.0`` where there is none; see docs/security.md). For each kind
of fault - class names that walk attributes, code-capable model formats,
numbers out of bounds, locations that escape the model roots, oversized specs,
and a seeded generator of mutations biased to names and numbers - every
request is refused with a message naming its field, a marker file proves
nothing ran, and the service answers the next valid request. Then: Beam's
worker-pool protocol on the expansion port (a plain Beam pipeline must not run
there), admission control (RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED), and
SIGTERM with an expansion in flight.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import shutil
import signal
import socket
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import grpc
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_expansion_api_pb2_grpc, beam_runner_api_pb2

from attack_payloads import WRITERS
from crossinfer.demo import DemoModels, sha256_of
from crossinfer.expansion import encode_payload
from crossinfer.expansion.admission import Admission
from crossinfer.expansion.environments import build_environment
from crossinfer.expansion.service import build_policy
from crossinfer.expansion.servicer import CrossinferExpansionServicer
from crossinfer.expansion.urns import AB_TEST_URN, KEYED_URN, MODEL_URN, SEQUENCE_URN
from crossinfer.spec.limits import FIELD_BOUNDS
from xlang_fixtures import (
    SERVICE_READY,
    Proc,
    assert_valid_expansion,
    build_request,
    expansion_stub,
    service_args,
    shared_stack,
    start_process,
)

pytestmark = pytest.mark.slow

SEED = 20261130
#: Generated requests per setup (the hand-written ones come on top).
GENERATED = {"default": 300, "sha256": 120, "bind": 120}
SETUPS = ("default", "sha256", "bind")
#: The classes a spec may name in these services; anything else must be refused.
REAL_CLASSES = {"crossinfer.models:MLP", "crossinfer.models:MeanPoolClassifier"}
#: How a refusal names its field: ``path: message``.
_FIELD = re.compile(r"^(node|payload|input|transform\.spec\.urn|spec\.node\.kind|version|"
                    r"features_field|key_field|\$)[\w.\[\]]*: ", re.M)


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, if one can be bound."""
    for probe in ("192.0.2.1", "10.255.255.255", "8.8.8.8"):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))  # no packet is sent: this only picks a route
                address = s.getsockname()[0]
            with socket.socket() as s:
                s.bind((address, 0))
        except OSError:
            continue
        if not address.startswith("127.") and address != "0.0.0.0":
            return address
    return None


@dataclass
class Setup:
    name: str
    proc: Proc
    address: str
    root: Path
    markers: Path
    stub: Any = None
    requests: int = 0

    def expand(self, request: Any) -> Any:
        self.requests += 1
        return self.stub.Expand(request, timeout=120)


@dataclass
class Files:
    """The model root the attacked services share: demo models and evil files."""

    root: Path
    markers: Path

    def path(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture(scope="module")
def files(models: DemoModels, tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("attack_root")
    markers = tmp_path_factory.mktemp("markers")
    for name in ("digits_lr.skops", "digits_pca.skops", "digits_mlp.pt", "digits_pca_mlp.pt",
                 "digits_mlp.onnx", "digits_mlp.ts", "digits_lr.pkl"):
        shutil.copy(models.path(name), root / name)
    for kind, writer in WRITERS.items():
        writer(root / f"evil.{kind}", markers / f"{kind}-ran")
    (root / "model.engine").write_bytes(b"not an engine")
    outside = tmp_path_factory.mktemp("outside") / "secret.skops"
    shutil.copy(models.path("digits_lr.skops"), outside)
    (root / "escape.skops").symlink_to(outside)
    return Files(root, markers)


@pytest.fixture(scope="module")
def setups(files: Files, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Setup]:
    logs = tmp_path_factory.mktemp("attack_logs")
    bind = non_loopback_address()
    flags = {
        "default": ["--model-root", str(files.root)],
        "sha256": ["--model-root", str(files.root), "--require-sha256"],
        "bind": ["--model-root", str(files.root), "--bind", bind or "0.0.0.0",
                 "--environment", "external", "--environment-config", "127.0.0.1:9"],
    }
    started: dict[str, Setup] = {}

    def start(name: str) -> None:
        proc = start_process(f"attack_{name}", service_args(*flags[name]), logs,
                             ready_prefix=SERVICE_READY)
        address = proc.ready_line[len(SERVICE_READY):].strip()
        if address.startswith("0.0.0.0:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        started[name] = Setup(name, proc, address, files.root, files.markers)

    threads = [threading.Thread(target=start, args=(n,)) for n in SETUPS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert set(started) == set(SETUPS), f"services did not start; logs in {logs}"
        for setup in started.values():
            setup.stub = expansion_stub(setup.address)
        yield started
    finally:
        for setup in started.values():
            setup.proc.stop()
        print("requests sent: " + ", ".join(f"{s.name} {s.requests}" for s in started.values())
              + f"; {sum(s.requests for s in started.values())} in all")


# ------------------------------------------------------------------ specs


def pinned(node: dict) -> dict:
    """``node`` with a sha256 pin on every model that has a local file."""
    node = copy.deepcopy(node)
    stack = [node]
    while stack:
        each = stack.pop()
        if isinstance(each, dict):
            if each.get("kind") == "model" and each.get("uri") and os.path.isfile(each["uri"]):
                each["sha256"] = sha256_of(each["uri"])
            stack.extend(each.values())
        elif isinstance(each, list):
            stack.extend(each)
    return node


def lr(files: Files, **changes: Any) -> dict:
    node = {"kind": "model", "name": "lr", "framework": "sklearn", "format": "skops",
            "uri": files.path("digits_lr.skops"), "method": "predict_proba",
            "preprocess": [{"op": "scale", "factor": 1 / 16}], "postprocess": [{"op": "argmax"}]}
    node.update(changes)
    return pinned(node)


def mlp(files: Files, **changes: Any) -> dict:
    node = {"kind": "model", "name": "mlp", "framework": "pytorch", "format": "state_dict",
            "uri": files.path("digits_mlp.pt"), "model_class": "crossinfer.models:MLP",
            "model_params": {"sizes": [64, 64, 10]}, "postprocess": [{"op": "softmax"}]}
    node.update(changes)
    return pinned(node)


def every_number(files: Files) -> dict:
    """An A/B test holding every kind of numeric field, valid as it is."""
    lr_node = lr(files, input_shape=[64], batching={"min_batch_size": 8, "max_batch_size": 64,
                                                     "max_wait_secs": 1.5},
                 memory={"model_copies": 1},
                 preprocess=[{"op": "reshape", "shape": [-1]},
                             {"op": "pad_truncate", "length": 64, "value": 0.0},
                             {"op": "normalize", "mean": 0.0, "std": [16.0]}],
                 postprocess=[{"op": "top_k", "k": 3}, {"op": "threshold", "index": 0,
                                                        "threshold": 0.5}])
    keyed = {"kind": "keyed", "name": "k", "max_models_per_worker": 2, "shards": 4, "routes": [
        {"keys": ["a", "b"], "node": mlp(files)}]}
    return {"kind": "ab_test", "name": "ab", "split": "hash", "seed": 7, "salt": "s",
            "arms": [{"name": "a", "weight": 90, "node": lr_node},
                     {"name": "b", "weight": 10, "node": keyed}]}


def doc(node: dict) -> str:
    return json.dumps({"version": 1, "node": node})


_TEMPLATES: dict[str, Any] = {}


def request_for(node: dict, urn: str | None = None) -> Any:
    """The ExpansionRequest Beam's ExternalTransform sends for ``node`` (the request
    around the payload is built once per URN: building it takes a Beam pipeline)."""
    kinds = {"model": MODEL_URN, "ab_test": AB_TEST_URN, "sequence": SEQUENCE_URN,
             "keyed": KEYED_URN}
    urn = urn or kinds.get(node.get("kind") if isinstance(node, dict) else None, MODEL_URN)
    if urn not in _TEMPLATES:
        _TEMPLATES[urn] = build_request(urn, b"")
    request = copy.deepcopy(_TEMPLATES[urn])
    request.transform.spec.payload = encode_payload(doc(node))
    return request


def markers_empty(setup: Setup) -> None:
    ran = sorted(p.name for p in setup.markers.iterdir())
    assert ran == [], f"code ran: {ran}"


def answers_next(setup: Setup, files: Files) -> None:
    assert_valid_expansion(setup.expand(request_for(lr(files))))
    assert setup.proc.alive()


def field_paths(error: str) -> list[str]:
    body = error.removeprefix("crossinfer: ").removeprefix("invalid inference spec:")
    return [m.group(0)[:-2] for m in _FIELD.finditer(body.replace("\n  ", "\n").lstrip())]


def refused(setup: Setup, files: Files, request: Any, *fragments: str) -> str:
    """The request is refused naming ``fragments`` and its field; nothing ran. (Each
    test then checks that the service answers the next valid request.)"""
    response = setup.expand(request)
    error = response.error
    assert error.startswith("crossinfer: "), error or "expanded!"
    assert field_paths(error), f"no field path in {error!r}"
    for bad in ("Traceback", "internal error", "OverflowError", "embedded null byte"):
        assert bad not in error, error
    for fragment in fragments:
        assert fragment in error, error
    markers_empty(setup)
    return error


# ------------------------------------------------------------------ classes of faults

CLASS_NAMES = ["crossinfer.models:torch.os.system", "crossinfer.models:MLP.__init__.__globals__",
               "crossinfer.models:torch.load", "crossinfer.models:nn.Module",
               "crossinfer.models:nn", "crossinfer.models:torch",
               "crossinfer.models:annotations", "crossinfer.models:__builtins__",
               "crossinfer.models:MLP.__class__", "crossinfer.models:*", "os:system",
               "builtins:eval", "subprocess:Popen", "crossinfer.models.torch:load",
               "torch.nn:Module", "apache_beam.ml.inference.base:ModelHandler",
               "crossinfer.models:MLP ", "crossinfer.models.MLP"]


@pytest.mark.parametrize("name", SETUPS)
def test_class_names_resolve_only_to_allow_listed_classes(
        setups: dict[str, Setup], files: Files, name: str) -> None:
    setup = setups[name]
    command = {"command": f"touch {setup.markers / 'class-ran'}"}
    for path in CLASS_NAMES:
        refused(setup, files, request_for(mlp(files, model_class=path, model_params=command)),
                "node.model_class: ")
        custom = {"kind": "model", "name": "c", "framework": "custom", "handler_class": path,
                  "handler_params": {"args": ["touch", str(setup.markers / "handler-ran")]}}
        refused(setup, files, request_for(custom), "node.handler_class: ")
    # A real model class is not a ModelHandler, and the reverse.
    refused(setup, files, request_for({"kind": "model", "name": "c", "framework": "custom",
                                       "handler_class": "crossinfer.models:MLP"}),
            "node.handler_class: 'crossinfer.models:MLP' is not a subclass of "
            "apache_beam.ml.inference.base.ModelHandler")
    answers_next(setup, files)


@pytest.mark.parametrize("name", SETUPS)
def test_code_capable_formats_are_refused_pinned_or_not(
        setups: dict[str, Setup], files: Files, name: str) -> None:
    setup = setups[name]
    cases = [("sklearn", "pickle", "evil.pickle"), ("sklearn", "joblib", "evil.joblib"),
             ("sklearn", None, "evil.pickle"), ("pytorch", "torchscript", "digits_mlp.ts"),
             ("pytorch", None, "digits_mlp.ts"), ("tensorrt", "engine", "model.engine")]
    for framework, fmt, file in cases:
        for pin in (False, True):
            node = {"kind": "model", "name": "evil", "framework": framework,
                    "uri": files.path(file)}
            if fmt:
                node["format"] = fmt
            if pin:
                node["sha256"] = sha256_of(files.path(file))
            error = refused(setup, files, request_for(node), "node.format: format ",
                            "can run code when loaded", "--allow-code-format")
            if pin or name != "sha256":
                assert "node.sha256" not in error, error
    refused(setup, files, request_for(lr(files, uri=files.path("evil.skops"))),
            "node.uri: the skops file", "names types outside skops' trusted defaults and the "
            "policy's trusted types (attack_payloads.RunsCommand)")
    answers_next(setup, files)


NUMBERS: list[tuple[str, Any, str]] = [
    ("batching.max_wait_secs", 1e308, "node.batching.max_wait_secs: must be a number above 0"),
    ("batching.max_wait_secs", 10**400, "node.batching.max_wait_secs: must be a number above 0"),
    ("batching.max_batch_size", 10**30, "node.batching.max_batch_size: must be an integer"),
    ("batching.min_batch_size", -5, "node.batching.min_batch_size: must be an integer from 1"),
    ("memory.model_copies", 10**30, "node.memory.model_copies: must be an integer from 1 to 64"),
    ("input_shape", [10**30], "node.input_shape[0]: must be an integer from 1"),
    ("input_shape", [4096, 4096, 4096], "node.input_shape: describes 68,719,476,736 values"),
    ("postprocess", [{"op": "top_k", "k": 10**9}], "node.postprocess[0]: 'k' must be"),
    ("preprocess", [{"op": "pad_truncate", "length": 10**30}], "node.preprocess[0]: 'length'"),
    ("preprocess", [{"op": "scale", "factor": 1e39}], "node.preprocess[0]: 'factor' must be"),
    ("preprocess", [{"op": "reshape", "shape": [0]}], "node.preprocess[0]: 'shape' must be"),
    ("postprocess", [{"op": "threshold", "index": 2**40}], "node.postprocess[0]: 'index'"),
    ("uri", "/models/x\u0000.skops", "node.uri: '/models/x\\x00.skops' contains a control"),
    ("dtype", "V2147483648", "node.dtype: "),
]


@pytest.mark.parametrize("name", SETUPS)
def test_numbers_out_of_bounds_are_refused_naming_the_field(
        setups: dict[str, Setup], files: Files, name: str) -> None:
    setup = setups[name]
    for field, value, fragment in NUMBERS:
        node = lr(files)
        parent, _, key = field.rpartition(".")
        (node.setdefault(parent, {}) if parent else node)[key] = value
        refused(setup, files, request_for(node), fragment)
    big_mlp = mlp(files, model_params={"sizes": [64, 10**12, 10]})
    refused(setup, files, request_for(big_mlp), "node.model_params: describe a model of "
                                                "75,000,000,000,010 parameters")
    ab = every_number(files)
    for path, value in ((("arms", 0, "weight"), 1e308), (("seed",), 2**64),
                        (("arms", 1, "node", "max_models_per_worker"), 10**6)):
        bad = copy.deepcopy(ab)
        target = bad
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        refused(setup, files, request_for(bad), "node." + ".".join(
            f"[{p}]" if isinstance(p, int) else p for p in path).replace(".[", "["))
    answers_next(setup, files)


@pytest.mark.parametrize("name", SETUPS)
def test_locations_outside_the_model_roots_are_refused(
        setups: dict[str, Setup], files: Files, name: str) -> None:
    setup = setups[name]
    root = files.root
    for uri, fragment in (
            (str(root / ".." / ".." / "etc" / "passwd"), "outside the allowed model roots"),
            (str(root / "escape.skops"), "outside the allowed model roots"),  # a symlink
            ("digits_lr.skops", "outside the allowed model roots"),  # the service's cwd
            ("file://attacker.example/models/x.skops", "file:///absolute/path"),
            (f"file://{root}/../escape/x.skops", "outside the allowed model roots"),
            ("gs://bucket/models/x.skops", "outside the allowed model roots"),
            ("/" + "a" * 5000, "longer than 4096 characters"),
            (str(root / "digits_lr.skops\n"), "control character")):
        refused(setup, files, request_for(lr(files, uri=uri, sha256="0" * 64)),
                "node.uri: ", fragment)
    answers_next(setup, files)
    # The same file as a file:// URI is the same location, checked and pinned alike.
    as_uri = lr(files, uri=f"file://{root}/digits_lr.skops",
                sha256=sha256_of(root / "digits_lr.skops"))
    assert_valid_expansion(setup.expand(request_for(as_uri)))


@pytest.mark.parametrize("name", SETUPS)
def test_oversized_specs_are_refused_before_they_are_looked_at(
        setups: dict[str, Setup], files: Files, name: str) -> None:
    setup = setups[name]

    def arms(n: int) -> dict:
        return {"kind": "ab_test", "name": "ab", "arms": [
            {"name": f"a{i}", "weight": 1, "node": lr(files, name=f"m{i}")} for i in range(n)]}

    nested: dict = lr(files)
    for i in range(20):
        nested = {"kind": "sequence", "name": f"s{i}", "stages": [nested]}
    for node, fragment in (
            (arms(17), "node.arms: has 17 arms; at most 16 are allowed (--max-arms)"),
            ({"kind": "sequence", "name": "s", "stages": [arms(16) | {"name": f"ab{i}"} for i
                                                          in range(4)]},
             "node: has 69 nodes; at most 64 are allowed (--max-nodes)"),
            ({"kind": "keyed", "name": "k", "routes": [
                {"keys": [f"k{i}"], "node": lr(files, name=f"m{i}")} for i in range(65)]},
             "node: has 66 nodes; at most 64 are allowed (--max-nodes)"),
            ({"kind": "keyed", "name": "k", "routes": [
                {"keys": [f"k{i}" for i in range(10_001)], "node": lr(files)}]},
             "node.routes: has 10001 keys; at most 10000"),
            (lr(files, postprocess=[{"op": "softmax"}] * 17), "node.postprocess: has 17 ops"),
            ({**lr(files), "salt": "x" * 300_000},
             "bytes; at most 262144 are allowed (--max-spec-bytes)"),
            (nested, "payload.spec: JSON nested deeper than 32 levels (--max-spec-depth)")):
        refused(setup, files, request_for(node), fragment)
    answers_next(setup, files)


# ------------------------------------------------------------------ generated mutations

NAME_TOKENS = ["crossinfer", "models", "MLP", "MeanPoolClassifier", "torch", "os", "system",
               "nn", "Module", "load", "__init__", "__globals__", "__builtins__", "builtins",
               "eval", "subprocess", "Popen", "*", "", "..", "annotations", "support",
               "apache_beam", "ModelHandler", "sklearn", "skops", "pickle"]
NAME_FIELDS = ("model_class", "handler_class", "framework", "format", "method", "device",
               "dtype", "op", "uri", "name", "split", "kind", "salt")
NUMBER_VALUES = [0, -1, 1, 2, 7, 64, 65, 3600, 3601, 100_000, 100_001, 2**16, 2**16 + 1,
                 2**20, 2**20 + 1, 2**31, 2**53, 2**53 + 1, 2**63, 2**64, 10**30, 10**400,
                 -(10**400), 0.5, -0.5, 1e-308, 1e308, -1e308, 3.4e38, 3.5e38, 1e6, 1e6 + 1]
#: Numeric fields whose bound the generator knows: (last key, parent hint) -> FIELD_BOUNDS key.
BOUNDED = {"min_batch_size": "model.batching.min_batch_size",
           "max_batch_size": "model.batching.max_batch_size",
           "max_wait_secs": "model.batching.max_wait_secs",
           "model_copies": "model.memory.model_copies", "weight": "ab_test.arms[].weight",
           "seed": "ab_test.seed", "max_models_per_worker": "keyed.max_models_per_worker",
           "shards": "keyed.shards",
           "length": "op.pad_truncate.length", "k": "op.top_k.k",
           "index": "op.threshold.index"}


def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += json_paths(v, (*prefix, i))
    return found


def field_path(path: tuple) -> str:
    return "node" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def random_class_name(rng: random.Random) -> str:
    module = ".".join(rng.choice(NAME_TOKENS) for _ in range(rng.randint(1, 3)))
    name = ".".join(rng.choice(NAME_TOKENS) for _ in range(rng.randint(1, 3)))
    return module + rng.choice([":", ":", ":", ".", "::", ""]) + name


def mutate(rng: random.Random, node: dict, marker: Path) -> tuple[dict, str | None]:
    """A mutated copy of ``node`` and, when the mutation must be refused, the field
    path the refusal must name."""
    node = copy.deepcopy(node)
    paths = json_paths(node)[1:]
    roll = rng.random()
    if roll < 0.4:  # names
        candidates = [p for p in paths if p[-1] in NAME_FIELDS] or paths
        path = rng.choice(candidates)
        value: Any = rng.choice([random_class_name(rng), rng.choice(CLASS_NAMES),
                                 f"touch {marker}", "../../" * rng.randint(1, 4) + "etc/passwd",
                                 "file:///etc/passwd", "x\x00y", "\u202e" + "MLP", "a" * 300])
        target = node
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        must = None
        if path[-1] in ("model_class", "handler_class") and value not in REAL_CLASSES:
            must = field_path(path)
        return node, must
    if roll < 0.8:  # numbers
        numeric = [p for p in paths if isinstance(p[-1], str) and p[-1] in BOUNDED] or paths
        path = rng.choice(numeric)
        value = rng.choice(NUMBER_VALUES)
        target = node
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        key = BOUNDED.get(path[-1]) if isinstance(path[-1], str) else None
        if key and FIELD_BOUNDS[key].problem(value):
            at = field_path(path)
            if path[-1] in ("length", "k", "index"):  # op params: the op is the path
                at = field_path(path[:-1])
            return node, at
        return node, None
    path = rng.choice(paths)  # structure
    target = node
    for step in path[:-1]:
        target = target[step]
    choice = rng.random()
    if choice < 0.3 and isinstance(target, dict):
        del target[path[-1]]
    elif choice < 0.6 and isinstance(target, dict):
        target[rng.choice(["fn", "__reduce__", "code", "pickle", "command"])] = f"touch {marker}"
    else:
        target[path[-1]] = rng.choice([None, True, [], {}, [1, [2]], {"op": "softmax"}])
    return node, None


@pytest.mark.parametrize("name", SETUPS)
def test_generated_mutations_are_refused_or_expanded_never_run(
        setups: dict[str, Setup], files: Files, name: str) -> None:
    setup = setups[name]
    bases = [every_number(files), lr(files), mlp(files),
             {"kind": "sequence", "name": "seq", "stages": [
                 lr(files, name="pca", uri=files.path("digits_pca.skops"), method="transform",
                    postprocess=[]), mlp(files, name="head", uri=files.path("digits_pca_mlp.pt"),
                                         model_params={"sizes": [16, 32, 10]})]}]
    for base in bases:
        assert_valid_expansion(setup.expand(request_for(base)))
    rng = random.Random(f"{SEED}/{name}")
    outcomes = {"ok": 0, "refused": 0}
    for i in range(GENERATED[name]):
        node, must_refuse_at = mutate(rng, rng.choice(bases), setup.markers / f"gen-{i}")
        try:
            response = setup.expand(request_for(node))
        except grpc.RpcError as exc:
            pytest.fail(f"case {i}: the RPC failed: {exc}")
        error = response.error
        if must_refuse_at is not None:
            assert error, f"case {i}: expanded a spec that must be refused at {must_refuse_at}"
            assert any(p.startswith(must_refuse_at) or must_refuse_at.startswith(p)
                       for p in field_paths(error)), (i, must_refuse_at, error)
        if error:
            outcomes["refused"] += 1
            assert error.startswith("crossinfer: "), (i, error)
            assert field_paths(error), (i, error)
            for bad in ("Traceback", "internal error", "OverflowError"):
                assert bad not in error, (i, error)
        else:
            outcomes["ok"] += 1
            assert_valid_expansion(response)
        if i % 50 == 49:
            markers_empty(setup)
            answers_next(setup, files)
    markers_empty(setup)
    answers_next(setup, files)
    assert outcomes["refused"] > GENERATED[name] // 2, outcomes
    print(f"{name}: {outcomes}")


# ------------------------------------------------------------------ the worker-pool protocol


def run_plain_beam(job_endpoint: str, environment_config: str, marker: Path) -> str:
    """A Beam Python pipeline with no crossinfer in it, its workers at ``environment_config``
    (Beam's EXTERNAL environment); its terminal state or the error it raised."""
    options = PipelineOptions(runner="PortableRunner", job_endpoint=job_endpoint,
                              environment_type="EXTERNAL",
                              environment_config=environment_config)
    try:
        pipeline = beam.Pipeline(options=options)
        # A lambda travels by value: the workers need nothing of this module.
        _ = pipeline | beam.Create([1]) | beam.Map(
            lambda x, m=str(marker): (open(m, "w").write("ran"), x)[1])
        result = pipeline.run()
        return str(result.wait_until_finish(duration=120_000))
    except Exception as exc:  # the job fails: the runner cannot start workers there
        return f"{type(exc).__name__}: {exc}"


def test_the_expansion_port_runs_no_pipeline(setups: dict[str, Setup], files: Files,
                                             models: DemoModels) -> None:
    """In the default (loopback) setup, a plain Beam pipeline pointed at the expansion
    port as its worker pool never runs; pointed at the service's own worker pool (its
    address is in every expansion's environment) it does: that pool is reachable from
    this host only, as docs/security.md says."""
    setup = setups["default"]
    stack = shared_stack(models.root)
    marker = setup.markers / "probe-ran"
    outcome = run_plain_beam(stack.job_endpoint, setup.address, marker)
    assert "DONE" not in outcome, outcome
    assert not marker.exists()
    answers_next(setup, files)
    response = setup.expand(request_for(lr(files)))
    (env,) = [e for e in response.components.environments.values()
              if e.urn == common_urns.environments.EXTERNAL.urn]
    pool = beam_runner_api_pb2.ExternalPayload.FromString(env.payload).endpoint.url
    assert pool.startswith("127.0.0.1:") and pool != setup.address
    control = setup.markers.parent / "probe-control-ran"  # outside the markers directory
    assert "DONE" in run_plain_beam(stack.job_endpoint, pool, control)
    assert control.exists()


# ------------------------------------------------------------------ load


@pytest.fixture
def in_process(files: Files) -> Any:
    """A servicer with an admission the test controls, on a free loopback port."""
    def serve(admission: Admission) -> Any:
        servicer = CrossinferExpansionServicer(
            build_policy([str(files.root)], [], False),
            build_environment("external", "127.0.0.1:9"), admission=admission)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        beam_expansion_api_pb2_grpc.add_ExpansionServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return expansion_stub(f"127.0.0.1:{port}")

    servers: list[Any] = []
    yield serve
    for server in servers:
        server.stop(0)


def _heavy(files: Files) -> Any:
    return request_for({"kind": "ab_test", "name": "ab", "arms": [
        {"name": f"a{i}", "weight": 1, "node": lr(files, name=f"m{i}")} for i in range(10)]})


def test_a_full_lane_refuses_at_once_and_small_specs_have_their_own(
        in_process: Any, files: Files) -> None:
    admission = Admission(large_slots=1, queue=0, timeout_secs=60)
    stub = in_process(admission)
    with admission.slot(nodes=100, deadline=time.monotonic() + 60):  # the large lane is busy
        with pytest.raises(grpc.RpcError) as info:
            stub.Expand(_heavy(files), timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "the service is busy: 1 large expansions running" in info.value.details()
        assert_valid_expansion(stub.Expand(request_for(lr(files)), timeout=60))
    assert_valid_expansion(stub.Expand(_heavy(files), timeout=60))


def test_a_request_waits_no_longer_than_its_deadline(in_process: Any, files: Files) -> None:
    admission = Admission(large_slots=1, queue=1, timeout_secs=1.0)
    stub = in_process(admission)
    with admission.slot(nodes=100, deadline=time.monotonic() + 60):
        waiting = stub.Expand.future(_heavy(files), timeout=60)
        while admission.waiting == 0 and not waiting.done():
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as full:  # the one queue place is taken
            stub.Expand(_heavy(files), timeout=60)
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as late:
            waiting.result()
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "waited for a free large expansion slot" in late.value.details()


def test_sigterm_stops_the_service_with_an_expansion_in_flight(
        files: Files, tmp_path: Path) -> None:
    proc = start_process("sigterm", service_args(
        "--model-root", str(files.root), "--environment", "external",
        "--environment-config", "127.0.0.1:9", "--max-nodes", "5000", "--max-arms", "5000",
        "--max-spec-bytes", "8000000"),
        tmp_path, ready_prefix=SERVICE_READY)
    try:
        stub = expansion_stub(proc.ready_line[len(SERVICE_READY):].strip())
        huge = request_for({"kind": "ab_test", "name": "ab", "arms": [
            {"name": f"a{i}", "weight": 1, "node": lr(files, name=f"m{i}")}
            for i in range(1500)]})  # about a minute of expansion here
        in_flight = stub.Expand.future(huge, timeout=600)
        time.sleep(2.0)
        assert not in_flight.done()
        proc.process.send_signal(signal.SIGTERM)
        # Waiting for the expansion would take a minute; the service must not.
        assert proc.process.wait(timeout=20) == 0
        assert "shutting down" in proc.log_text()
    finally:
        proc.stop()
