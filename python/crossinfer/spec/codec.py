"""JSON <-> spec objects.

Decoding checks structure (required fields, types, unknown fields) and collects
every problem with its field path before raising one :class:`SpecError`.
Encoding writes the canonical form: fields in declaration order, fields equal
to their default left out. Canonical JSON round-trips unchanged.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any

from crossinfer.spec.errors import ErrorCollector, SpecError
from crossinfer.spec.nodes import (
    NODE_TYPES,
    SPEC_VERSION,
    ABTestNode,
    Arm,
    Batching,
    InferenceSpec,
    KeyedNode,
    Memory,
    ModelNode,
    Node,
    Op,
    Route,
    SequenceNode,
    Step,
)

_MISSING = object()


class _Reader:
    """Reads one JSON object at a path, recording type and field errors."""

    def __init__(self, obj: Any, path: str, errors: ErrorCollector, allowed: tuple[str, ...]):
        self.path = path
        self.errors = errors
        self.ok = isinstance(obj, dict)
        self.obj: dict[str, Any] = obj if self.ok else {}
        if not self.ok:
            errors.add(path, f"expected an object, got {_type_name(obj)}")
            return
        for key in self.obj:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
                errors.add(f"{path}.{key}", f"unknown field{suggestion}")

    def at(self, name: str) -> str:
        return f"{self.path}.{name}"

    def get(self, name: str, check: Callable[[Any], bool], expected: str,
            default: Any = None, required: bool = False) -> Any:
        value = self.obj.get(name, _MISSING)
        if value is _MISSING or (value is None and not required):
            if required and self.ok:
                self.errors.add(self.at(name), "is required")
            return default
        if not check(value):
            self.errors.add(self.at(name), f"expected {expected}, got {_describe(value)}")
            return default
        return value

    def string(self, name: str, required: bool = False, default: Any = None) -> Any:
        return self.get(name, lambda v: isinstance(v, str), "a string", default, required)

    def integer(self, name: str, default: Any = None) -> Any:
        return self.get(name, _is_int, "an integer", default)

    def number(self, name: str, default: Any = None) -> Any:
        return self.get(name, _is_number, "a number", default)

    def boolean(self, name: str, default: Any = None) -> Any:
        return self.get(name, lambda v: isinstance(v, bool), "true or false", default)

    def mapping(self, name: str) -> dict[str, Any]:
        return dict(self.get(name, lambda v: isinstance(v, dict), "an object", {}))

    def array(self, name: str, required: bool = False) -> list[Any]:
        return list(self.get(name, lambda v: isinstance(v, list), "an array", [], required))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__)


def _describe(value: Any) -> str:
    text = json.dumps(value) if _is_jsonable(value) else repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{_type_name(value)} {text}" if not isinstance(value, (dict, list)) else _type_name(
        value)


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _allowed(cls: type, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls)) + extra


# ---------------------------------------------------------------- decoding


def spec_from_dict(doc: Any) -> InferenceSpec:
    """Decode a spec document, raising :class:`SpecError` naming every bad field."""
    errors = ErrorCollector()
    reader = _Reader(doc, "$", errors, ("version", "node"))
    if not reader.ok:
        errors.raise_if_any()
    version = doc.get("version", _MISSING)
    if version is _MISSING:
        errors.add("version", f"is required (this library reads version {SPEC_VERSION})")
    elif not _is_int(version) or version != SPEC_VERSION:
        errors.add("version", f"unsupported spec version {version!r}; this library reads "
                              f"version {SPEC_VERSION}")
    if "node" not in doc:
        errors.add("node", "is required")
        errors.raise_if_any()
    node = _node(doc["node"], "node", errors)
    errors.raise_if_any()
    assert node is not None
    return InferenceSpec(node=node, version=SPEC_VERSION)


def spec_from_json(text: str) -> InferenceSpec:
    """Decode a spec from JSON text."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([("$", f"not valid JSON: {exc}")]) from exc
    return spec_from_dict(doc)


def node_from_dict(obj: Any, path: str = "node") -> Node:
    """Decode one node (without the document envelope)."""
    errors = ErrorCollector()
    node = _node(obj, path, errors)
    errors.raise_if_any()
    assert node is not None
    return node


