"""The load policy and the spec's bounds, in-process.

* Classes named by a spec resolve to exactly one allow-listed class object.
* Code-capable formats run nothing unless the policy opts in: a marker file
  proves nothing ran, and a positive control (the same file where the format
  is allowed) proves the payload would have run.
* Workers check again what construction checked, and load the bytes they
  verified. A worker's refusal fails that model's elements (failure rows
  naming the cause; see crossinfer.handlers.loaded), never the pipeline.
* Every bound comes from one table (crossinfer.spec.limits), which schema.json
  and docs/security.md state too; every bound is enforced, naming its field.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pytest
import torch
from apache_beam.ml.inference.base import ModelHandler
from torch import nn

import crossinfer as ci
from attack_payloads import WRITERS
from crossinfer.demo import DemoModels, sha256_of
from crossinfer.handlers import ModelLoadError, adapter_for, model_handler
from crossinfer.policy import (
    CODE_FORMATS,
    ClassRefused,
    LoadPolicy,
    LocationRefused,
    normalize_uri,
    parse_class_pattern,
)
from crossinfer.spec import SpecError, SpecLimits, json_schema, load_spec
from crossinfer.spec.limits import DERIVED_BOUNDS, FIELD_BOUNDS, markdown_table
from support import STORE, Collect

DOCS = Path(__file__).parent.parent / "docs"


def errors_of(doc: Any, policy: LoadPolicy | None = None,
              limits: SpecLimits | None = None) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        load_spec(doc, policy, limits)
    return dict(info.value.errors)


#: Rows a worker-side refusal is shown on: each must come out as a failure.
ROWS = 8
SCALE = ci.Op("scale", {"factor": 1 / 16})


def run_after(change: Callable[[], Any], transform: Any) -> tuple[list[Any], list[Any]]:
    """(results, failures) of ROWS digit-shaped rows through ``transform``, in a
    pipeline built first; ``change`` runs between building and running it (what
    the workers then meet, construction never saw)."""
    rows = [beam.Row(id=i, features=np.full(64, float(i), np.float32)) for i in range(ROWS)]
    pipeline = beam.Pipeline(runner="FnApiRunner")
    out = pipeline | beam.Create(rows) | transform
    _ = out.results | "Results" >> beam.Map(Collect("policy/results"))
    _ = out.failures | "Failures" >> beam.Map(Collect("policy/failures"))
    change()
    pipeline.run().wait_until_finish()
    return STORE.pop("policy/results", []), STORE.pop("policy/failures", [])


def spec(node: dict) -> dict:
    return {"version": 1, "node": node}


def lr(models: DemoModels, **changes: Any) -> dict:
    node = {"kind": "model", "name": "lr", "framework": "sklearn", "format": "skops",
            "uri": models.path("digits_lr.skops"), "method": "predict_proba"}
    node.update(changes)
    return node


def mlp(models: DemoModels, **changes: Any) -> dict:
    node = {"kind": "model", "name": "mlp", "framework": "pytorch", "format": "state_dict",
            "uri": models.path("digits_mlp.pt"), "model_class": "crossinfer.models:MLP",
            "model_params": {"sizes": [64, 64, 10]}}
    node.update(changes)
    return node


# ------------------------------------------------------------------ classes

WALKS = ["crossinfer.models:torch.os.system", "crossinfer.models:MLP.__init__.__globals__",
         "crossinfer.models:torch.load", "crossinfer.models:nn.Module", "crossinfer.models:nn",
         "crossinfer.models:torch", "crossinfer.models:annotations",
         "crossinfer.models:__builtins__", "crossinfer.models:__loader__",
         "crossinfer.models:MLP\n", "crossinfer.models:*", "crossinfer.models:",
         "crossinfer.models", "os:system", "builtins:eval", "crossinfer.models.torch:load",
         "crossinfer:models", "crossinfer.models:MLP:x", " crossinfer.models:MLP"]


@pytest.mark.parametrize("name", WALKS)
def test_only_allow_listed_class_objects_resolve(name: str, models: DemoModels,
                                                 tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ClassRefused):
        LoadPolicy().resolve_class(name, nn.Module)
    node = mlp(models, model_class=name, model_params={"command": f"touch {marker}"})
    errors = errors_of(spec(node))
    assert "node.model_class" in errors, errors
    custom = {"kind": "model", "name": "c", "framework": "custom", "handler_class": name,
              "handler_params": {"args": ["touch", str(marker)]}}
    assert "node.handler_class" in errors_of(spec(custom))
    assert not marker.exists()


def test_the_allowed_classes_resolve_to_their_class_objects() -> None:
    from crossinfer.models import MLP, MeanPoolClassifier
    from support import CountingHandler

    policy = LoadPolicy(allowed_classes=("crossinfer.models:*", "support:CountingHandler"))
    assert policy.resolve_class("crossinfer.models:MLP", nn.Module) is MLP
    assert policy.resolve_class("crossinfer.models:MeanPoolClassifier", nn.Module) is \
        MeanPoolClassifier
    assert policy.resolve_class("support:CountingHandler", ModelHandler) is CountingHandler
    with pytest.raises(ClassRefused, match="not a subclass of apache_beam"):
        policy.resolve_class("crossinfer.models:MLP", ModelHandler)
    with pytest.raises(ClassRefused, match="not in the allow-list"):
        policy.resolve_class("support:LiveModels", object)


def test_a_class_must_be_defined_in_the_named_module(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "team_models.py").write_text(
        "from torch import nn\n"
        "from torch.nn import Linear\n"
        "class Own(nn.Module):\n    pass\n"
        "Alias = Own\n"
        "class Outer:\n    class Inner(nn.Module):\n        pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "team_models", raising=False)
    policy = LoadPolicy(allowed_classes=("team_models:*",))
    assert policy.resolve_class("team_models:Own", nn.Module).__name__ == "Own"
    with pytest.raises(ClassRefused, match="defined outside 'team_models'"):
        policy.resolve_class("team_models:Linear", nn.Module)  # imported, not defined there
    with pytest.raises(ClassRefused, match="defined outside"):
        policy.resolve_class("team_models:Alias", nn.Module)  # another name for Own
    with pytest.raises(ClassRefused, match="not an import path"):
        policy.resolve_class("team_models:Outer.Inner", nn.Module)
    with pytest.raises(ClassRefused, match="is not a class"):
        policy.resolve_class("team_models:nn", nn.Module)


@pytest.mark.parametrize("pattern", ["*", "*:*", "crossinfer.*", "crossinfer.models:MLP.*",
                                     "crossinfer.models:**", "crossinfer.models:M*", "os",
                                     ":system", "a..b:X", "mod:a.b", "mod:*\n"])
def test_class_patterns_name_a_module_and_one_class(pattern: str) -> None:
    with pytest.raises(ValueError, match="name the module"):
        parse_class_pattern(pattern)
    with pytest.raises(ValueError):
        LoadPolicy(allowed_classes=(pattern,))


def test_a_star_stands_for_one_class_of_exactly_that_module() -> None:
    policy = LoadPolicy(allowed_classes=("crossinfer.models:*", "team.handlers:Mine"))
    assert policy.class_allowed("crossinfer.models:MLP")
    assert policy.class_allowed("team.handlers:Mine")
    for name in ("crossinfer.models:torch.load", "crossinfer.models.sub:X",
                 "crossinfer.modelsx:MLP", "crossinfer:models", "team.handlers:Other",
                 "team.handlers:Mine.x"):
        assert not policy.class_allowed(name), name


# ------------------------------------------------------------------ model params


@pytest.mark.parametrize(("params", "path", "fragment"), [
    ({"sizes": [64, 10**12, 10]}, "node.model_params",
     "describe a model of 75,000,000,000,010 parameters; at most 268,435,456"),
    ({"sizes": [64, 10**30, 10]}, "node.model_params.sizes[1]", "must be a number from -2^53"),
    ({"sizes": [64, -1, 10]}, "node.model_params", "cannot be built with these params"),
    ({"sizes": [64, 1e308, 10]}, "node.model_params.sizes[1]", "must be a number from"),
    ({"command": "touch x"}, "node.model_params", "unexpected keyword argument 'command'"),
    ({"sizes": [[[[[[[[[[1]]]]]]]]]]}, "node.model_params.sizes[0][0][0][0][0][0][0]",
     "nested deeper than 8 levels"),
    ({"sizes": list(range(5000))}, "node.model_params", "holds more than 4096 values"),
])
def test_model_params_are_bounded_and_imply_a_bounded_model(
        models: DemoModels, params: dict, path: str, fragment: str) -> None:
    errors = errors_of(spec(mlp(models, model_params=params)))
    assert path in errors, errors
    assert fragment in errors[path]


def test_the_parameter_count_bound_is_a_limit() -> None:
    doc = spec({"kind": "model", "name": "m", "framework": "pytorch", "format": "state_dict",
                "uri": "m.pt", "model_class": "crossinfer.models:MLP",
                "model_params": {"sizes": [64, 64, 10]}})
    policy = LoadPolicy(check_files=True, model_roots=None)
    errors = errors_of(doc, policy, SpecLimits(max_model_parameters=1000))
    assert "describe a model of 4,810 parameters; at most 1,000" in errors["node.model_params"]


# ------------------------------------------------------------------ every bound, enforced

MODEL = {"kind": "model", "name": "m", "framework": "sklearn", "format": "skops",
         "uri": "/no/such.skops"}


def _ab(**extra: Any) -> dict:
    return spec({"kind": "ab_test", "name": "ab", **extra, "arms": [
        {"name": "a", "weight": extra.pop("_w", 1), "node": {**MODEL, "name": "m1"}},
        {"name": "b", "weight": 1, "node": {**MODEL, "name": "m2"}}]})


def _field(key: str, value: Any) -> tuple[dict, str]:
    """A spec with ``value`` at the field of FIELD_BOUNDS[key], and the error's path."""
    model = copy.deepcopy(MODEL)
    if key.startswith("model.batching."):
        name = key.rsplit(".", 1)[1]
        model["batching"] = {name: value}
        return spec(model), f"node.batching.{name}"
    if key == "model.memory.model_copies":
        model["memory"] = {"model_copies": value}
        return spec(model), "node.memory.model_copies"
    if key == "model.input_shape[]":
        model["input_shape"] = [value]
        return spec(model), "node.input_shape[0]"
    if key == "model.output":
        model["output"] = value
        return spec(model), "node.output"
    if key == "ab_test.arms[].weight":
        doc = _ab()
        doc["node"]["arms"][0]["weight"] = value
        return doc, "node.arms[0].weight"
    if key == "ab_test.seed":
        return _ab(seed=value), "node.seed"
    if key == "keyed.max_models_per_worker":
        return spec({"kind": "keyed", "name": "k", "max_models_per_worker": value,
                     "routes": [{"keys": ["a"], "node": model}]}), \
            "node.max_models_per_worker"
    if key == "keyed.shards":
        return spec({"kind": "keyed", "name": "k", "shards": value,
                     "routes": [{"keys": ["a"], "node": model}]}), "node.shards"
    if key.startswith("op."):
        op = key.split(".")[1]
        ops = {"pad_truncate": {"op": "pad_truncate", "length": value},
               "top_k": {"op": "top_k", "k": value},
               "reshape": {"op": "reshape", "shape": [value]},
               "threshold": {"op": "threshold", "index": value},
               "*": {"op": "scale", "factor": value}}
        model["postprocess"] = [ops[op]]
        return spec(model), "node.postprocess[0]"
    if key.startswith("model.{model_params"):
        model.update(framework="custom", handler_class="support:CountingHandler",
                     handler_params={"name": "x", "scale": value})
        del model["format"], model["uri"]
        return spec(model), "node.handler_params.scale"
    raise AssertionError(f"no spec for {key}")


