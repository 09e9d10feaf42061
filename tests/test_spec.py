"""The inference spec: round trips, the published schema, field-path errors."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import jsonschema
import pytest

from crossinfer import spec as S
from crossinfer.policy import CODE_FORMATS, LoadPolicy
from crossinfer.processing.ops import REGISTRY

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.json"))
GOLDEN_POLICY = LoadPolicy(allowed_classes=("crossinfer.models:*", "mycompany.handlers:*"),
                           check_files=False, code_formats=tuple(CODE_FORMATS))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_specs_round_trip_json_objects_json_unchanged(path: Path) -> None:
    text = path.read_text()
    spec = S.load_spec(text, GOLDEN_POLICY)
    assert S.spec_to_json(spec) + "\n" == text


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_specs_are_valid_under_the_published_json_schema(path: Path) -> None:
    jsonschema.validate(json.loads(path.read_text()), S.json_schema())


def test_golden_files_cover_every_node_kind_framework_and_op() -> None:
    kinds, frameworks, ops = set(), set(), set()
    for path in GOLDEN:
        for _, node in S.walk(S.spec_from_json(path.read_text()).node):
            kinds.add(node.kind)
            if isinstance(node, S.ModelNode):
                frameworks.add(node.framework)
                ops.update(op.name for op in (*node.preprocess, *node.postprocess))
    assert kinds == {"model", "ab_test", "sequence", "keyed"}
    assert frameworks == {"pytorch", "onnx", "sklearn", "tensorrt", "custom"}
    assert ops == set(REGISTRY)


def test_json_schema_and_dataclasses_name_the_same_fields() -> None:
    defs = S.json_schema()["$defs"]
    for kind, cls in (("model", S.ModelNode), ("ab_test", S.ABTestNode),
                      ("sequence", S.SequenceNode), ("keyed", S.KeyedNode)):
        assert set(defs[kind]["properties"]) == {f.name for f in fields(cls)} | {"kind"}, kind
    assert set(defs["op"]["properties"]["op"]["enum"]) == set(REGISTRY)


def _model(**overrides: object) -> dict:
    node = {"kind": "model", "name": "m", "framework": "sklearn", "format": "skops",
            "uri": "/no/such/model.skops"}
    node.update(overrides)
    return node


def _ab(*arms: dict, **extra: object) -> dict:
    return {"version": 1, "node": {"kind": "ab_test", "name": "exp", **extra,
                                   "arms": [{"name": f"a{i}", "weight": 1, "node": n}
                                            for i, n in enumerate(arms)]}}


def _errors(doc: object, policy: LoadPolicy | None = None) -> dict[str, str]:
    with pytest.raises(S.SpecError) as info:
        S.load_spec(doc, policy)  # type: ignore[arg-type]
    return dict(info.value.errors)


def test_a_missing_model_file_is_named_by_its_field_path(tmp_path: Path) -> None:
    present = tmp_path / "m.pkl"
    present.write_bytes(b"x")
    errors = _errors(_ab(_model(name="ok", uri=str(present)), _model(name="gone")))
    assert errors == {"node.arms[1].node.uri": "no such file '/no/such/model.skops'"}


@pytest.mark.parametrize(("doc", "path", "fragment"), [
    (_ab(_model(name="a"), _model(name="b", framework="torch")),
     "node.arms[1].node.framework", "expected one of 'pytorch'"),
    (_ab(_model(name="a"), {**_model(name="b"), "wieght": 1}),
     "node.arms[1].node.wieght", "unknown field"),
    ({"version": 2, "node": _model()}, "version", "unsupported spec version 2"),
    ({"version": 1}, "node", "is required"),
    (_ab(_model(name="a"), _model(name="a")), "node.arms[1].node.name", "already used"),
    (_ab(_model(name="a", postprocess=[{"op": "sofmax"}]), _model(name="b")),
     "node.arms[0].node.postprocess[0]", "unknown op 'sofmax'"),
    (_ab(_model(name="a", preprocess=[{"op": "argmax"}]), _model(name="b")),
     "node.arms[0].node.preprocess[0]", "only be used in postprocess"),
    (_ab(_model(name="a", postprocess=[{"op": "top_k", "k": 0}]), _model(name="b")),
     "node.arms[0].node.postprocess[0]", "'k' must be an integer from 1 to 2^16, got 0"),
    (_ab(_model(name="a", framework="pytorch", format="state_dict", model_class="os:system"),
         _model(name="b")),
     "node.arms[0].node.model_class", "not in the allow-list"),
    (_ab(_model(name="a", framework="custom", handler_class="evil.mod:Handler"),
         _model(name="b")),
     "node.arms[0].node.handler_class", "not in the allow-list"),
    (_ab(_model(name="a", sha256="abc"), _model(name="b")),
     "node.arms[0].node.sha256", "64 lowercase hex"),
    (_ab(_model(name="a", batching={"min_batch_size": 9, "max_batch_size": 4}),
         _model(name="b")),
     "node.arms[0].node.batching.min_batch_size", "larger than max_batch_size"),
    (_ab(_model(name="a", batching={"max_batch_size": "big"}), _model(name="b")),
     "node.arms[0].node.batching.max_batch_size", "expected an integer"),
    (_ab(_model(name="a"), _model(name="b"), split="sticky"), "node.split", "expected one of"),
    (_ab(_model(name="a")), "node.arms", "at least two arms"),
    ({"version": 1, "node": {"kind": "keyed", "name": "k", "routes": [
        {"keys": ["x"], "node": _model(name="a")}, {"keys": ["x"], "node": _model(name="b")}]}},
     "node.routes[1].keys", "already routed by routes[0]"),
    ({"version": 1, "node": {"kind": "keyed", "name": "k", "routes": [
        {"keys": ["x"], "node": {"kind": "sequence", "name": "s", "stages": []}}]}},
     "node.routes[0].node.kind", "keyed routes take model nodes"),
    ({"version": 1, "node": _model(method="predict_log")}, "node.method", "expected one of"),
])
def test_invalid_specs_fail_naming_the_field(doc: dict, path: str, fragment: str) -> None:
    errors = _errors(doc, LoadPolicy(check_files=False))
    assert path in errors, errors
    assert fragment in errors[path]


def test_models_outside_the_allowed_roots_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.pkl"
    outside.write_bytes(b"x")
    policy = LoadPolicy(model_roots=(str(tmp_path / "models"),))
    errors = _errors({"version": 1, "node": _model(uri=str(outside))}, policy)
    assert "outside the allowed model roots" in errors["node.uri"]
    traversal = str(tmp_path / "models" / ".." / "elsewhere.pkl")
    errors = _errors({"version": 1, "node": _model(uri=traversal)}, policy)
    assert "outside the allowed model roots" in errors["node.uri"]


def test_every_problem_is_reported_at_once() -> None:
    doc = _ab(_model(name="a", device="tpu"), _model(name="b", dtype="float99"))
    errors = _errors(doc, LoadPolicy(check_files=False))
    assert {"node.arms[0].node.device", "node.arms[1].node.dtype"} <= set(errors)


def test_error_text_is_one_line_per_field() -> None:
    with pytest.raises(S.SpecError, match=r"node\.arms\[1\]\.node\.uri: no such file"):
        S.load_spec(_ab(_model(name="a", uri=__file__), _model(name="b")))


def test_python_functions_work_in_python_but_cannot_be_written_to_json() -> None:
    node = S.ModelNode(name="m", framework="sklearn", uri="m.pkl", preprocess=(abs,))
    with pytest.raises(S.SpecError, match=r"node\.preprocess\[0\]: the Python function 'abs'"):
        S.spec_to_json(S.InferenceSpec(node=node))


def test_defaults_are_left_out_of_the_canonical_json() -> None:
    node = S.ModelNode(name="m", framework="onnx", uri="m.onnx")
    assert S.node_to_dict(node) == {"kind": "model", "name": "m", "framework": "onnx",
                                    "uri": "m.onnx"}


def test_the_published_schema_is_the_one_the_declarations_generate() -> None:
    """schema.json is generated (python -m crossinfer.spec.schema), never edited by hand."""
    from crossinfer.spec.schema import SCHEMA_FILE, render

    assert SCHEMA_FILE.read_text() == render(), \
        "schema.json is stale: run .venv/bin/python -m crossinfer.spec.schema"
    assert S.json_schema() == json.loads(render())


def test_a_refusal_lists_broken_fields_and_broken_relations_together() -> None:
    """A bound broken in one field does not hide a name used twice elsewhere."""
    errors = _errors(_ab(_model(name="m", batching={"min_batch_size": 8, "max_batch_size": 4}),
                         _model(name="m", batching={"max_batch_size": 0})),
                     LoadPolicy(check_files=False))
    assert errors == {
        "node.arms[1].node.batching.max_batch_size":
            "must be an integer from 1 to 100,000, got 0",
        "node.arms[1].node.name": "name 'm' is already used at node.arms[0].node.name; node "
                                  "names must be unique within a spec",
        "node.arms[0].node.batching.min_batch_size": "8 is larger than max_batch_size 4",
    }