def _node(obj: Any, path: str, errors: ErrorCollector) -> Node | None:
    if not isinstance(obj, dict):
        errors.add(path, f"expected a node object, got {_type_name(obj)}")
        return None
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in NODE_TYPES:
        known = ", ".join(repr(k) for k in NODE_TYPES)
        errors.add(f"{path}.kind", f"expected one of {known}, got {kind!r}")
        return None
    decoder = {"model": _model, "ab_test": _ab_test, "sequence": _sequence, "keyed": _keyed}
    return decoder[kind](obj, path, errors)


def _model(obj: dict[str, Any], path: str, errors: ErrorCollector) -> ModelNode | None:
    r = _Reader(obj, path, errors, _allowed(ModelNode, ("kind",)))
    name = r.string("name", required=True)
    framework = r.string("framework", required=True)
    input_shape = r.get("input_shape", lambda v: isinstance(v, list) and all(
        _is_int(d) for d in v), "an array of integers")
    batching = _batching(obj.get("batching"), r.at("batching"), errors)
    memory = _memory(obj.get("memory"), r.at("memory"), errors)
    node = ModelNode(
        name=name or "",
        framework=framework or "",
        uri=r.string("uri"),
        format=r.string("format"),
        model_class=r.string("model_class"),
        model_params=r.mapping("model_params"),
        handler_class=r.string("handler_class"),
        handler_params=r.mapping("handler_params"),
        method=r.string("method"),
        inference_args=r.mapping("inference_args"),
        output=r.get("output", lambda v: isinstance(v, str) or _is_int(v),
                     "a string (an output's name) or an integer (its index)"),
        device=r.string("device", default="cpu"),
        dtype=r.string("dtype", default="float32"),
        input_shape=tuple(input_shape) if input_shape is not None else None,
        batching=batching,
        memory=memory,
        preprocess=_ops(r.array("preprocess"), r.at("preprocess"), errors),
        postprocess=_ops(r.array("postprocess"), r.at("postprocess"), errors),
        sha256=r.string("sha256"),
    )
    return node if name is not None and framework is not None else None


def _batching(obj: Any, path: str, errors: ErrorCollector) -> Batching:
    if obj is None:
        return Batching()
    r = _Reader(obj, path, errors, _allowed(Batching))
    return Batching(
        min_batch_size=r.integer("min_batch_size"),
        max_batch_size=r.integer("max_batch_size"),
        max_wait_secs=r.number("max_wait_secs"),
    )


def _memory(obj: Any, path: str, errors: ErrorCollector) -> Memory:
    if obj is None:
        return Memory()
    r = _Reader(obj, path, errors, _allowed(Memory))
    return Memory(
        large_model=r.boolean("large_model", default=False),
        model_copies=r.integer("model_copies"),
    )


def _ops(items: list[Any], path: str, errors: ErrorCollector) -> tuple[Step, ...]:
    ops: list[Step] = []
    for i, item in enumerate(items):
        at = f"{path}[{i}]"
        if not isinstance(item, dict):
            errors.add(at, f"expected an op object like {{\"op\": \"softmax\"}}, got "
                           f"{_type_name(item)}")
            continue
        name = item.get("op")
        if not isinstance(name, str):
            errors.add(f"{at}.op", "is required: the op's name, e.g. \"softmax\"")
            continue
        ops.append(Op(name, {k: v for k, v in item.items() if k != "op"}))
    return tuple(ops)


def _ab_test(obj: dict[str, Any], path: str, errors: ErrorCollector) -> ABTestNode | None:
    r = _Reader(obj, path, errors, _allowed(ABTestNode, ("kind",)))
    name = r.string("name", required=True)
    arms: list[Arm] = []
    for i, arm_obj in enumerate(r.array("arms", required=True)):
        at = f"{path}.arms[{i}]"
        ar = _Reader(arm_obj, at, errors, _allowed(Arm))
        if not ar.ok:
            continue
        arm_name = ar.string("name", required=True)
        weight = ar.number("weight", default=1.0)
        if "node" not in arm_obj:
            errors.add(f"{at}.node", "is required")
            continue
        child = _node(arm_obj["node"], f"{at}.node", errors)
        if arm_name is not None and child is not None:
            arms.append(Arm(name=arm_name, node=child, weight=weight))
    node = ABTestNode(
        name=name or "",
        arms=tuple(arms),
        split=r.string("split", default="random"),
        seed=r.integer("seed", default=0),
        salt=r.string("salt"),
    )
    return node if name is not None else None


