"""JSON <-> spec objects, both ways derived from the declarations in :mod:`.nodes`.

Decoding is pydantic reading the declarations: every field's type and rule
is checked (nothing is coerced), every problem is collected with its field
path (``node.arms[1].node.framework``), and one :class:`SpecError` lists them
all. :func:`checked` does the same for a spec built in Python.

Encoding writes the canonical form: fields in declaration order (``kind``
first; a class may state another order as ``json_order``), fields equal to
their default left out unless declared ``ALWAYS``, ops flat, numbers as
given. Canonical JSON round-trips unchanged.
"""

from __future__ import annotations

import difflib
import functools
import json
import types
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter, ValidationError

from crossinfer.spec.constraints import LENIENT, REFUSED, describe, type_name
from crossinfer.spec.errors import SpecError
from crossinfer.spec.nodes import (
    NODE_TYPES,
    SPEC_VERSION,
    ABTestNode,
    AnyNode,
    InferenceSpec,
    KeyedNode,
    ModelNode,
    Node,
    Op,
    SequenceNode,
)
from crossinfer.spec.relations import relation_problems

#: What a pydantic type error expected, in the words of a JSON document.
_EXPECTED = {
    "string_type": "a string", "bool_type": "true or false", "int_type": "an integer",
    "float_type": "a number", "dict_type": "an object", "mapping_type": "an object",
    "dataclass_type": "an object", "dataclass_args_type": "an object",
    "model_attributes_type": "an object", "tuple_type": "an array", "list_type": "an array",
    "iterable_type": "an array",
}

# ---------------------------------------------------------------- decoding


def spec_from_dict(doc: Any) -> InferenceSpec:
    """Decode a spec document, raising :class:`SpecError` naming every bad field."""
    if not isinstance(doc, dict):
        raise SpecError([("$", f"expected an object, got {type_name(doc)}")])
    problems: list[tuple[str, str]] = []
    if "version" not in doc:
        problems.append(("version", f"is required (this library reads version {SPEC_VERSION})"))
    try:
        spec: InferenceSpec = _validate(InferenceSpec, doc, "")
    except SpecError as exc:
        problems += exc.errors
    if problems:
        raise SpecError(problems)
    return spec