def _outside(bound: Any) -> list[Any]:
    high = bound.maximum + 1 if bound.integer else bound.maximum * 2
    low = bound.minimum if bound.exclusive_minimum else bound.minimum - (
        1 if bound.integer else abs(bound.minimum) + 1)
    return [high, low, 10**400, -(10**400)] + ([] if bound.integer else [float("inf")]) \
        + ([0.5 + bound.minimum + 1] if bound.integer else [])


@pytest.mark.parametrize("key", list(FIELD_BOUNDS))
def test_every_field_bound_is_enforced_naming_the_field(key: str) -> None:
    bound = FIELD_BOUNDS[key]
    policy = LoadPolicy(check_files=False, allowed_classes=("support:*",))
    for value in _outside(bound):
        doc, path = _field(key, value)
        errors = errors_of(doc, policy)
        # a fraction in a list of integers is a type error of the list (decoding)
        assert path in errors or path.removesuffix("[0]") in errors, (value, errors)
    inside = bound.maximum
    if key == "op.reshape.shape[]":
        inside = 64
    doc, path = _field(key, inside)
    try:
        load_spec(doc, policy)
    except SpecError as exc:
        assert path not in exc.paths, exc


@pytest.mark.parametrize(("node", "path", "fragment"), [
    ({**MODEL, "input_shape": [1] * 9}, "node.input_shape", "needs 1 to 8 dimensions"),
    ({**MODEL, "input_shape": [1 << 20, 1 << 20]}, "node.input_shape",
     "describes 1,099,511,627,776 values per row"),
    ({**MODEL, "postprocess": [{"op": "reshape", "shape": [1 << 20, 64]}]},
     "node.postprocess[0]", "more than 16,777,216 values"),
    ({**MODEL, "postprocess": [{"op": "reshape", "shape": [-1, -1]}]},
     "node.postprocess[0]", "-1 at most once"),
    ({**MODEL, "preprocess": [{"op": "normalize", "std": [1.0] * 70000}]},
     "node.preprocess[0]", "list of 1 to 65536 finite numbers"),
    ({**MODEL, "dtype": "complex128"}, "node.dtype", "not a numeric dtype"),
    ({**MODEL, "dtype": "V1000000000"}, "node.dtype", "not a numeric dtype"),
    ({**MODEL, "dtype": "x" * 100}, "node.dtype", "not a numpy dtype name"),
    ({**MODEL, "preprocess": [{"op": "cast", "dtype": "object"}]}, "node.preprocess[0]",
     "not a numeric dtype"),
    ({**MODEL, "uri": "/m/" + "x" * 4096}, "node.uri", "longer than 4096 characters"),
    ({**MODEL, "uri": "/m/model\x00.skops"}, "node.uri", "contains a control character"),
    ({**MODEL, "output": "o" * 257}, "node.output", "at most 256 characters"),
    ({**MODEL, "inference_args": {"a": [[[[[[[[[1]]]]]]]]]}},
     "node.inference_args.a[0][0][0][0][0][0][0]",
     "nested deeper than 8 levels"),
    ({**MODEL, "uri": "file://other-host/m.skops"}, "node.uri", "file:///absolute/path"),
    ({**MODEL, "uri": "gs://bucket/models/../secrets/m.skops"}, "node.uri",
     "without '.' or '..' segments"),
    ({"kind": "keyed", "name": "k", "routes": [{"keys": ["k" * 257], "node": MODEL}]},
     "node.routes[0].keys", "longer than 256 characters"),
    ({"kind": "ab_test", "name": "ab", "salt": "s" * 257, "arms": [
        {"name": "a", "weight": 1, "node": {**MODEL, "name": "a"}},
        {"name": "b", "weight": 1, "node": {**MODEL, "name": "b"}}]}, "node.salt",
     "longer than 256 characters"),
])
def test_derived_bounds_are_enforced_naming_the_field(node: dict, path: str,
                                                      fragment: str) -> None:
    errors = errors_of(spec(node), LoadPolicy(check_files=False))
    assert path in errors, errors
    assert fragment in errors[path]