def _sequence(obj: dict[str, Any], path: str, errors: ErrorCollector) -> SequenceNode | None:
    r = _Reader(obj, path, errors, _allowed(SequenceNode, ("kind",)))
    name = r.string("name", required=True)
    stages = [_node(s, f"{path}.stages[{i}]", errors)
              for i, s in enumerate(r.array("stages", required=True))]
    if name is None:
        return None
    return SequenceNode(name=name, stages=tuple(s for s in stages if s is not None))


def _keyed(obj: dict[str, Any], path: str, errors: ErrorCollector) -> KeyedNode | None:
    r = _Reader(obj, path, errors, _allowed(KeyedNode, ("kind",)))
    name = r.string("name", required=True)
    routes: list[Route] = []
    for i, route_obj in enumerate(r.array("routes", required=True)):
        at = f"{path}.routes[{i}]"
        rr = _Reader(route_obj, at, errors, _allowed(Route))
        if not rr.ok:
            continue
        keys = rr.get("keys", lambda v: isinstance(v, list) and all(
            isinstance(k, str) for k in v), "an array of strings", required=True)
        if "node" not in route_obj:
            errors.add(f"{at}.node", "is required")
            continue
        child = _node(route_obj["node"], f"{at}.node", errors)
        if child is not None and not isinstance(child, ModelNode):
            errors.add(f"{at}.node.kind", f"keyed routes take model nodes, got {child.kind!r}")
            continue
        if keys is not None and child is not None:
            routes.append(Route(keys=tuple(keys), node=child))
    default = None
    if obj.get("default") is not None:
        default_node = _node(obj["default"], f"{path}.default", errors)
        if default_node is not None and not isinstance(default_node, ModelNode):
            errors.add(f"{path}.default.kind",
                       f"the default route takes a model node, got {default_node.kind!r}")
        elif isinstance(default_node, ModelNode):
            default = default_node
    node = KeyedNode(
        name=name or "",
        routes=tuple(routes),
        default=default,
        max_models_per_worker=r.integer("max_models_per_worker"),
        shards=r.integer("shards"),
    )
    return node if name is not None else None


# ---------------------------------------------------------------- encoding


def spec_to_dict(spec: InferenceSpec) -> dict[str, Any]:
    """The canonical JSON object of ``spec`` (defaults left out)."""
    return {"version": spec.version, "node": node_to_dict(spec.node, "node")}


def spec_to_json(spec: InferenceSpec, indent: int | None = 2) -> str:
    return json.dumps(spec_to_dict(spec), indent=indent)


def node_to_dict(node: Node, path: str = "node") -> dict[str, Any]:
    out: dict[str, Any] = {"kind": node.kind}
    for f in fields(node):  # type: ignore[arg-type]
        value = getattr(node, f.name)
        if _is_default(f, value):
            continue
        at = f"{path}.{f.name}"
        if f.name in ("arms",):
            out[f.name] = [_arm_to_dict(a, f"{at}[{i}]") for i, a in enumerate(value)]
        elif f.name == "stages":
            out[f.name] = [node_to_dict(s, f"{at}[{i}]") for i, s in enumerate(value)]
        elif f.name == "routes":
            out[f.name] = [{"keys": list(r.keys), "node": node_to_dict(r.node, f"{at}[{i}].node")}
                           for i, r in enumerate(value)]
        elif f.name == "default":
            out[f.name] = node_to_dict(value, at)
        elif f.name in ("preprocess", "postprocess"):
            out[f.name] = [_op_to_dict(op, f"{at}[{i}]") for i, op in enumerate(value)]
        elif f.name in ("batching", "memory"):
            out[f.name] = {g.name: getattr(value, g.name) for g in fields(value)
                           if not _is_default(g, getattr(value, g.name))}
        elif f.name == "input_shape":
            out[f.name] = list(value)
        elif isinstance(value, Mapping):
            out[f.name] = dict(value)
        else:
            out[f.name] = value
    return out


def _arm_to_dict(arm: Arm, path: str) -> dict[str, Any]:
    return {"name": arm.name, "weight": arm.weight, "node": node_to_dict(arm.node, f"{path}.node")}


def _op_to_dict(op: Step, path: str) -> dict[str, Any]:
    if not isinstance(op, Op):
        raise SpecError([(path, f"the Python function {getattr(op, '__name__', op)!r} cannot be "
                                "written to JSON; use a named op so other languages and the "
                                "expansion service can read the spec")])
    return {"op": op.name, **dict(op.params)}


def _is_default(f: Any, value: Any) -> bool:
    if f.default is not MISSING:
        return value == f.default
    if f.default_factory is not MISSING:
        return value == f.default_factory()
    return False