def spec_from_json(text: str) -> InferenceSpec:
    """Decode a spec from JSON text."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([("$", f"not valid JSON: {exc}")]) from exc
    return spec_from_dict(doc)


def node_from_dict(obj: Any, path: str = "node") -> Node:
    """Decode one node (without the document envelope)."""
    node: Node = _validate(AnyNode, obj, path)
    return node


def checked(spec: InferenceSpec) -> InferenceSpec:
    """``spec`` (built in Python or decoded) with every field checked against its
    declaration: a normalised copy (tuples for lists), or :class:`SpecError`."""
    result: InferenceSpec = _validate(InferenceSpec, spec, "")
    return result


def _validate(declared: Any, value: Any, path: str) -> Any:
    """``value`` validated as ``declared``, or SpecError naming each problem.

    When the only problems are fields that break their own rules (a bound, a
    name's pattern), the value is read again without the rules (:data:`LENIENT`)
    so that the refusal also names the problems between fields
    (:mod:`crossinfer.spec.relations`), as one list."""
    try:
        return _adapter(declared).validate_python(value)
    except ValidationError as exc:
        problems = field_problems(exc, declared, path)
        if all(err["type"] == REFUSED for err in exc.errors(include_url=False)):
            try:
                lenient = _adapter(declared).validate_python(value, context=LENIENT)
            except ValidationError:
                lenient = None
            if lenient is not None:
                root = lenient.node if isinstance(lenient, InferenceSpec) else lenient
                more = relation_problems(root, _path(path, ["node"]) if isinstance(
                    lenient, InferenceSpec) else path)
                problems += [p for p in more if p not in problems]
        raise SpecError(problems) from None


@functools.cache
def _adapter(declared: Any) -> TypeAdapter[Any]:
    return TypeAdapter(declared)


def field_problems(exc: ValidationError, root: Any, path: str) -> list[tuple[str, str]]:
    """``(field path, message)`` for each error pydantic found under ``root``."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        parts, owner = _resolve(root, err["loc"])
        at = _path(path, parts)
        ctx = err.get("ctx") or {}
        kind = err["type"]
        if kind == REFUSED:
            problems += [(at + suffix, message) for suffix, message in ctx["problems"]]
        elif kind == "missing":
            problems.append((at, "is required"))
        elif kind in ("unexpected_keyword_argument", "extra_forbidden"):
            names = [f.name for f in fields(owner)] if owner else []
            hint = difflib.get_close_matches(str(parts[-1]), names, n=1) if parts else []
            problems.append((at, "unknown field" + (f"; did you mean '{hint[0]}'?" if hint
                                                    else "")))
        elif kind in _EXPECTED:
            problems.append((at, f"expected {_EXPECTED[kind]}, got {describe(err['input'])}"))
        else:  # pragma: no cover - a rule without a sentence of its own
            problems.append((at, str(err["msg"])))
    return problems


def _resolve(root: Any, loc: Sequence[str | int]) -> tuple[list[str | int], type | None]:
    """The field path of pydantic's ``loc`` under the declared type ``root`` (without
    the node kinds pydantic inserts at each node), and the dataclass owning its
    last field (None when the last step is not a field)."""
    parts: list[str | int] = []
    owner: type | None = None
    declared: Any = root
    for item in loc:
        declared = _unwrap(declared)
        kinds = _node_kinds(declared)
        if kinds is not None and item in kinds:
            declared = kinds[item]
            continue
        parts.append(item)
        owner = None
        if isinstance(declared, type) and is_dataclass(declared):
            owner = declared
            declared = _hints(declared).get(str(item))
        elif get_origin(declared) is tuple:
            declared = get_args(declared)[0]
        else:
            declared = None
    return parts, owner


def _unwrap(declared: Any) -> Any:
    """The type under ``Annotated[...]`` and ``... | None``."""
    while True:
        origin = get_origin(declared)
        if origin is Annotated:
            declared = get_args(declared)[0]
        elif origin in (Union, types.UnionType) and type(None) in get_args(declared):
            rest = [a for a in get_args(declared) if a is not type(None)]
            declared = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007
        else:
            return declared


def _node_kinds(declared: Any) -> Mapping[str | int, type] | None:
    """``{kind: class}`` when ``declared`` is the union of node classes, else None."""
    if get_origin(declared) not in (Union, types.UnionType):
        return None
    members = [_unwrap(a) for a in get_args(declared)]
    if not all(m in NODE_TYPES.values() for m in members):
        return None
    return {m.kind: m for m in members}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)


def _path(root: str, parts: Sequence[str | int]) -> str:
    text = root
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "$"


# ---------------------------------------------------------------- encoding


def spec_to_dict(spec: InferenceSpec) -> dict[str, Any]:
    """The canonical JSON object of ``spec`` (defaults left out)."""
    return {"version": spec.version, "node": node_to_dict(spec.node, "node")}


def spec_to_json(spec: InferenceSpec, indent: int | None = 2) -> str:
    return json.dumps(spec_to_dict(spec), indent=indent)


def node_to_dict(node: Node, path: str = "node") -> dict[str, Any]:
    """The canonical JSON object of one node.

    Raises SpecError for a Python function among its ops (it has no JSON form).
    """
    encoded: dict[str, Any] = _encode(node, path)
    return encoded


def _encode(value: Any, path: str) -> Any:
    if isinstance(value, Op):
        return {"op": value.name, **value.params}
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"kind": value.kind} if isinstance(
            value, (ModelNode, ABTestNode, SequenceNode, KeyedNode)) else {}
        declared = {f.name: f for f in fields(value)}
        for name in getattr(value, "json_order", declared):
            f = declared[name]
            item = getattr(value, f.name)
            if f.metadata.get("always") or not _is_default(f, item):
                out[f.name] = _encode(item, f"{path}.{f.name}")
        return out
    if isinstance(value, (tuple, list)):
        return [_encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        return dict(value)
    if callable(value):
        raise SpecError([(path, f"the Python function {getattr(value, '__name__', value)!r} "
                                "cannot be written to JSON; use a named op so other languages "
                                "and the expansion service can read the spec")])
    return value


def _is_default(f: Field[Any], value: Any) -> bool:
    if f.default is not MISSING:
        return bool(value == f.default)
    if f.default_factory is not MISSING:
        return bool(value == f.default_factory())
    return False