@pytest.mark.parametrize(("limits", "node", "path", "fragment"), [
    (SpecLimits(max_nodes=3), {"kind": "sequence", "name": "s", "stages": [
        {**MODEL, "name": f"m{i}"} for i in range(3)]}, "node", "has 4 nodes; at most 3"),
    (SpecLimits(max_arms=2), {"kind": "ab_test", "name": "ab", "arms": [
        {"name": f"a{i}", "weight": 1, "node": {**MODEL, "name": f"m{i}"}} for i in range(3)]},
     "node.arms", "has 3 arms; at most 2 are allowed (--max-arms)"),
    (SpecLimits(max_routes=1), {"kind": "keyed", "name": "k", "routes": [
        {"keys": [f"k{i}"], "node": {**MODEL, "name": f"m{i}"}} for i in range(2)]},
     "node.routes", "has 2 routes; at most 1"),
    (SpecLimits(max_keys=2), {"kind": "keyed", "name": "k", "routes": [
        {"keys": ["a", "b", "c"], "node": MODEL}]}, "node.routes", "has 3 keys; at most 2"),
    (SpecLimits(max_ops=1), {**MODEL, "postprocess": [{"op": "softmax"}, {"op": "argmax"}]},
     "node.postprocess", "has 2 ops; at most 1 are allowed (--max-ops)"),
])
def test_spec_size_limits_are_checked_first(limits: SpecLimits, node: dict, path: str,
                                            fragment: str) -> None:
    errors = errors_of(spec(node), LoadPolicy(check_files=False), limits)
    assert errors == {path: errors[path]}, errors  # nothing else was looked at
    assert fragment in errors[path]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="--max-nodes: must be a positive integer"):
        SpecLimits(max_nodes=0)


# ------------------------------------------------------------------ one table, three places


def _schema_at(path: str) -> dict:
    """The schema at a dotted path of ``$defs``; a number indexes a list (``oneOf.1``)."""
    node: Any = json_schema()["$defs"]
    for key in path.split("."):
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


@pytest.mark.parametrize("key", [k for k, b in FIELD_BOUNDS.items() if b.schema])
def test_the_schema_states_each_bound_of_the_table(key: str) -> None:
    bound, at = FIELD_BOUNDS[key], _schema_at(FIELD_BOUNDS[key].schema)
    assert at["type"] == ("integer" if bound.integer else "number"), at
    assert at["maximum"] == bound.maximum, at
    low = "exclusiveMinimum" if bound.exclusive_minimum else "minimum"
    assert at[low] == bound.minimum, at


def test_the_schema_states_the_sizes_it_can() -> None:
    shape = _schema_at("model.properties.input_shape")
    assert shape["maxItems"] == DERIVED_BOUNDS["model.input_shape (dimensions)"].maximum
    assert _schema_at("model.properties.uri")["maxLength"] == \
        DERIVED_BOUNDS["model.uri (length)"].maximum
    assert _schema_at("ab_test.properties.salt")["maxLength"] == \
        DERIVED_BOUNDS["ab_test.salt, keyed.routes[].keys[] (length)"].maximum
    assert "skops" in _schema_at("model.properties.format")["enum"]
    assert _schema_at("model.properties.output.oneOf.0")["maxLength"] == \
        DERIVED_BOUNDS["model.output (length)"].maximum


def _message_corpus() -> str:
    """Every message text crossinfer can produce, near enough: its sources with adjacent
    string literals joined, plus the sentences the bounds table renders."""
    source = "".join(p.read_text() for p in sorted(
        (Path(__file__).parent.parent / "python" / "crossinfer").rglob("*.py")))
    joined = re.sub(r'"\s*\n\s*[rf]*"', "", source)
    return joined + "".join(f"must be {b.describe()}" for b in FIELD_BOUNDS.values())


def test_the_refusal_table_quotes_real_messages() -> None:
    text = (DOCS / "security.md").read_text()
    table = text[text.index("## Every refusal"):text.index("## Bounds")]
    corpus = _message_corpus()
    fragments = [f for row in table.splitlines()[4:] if row.startswith("|")
                 for f in re.findall(r"`([^`]+)`", row.split("|")[3])]
    assert len(fragments) > 80
    missing = [f for f in fragments if f not in corpus]
    assert missing == []


def test_the_docs_hold_the_table() -> None:
    """docs/security.md carries ``python -m crossinfer.spec.limits``'s output verbatim."""
    assert markdown_table() in (DOCS / "security.md").read_text()


# ------------------------------------------------------------------ code-capable formats


@pytest.mark.parametrize("fmt", sorted(CODE_FORMATS))
def test_code_formats_are_refused_unless_the_policy_opts_in(fmt: str) -> None:
    framework = {"pickle": "sklearn", "joblib": "sklearn", "torchscript": "pytorch",
                 "engine": "tensorrt"}[fmt]
    node = {"kind": "model", "name": "m", "framework": framework, "format": fmt, "uri": "m.x"}
    errors = errors_of(spec(node), LoadPolicy(check_files=False))
    assert f"format {fmt!r} can run code when loaded" in errors["node.format"]
    assert f"--allow-code-format {fmt}" in errors["node.format"]
    opted = LoadPolicy(check_files=False, code_formats=(fmt,))
    try:
        load_spec(spec(node), opted)
    except SpecError as exc:
        assert "node.format" not in exc.paths


@pytest.mark.parametrize("fmt", ["pickle", "joblib"])
def test_an_evil_pickle_never_runs_without_the_opt_in(fmt: str, tmp_path: Path,
                                                      models: DemoModels) -> None:
    marker = tmp_path / "ran"
    evil = WRITERS[fmt](tmp_path / f"evil.{fmt}", marker)
    pin = sha256_of(evil)
    for sha in (None, pin):
        node = ci.ModelNode(name="evil", framework="sklearn", format=fmt, uri=str(evil),
                            sha256=sha)
        for policy in (LoadPolicy(), LoadPolicy(require_sha256=True),
                       LoadPolicy(model_roots=(str(tmp_path),), require_sha256=True)):
            with pytest.raises(SpecError, match="can run code when loaded"):
                ci.Model(node, policy=policy)
            # a worker checks again, even for a handler that was never validated
            with pytest.raises(ModelLoadError, match="can run code when loaded"):
                adapter_for(node, policy).load()
    assert not marker.exists()
    # positive control: where the policy opts in, this file does run its command
    adapter_for(node, LoadPolicy(code_formats=(fmt,))).load()
    assert marker.exists()


def test_state_dicts_load_weights_only(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = WRITERS["state_dict"](tmp_path / "evil.pt", marker)
    node = ci.ModelNode(name="evil", framework="pytorch", format="state_dict", uri=str(evil),
                        model_class="crossinfer.models:MLP",
                        model_params={"sizes": [64, 64, 10]})
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        adapter_for(node, LoadPolicy()).load()
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # positive control
    assert marker.exists()


def test_skops_loads_the_estimator_and_refuses_untrusted_types(
        tmp_path: Path, models: DemoModels, digits_data: tuple[np.ndarray, np.ndarray]) -> None:
    marker = tmp_path / "ran"
    evil = WRITERS["skops"](tmp_path / "evil.skops", marker)
    node = ci.ModelNode(name="evil", framework="sklearn", format="skops", uri=str(evil))
    with pytest.raises(ModelLoadError, match=r"outside skops' trusted defaults and the policy's "
                                             r"trusted types \(attack_payloads\.RunsCommand\)"):
        adapter_for(node, LoadPolicy()).load()
    assert not marker.exists()
    good = ci.ModelNode(name="lr", framework="sklearn", format="skops",
                        uri=models.path("digits_lr.skops"))
    estimator = adapter_for(good, LoadPolicy()).load()
    with open(models.path("digits_lr.pkl"), "rb") as f:
        pickled = pickle.load(f)
    x = digits_data[0][:50] / 16.0
    np.testing.assert_array_equal(estimator.predict_proba(x), pickled.predict_proba(x))


def test_onnx_models_with_external_data_are_refused(tmp_path: Path, models: DemoModels) -> None:
    import onnx

    model = onnx.load(models.path("digits_mlp.onnx"))
    onnx.save_model(model, str(tmp_path / "split.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    node = ci.ModelNode(name="split", framework="onnx", uri=str(tmp_path / "split.onnx"))
    with pytest.raises(ModelLoadError, match="keeps tensors in external data files"):
        adapter_for(node, LoadPolicy()).load()


# ------------------------------------------------------------------ locations


def test_one_normalisation_for_checks_and_loads(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                models: DemoModels) -> None:
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(models.path("digits_lr.skops"), root / "lr.skops")
    policy = LoadPolicy(model_roots=(str(root),))
    real = str(root / "lr.skops")
    assert policy.resolve_location(f"file://{real}") == real
    assert policy.resolve_location(f"file://localhost{real}") == real
    monkeypatch.chdir(tmp_path)
    assert policy.resolve_location("models/lr.skops") == real  # against the constructing cwd
    adapter = adapter_for(ci.ModelNode(name="lr", framework="sklearn", format="skops",
                                       uri="models/lr.skops"), policy)
    assert adapter.location == real
    monkeypatch.chdir("/")  # a worker's working directory is not the constructor's
    assert adapter.load() is not None
    (root / "link.skops").symlink_to(models.path("digits_lr.skops"))  # points outside
    for uri in ("models/link.skops", "models/../models/../../etc/passwd",
                f"file://{tmp_path}/elsewhere.skops"):
        with pytest.raises(LocationRefused, match="outside the allowed model roots"):
            policy.resolve_location(uri if uri.startswith("file") else str(tmp_path / uri))
    for bad in ("", "x\x00y", "x\ny", "file://host/x", "file:relative", "gs://b/./m"):
        with pytest.raises(LocationRefused):
            normalize_uri(bad)
    remote = LoadPolicy(model_roots=("gs://bucket/models",))
    assert remote.resolve_location("gs://bucket/models/m.skops") == "gs://bucket/models/m.skops"
    assert remote.location_problem("gs://bucket/models-x/m.skops")
    assert remote.location_problem("gs://bucket/models/../m.skops")


def test_workers_refuse_a_location_that_changed_since_construction(
        tmp_path: Path, models: DemoModels) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "team").mkdir(parents=True)
    outside.mkdir()
    for d in (root / "team", outside):
        shutil.copy(models.path("digits_lr.skops"), d / "lr.skops")
    policy = LoadPolicy(model_roots=(str(root),))
    node = ci.ModelNode(name="lr", framework="sklearn", format="skops",
                        uri=str(root / "team" / "lr.skops"), preprocess=(SCALE,))
    handler = model_handler(node, policy, "lr")
    shipped = pickle.loads(pickle.dumps(handler))  # what a worker receives
    assert shipped.adapter.policy == policy

    def swap() -> None:
        shutil.rmtree(root / "team")
        (root / "team").symlink_to(outside)  # the directory now leads out of the root

    # In a pipeline the refusal fails the model's elements, each saying why.
    results, failures = run_after(swap, ci.Model(node, policy=policy))
    assert results == [] and len(failures) == ROWS
    assert all(f.error.startswith(f"model 'lr' could not be loaded from {node.uri!r}: ")
               and "outside the allowed model roots" in f.error for f in failures), failures[0]
    with pytest.raises(ModelLoadError, match="outside the allowed model roots"):
        shipped.adapter.load()
    assert "outside the allowed model roots" in (shipped.load_model().load_error() or "")


def test_workers_verify_the_pin_on_the_bytes_they_load(tmp_path: Path,
                                                       models: DemoModels) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "lr.pkl"
    shutil.copy(models.path("digits_lr.pkl"), path)
    policy = LoadPolicy(model_roots=(str(tmp_path),), code_formats=("pickle",))
    node = ci.ModelNode(name="lr", framework="sklearn", format="pickle", uri=str(path),
                        sha256=sha256_of(path))
    handler = model_handler(node, policy, "lr")
    assert handler.load_model().load_error() is None
    # Swapped after construction: in a pipeline the refusal fails the model's
    # elements, each saying why, and the file's payload never runs.
    results, failures = run_after(lambda: WRITERS["pickle"](path, marker),
                                  ci.Model(node, policy=policy))
    assert results == [] and len(failures) == ROWS
    assert all(f"the SHA-256 of {str(path)!r} is " in f.error and "refusing to load it"
               in f.error for f in failures), failures[0]
    with pytest.raises(ModelLoadError, match="refusing to load it"):
        handler.adapter.load()
    assert "refusing to load it" in (handler.load_model().load_error() or "")
    assert not marker.exists()
    unpinned = model_handler(ci.ModelNode(name="lr", framework="sklearn", format="pickle",
                                          uri=str(path)), policy, "lr")
    unpinned.load_model()  # positive control: the opt-in without a pin runs it
    assert marker.exists()


def test_workers_require_pins_when_the_policy_does(tmp_path: Path, models: DemoModels) -> None:
    node = ci.ModelNode(name="lr", framework="sklearn", format="skops",
                        uri=models.path("digits_lr.skops"))
    with pytest.raises(ModelLoadError, match="no sha256 pin, and the policy requires one"):
        adapter_for(node, LoadPolicy(require_sha256=True)).load()


def test_spec_json_round_trip_keeps_the_new_format(models: DemoModels) -> None:
    text = json.dumps(spec(lr(models)))
    assert load_spec(text).node.format == "skops"
    assert os.path.isfile(load_spec(text).node.uri)


# ------------------------------------------------------------------ Python pipelines


def test_skops_trust_lets_a_listed_type_load_in_a_pipeline(tmp_path: Path,
                                                           digits_data: Any) -> None:
    """skops' defaults do not trust sklearn's Tree (every decision tree and forest
    holds one): refused unless the policy lists it; listed, a real pipeline gives
    the tree's own predictions."""
    import skops.io
    from sklearn.tree import DecisionTreeClassifier

    x, y = digits_data
    tree = DecisionTreeClassifier(max_depth=6, random_state=0).fit(x / 16.0, y)
    skops.io.dump(tree, tmp_path / "tree.skops")
    node = {"kind": "model", "name": "tree", "framework": "sklearn", "format": "skops",
            "uri": str(tmp_path / "tree.skops"), "method": "predict_proba"}
    _, refused = run_after(lambda: None, ci.Inference(spec(node)))
    assert len(refused) == ROWS and all(
        "sklearn.tree._tree.Tree" in f.error and "--skops-trust" in f.error for f in refused)
    trusted = LoadPolicy(skops_trusted=("sklearn.tree._tree.Tree",))
    results, failures = run_after(lambda: None, ci.Inference(spec(node), policy=trusted))
    assert failures == [] and len(results) == ROWS
    for row in results:
        want = tree.predict_proba(np.full((1, 64), float(row.id), np.float32))[0]
        np.testing.assert_allclose(row.inference, want, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="is not a type name"):
        LoadPolicy(skops_trusted=("Tree",))


def test_the_require_sha256_refusal_names_the_policy(models: DemoModels) -> None:
    """Plain Python has no service: the refusal names the policy's setting."""
    node = {"kind": "model", "name": "lr", "framework": "sklearn", "format": "skops",
            "uri": models.path("digits_lr.skops")}
    with pytest.raises(SpecError, match=r"require_sha256=True"):
        ci.Inference(spec({**node, "sha256": None}), policy=LoadPolicy(require_sha256=True))


def test_python_transforms_take_spec_limits(models: DemoModels) -> None:
    """A Python user can raise --max-arms' counterpart (default 16 arms)."""
    arm = {"kind": "model", "name": "m", "framework": "sklearn", "format": "skops",
           "uri": models.path("digits_lr.skops")}
    ab = spec({"kind": "ab_test", "name": "ab", "arms": [
        {"name": f"a{i}", "weight": 1, "node": {**arm, "name": f"m{i}"}} for i in range(20)]})
    with pytest.raises(SpecError, match="arms; at most 16"):
        ci.Inference(ab)
    assert len(ci.Inference(ab, limits=SpecLimits(max_arms=20, max_nodes=64))
               .spec.node.arms) == 20


def test_a_relative_location_refusal_shows_where_it_resolved(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    policy = LoadPolicy(model_roots=(str(tmp_path / "models"),))
    with pytest.raises(LocationRefused) as info:
        policy.resolve_location("digits_lr.skops")
    message = str(info.value)
    assert f"(that is '{tmp_path / 'digits_lr.skops'}')" in message
    assert "not against a model root: give the full path" in message
