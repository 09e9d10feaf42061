"""Semantic validation of a decoded spec, with field paths.

Structure (types, required fields) is checked while decoding; this module
checks meaning: the spec's size (:class:`~crossinfer.spec.limits.SpecLimits`,
first, before anything costly), known frameworks and formats, unique names,
every number within its bound (:mod:`crossinfer.spec.limits`), op names and
params, classes that resolve to allow-listed class objects, formats the policy
allows, model files that exist under the allowed roots, well-formed checksums.
Every problem is collected and raised together as one :class:`SpecError`.
"""

from __future__ import annotations

import keyword
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from crossinfer.policy import (
    ClassRefused,
    LoadPolicy,
    LocationRefused,
    is_local,
    model_handler_base,
    torch_module_base,
)
from crossinfer.processing.ops import build_op
from crossinfer.spec.errors import ErrorCollector
from crossinfer.spec.limits import DERIVED_BOUNDS, FIELD_BOUNDS, SpecLimits, dtype_problem
from crossinfer.spec.nodes import (
    DEVICES,
    FORMATS,
    FRAMEWORKS,
    SKLEARN_METHODS,
    SPLITS,
    ABTestNode,
    InferenceSpec,
    KeyedNode,
    ModelNode,
    Node,
    SequenceNode,
    walk,
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TEXT_LENGTH = DERIVED_BOUNDS["ab_test.salt, keyed.routes[].keys[] (length)"].maximum
_STRING_LENGTH = DERIVED_BOUNDS["model.uri (length)"].maximum


def validate_spec(spec: InferenceSpec, policy: LoadPolicy | None = None,
                  limits: SpecLimits | None = None) -> InferenceSpec:
    """Return ``spec`` unchanged, or raise SpecError listing every problem.

    A spec over ``limits`` is refused with those problems alone, before any
    node is looked at further.
    """
    errors = ErrorCollector()
    check_size(spec.node, "node", limits or SpecLimits(), errors)
    errors.raise_if_any()
    validate_node(spec.node, "node", policy or LoadPolicy(), errors, limits or SpecLimits())
    errors.raise_if_any()
    return spec


def check_size(node: Node, path: str, limits: SpecLimits, errors: ErrorCollector) -> None:
    """Refuse a tree with more nodes, arms, routes, keys or ops than ``limits`` allow."""
    nodes = walk(node, path)
    if len(nodes) > limits.max_nodes:
        errors.add(path, f"has {len(nodes)} nodes; at most {limits.max_nodes} are allowed "
                         "(--max-nodes)")
        return
    for at, each in nodes:
        if isinstance(each, ABTestNode) and len(each.arms) > limits.max_arms:
            errors.add(f"{at}.arms", f"has {len(each.arms)} arms; at most {limits.max_arms} "
                                     "are allowed (--max-arms)")
        elif isinstance(each, KeyedNode):
            if len(each.routes) > limits.max_routes:
                errors.add(f"{at}.routes", f"has {len(each.routes)} routes; at most "
                                           f"{limits.max_routes} are allowed (--max-routes)")
            keys = sum(len(r.keys) for r in each.routes)
            if keys > limits.max_keys:
                errors.add(f"{at}.routes", f"has {keys} keys; at most {limits.max_keys} are "
                                           "allowed (--max-keys)")
        elif isinstance(each, ModelNode):
            for stage in ("preprocess", "postprocess"):
                count = len(getattr(each, stage))
                if count > limits.max_ops:
                    errors.add(f"{at}.{stage}", f"has {count} ops; at most {limits.max_ops} "
                                                "are allowed (--max-ops)")


def validate_node(node: Node, path: str, policy: LoadPolicy, errors: ErrorCollector,
                  limits: SpecLimits | None = None) -> None:
    limits = limits or SpecLimits()
    seen: dict[str, str] = {}
    for at, each in walk(node, path):
        _check_name(each.name, f"{at}.name", errors)
        if each.name in seen:
            errors.add(f"{at}.name", f"name {each.name!r} is already used at {seen[each.name]}; "
                                     "node names must be unique within a spec")
        else:
            seen[each.name] = f"{at}.name"
        if isinstance(each, ModelNode):
            _check_model(each, at, policy, limits, errors)
        elif isinstance(each, ABTestNode):
            _check_ab_test(each, at, errors)
        elif isinstance(each, SequenceNode):
            if not each.stages:
                errors.add(f"{at}.stages", "needs at least one stage")
        elif isinstance(each, KeyedNode):
            _check_keyed(each, at, errors)


def check_number(value: Any, bound_key: str, path: str, errors: ErrorCollector) -> bool:
    """Add an error at ``path`` when ``value`` is outside ``FIELD_BOUNDS[bound_key]``."""
    problem = FIELD_BOUNDS[bound_key].problem(value)
    if problem:
        errors.add(path, problem)
    return problem is None


def _check_name(name: str, path: str, errors: ErrorCollector) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        errors.add(path, f"{_short(name)} is not a valid name: use 1-100 letters, digits, '_', "
                         "'-' or '.', starting with a letter or digit")


def _one_of(value: object, allowed: tuple[str, ...], path: str, errors: ErrorCollector) -> bool:
    if value not in allowed:
        errors.add(path, f"expected one of {', '.join(map(repr, allowed))}, got {_short(value)}")
        return False
    return True


def _check_model(node: ModelNode, at: str, policy: LoadPolicy, limits: SpecLimits,
                 errors: ErrorCollector) -> None:
    if not _one_of(node.framework, FRAMEWORKS, f"{at}.framework", errors):
        return
    if _one_of(node.resolved_format, FORMATS[node.framework], f"{at}.format", errors):
        problem = policy.format_problem(node.resolved_format)
        if problem:
            errors.add(f"{at}.format", problem)
    _one_of(node.device, DEVICES, f"{at}.device", errors)
    problem = dtype_problem(node.dtype)
    if problem:
        errors.add(f"{at}.dtype", problem)
    _check_input_shape(node, at, errors)
    _check_batching(node, at, errors)
    if node.memory.model_copies is not None:
        check_number(node.memory.model_copies, "model.memory.model_copies",
                     f"{at}.memory.model_copies", errors)
    if node.sha256 is not None and not (isinstance(node.sha256, str)
                                        and _SHA256.fullmatch(node.sha256)):
        errors.add(f"{at}.sha256", "expected 64 lowercase hex digits (the file's SHA-256)")
    if node.sha256 is None and policy.require_sha256 and node.uri:
        errors.add(f"{at}.sha256", "is required: the load policy requires a pinned SHA-256 "
                                   "checksum for every model file (service: --require-sha256; "
                                   "Python: LoadPolicy(require_sha256=True))")
    for name in ("model_params", "handler_params", "inference_args"):
        _check_params(getattr(node, name), f"{at}.{name}", errors)
    _check_framework_fields(node, at, policy, limits, errors)
    _check_call(node, at, errors)
    _check_uri(node, at, policy, errors)
    for stage in ("preprocess", "postprocess"):
        for i, step in enumerate(getattr(node, stage)):
            try:
                build_op(step, "pre" if stage == "preprocess" else "post")
            except (ValueError, TypeError) as exc:
                errors.add(f"{at}.{stage}[{i}]", str(exc))


def _check_input_shape(node: ModelNode, at: str, errors: ErrorCollector) -> None:
    shape = node.input_shape
    if shape is None:
        return
    most = DERIVED_BOUNDS["model.input_shape (dimensions)"].maximum
    if not shape or len(shape) > most:
        errors.add(f"{at}.input_shape", f"needs 1 to {most} dimensions, got {len(shape)}")
        return
    ok = True
    for i, dim in enumerate(shape):
        ok &= check_number(dim, "model.input_shape[]", f"{at}.input_shape[{i}]", errors)
    product = DERIVED_BOUNDS["model.input_shape (product)"].maximum
    if ok and math.prod(shape) > product:
        errors.add(f"{at}.input_shape", f"describes {math.prod(shape):,} values per row; at "
                                        f"most {product:,} are allowed")


def _check_batching(node: ModelNode, at: str, errors: ErrorCollector) -> None:
    b = node.batching
    ok = True
    for field_name in ("min_batch_size", "max_batch_size", "max_wait_secs"):
        value = getattr(b, field_name)
        if value is not None:
            ok &= check_number(value, f"model.batching.{field_name}",
                               f"{at}.batching.{field_name}", errors)
    if (ok and b.min_batch_size is not None and b.max_batch_size is not None
            and b.min_batch_size > b.max_batch_size):
        errors.add(f"{at}.batching.min_batch_size",
                   f"{b.min_batch_size} is larger than max_batch_size {b.max_batch_size}")


def _check_params(params: Mapping[str, Any], path: str, errors: ErrorCollector) -> None:
    """Params are plain JSON: finite numbers, bounded nesting, size and text."""
    deepest = DERIVED_BOUNDS["model.{model_params,handler_params,inference_args} (nesting)"].maximum
    most = DERIVED_BOUNDS["model.{model_params,handler_params,inference_args} (items)"].maximum
    count = 0
    stack: list[tuple[Any, str, int]] = [(dict(params), path, 1)]
    while stack:
        value, at, depth = stack.pop()
        count += 1
        if count > most:
            errors.add(path, f"holds more than {most} values")
            return
        if isinstance(value, (dict, list)):
            if depth > deepest:
                errors.add(at, f"nested deeper than {deepest} levels")
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and len(key) > _TEXT_LENGTH:
                    errors.add(at, f"a key is longer than {_TEXT_LENGTH} characters")
                    continue
                child = f"{at}.{key}" if isinstance(value, dict) else f"{at}[{key}]"
                stack.append((item, child, depth + 1))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            check_number(value, "model.{model_params,handler_params,inference_args}.**", at, errors)
        elif isinstance(value, str):
            if len(value) > _STRING_LENGTH:
                errors.add(at, f"a string longer than {_STRING_LENGTH} characters")
        elif value is not None and not isinstance(value, bool):
            errors.add(at, f"expected a JSON value, got {type(value).__name__}")


def _check_class(value: str | None, path: str, what: str, base: Any, policy: LoadPolicy,
                 errors: ErrorCollector) -> type | None:
    """The class ``value`` names, checked against the policy; None (and an error) if not."""
    if value is None:
        errors.add(path, f"is required: the import path of the {what}, 'package.module:Name'")
        return None
    if not policy.class_allowed(value):
        if not isinstance(value, str) or value.count(":") != 1 or "." in value.partition(":")[2]:
            errors.add(path, f"{_short(value)} is not an import path like 'package.module:Name' "
                             "(one class name after the colon)")
        else:
            allowed = ", ".join(policy.allowed_classes) or "none"
            errors.add(path, f"{_short(value)} is not in the allow-list of importable classes "
                             f"(allowed: {allowed})")
        return None
    if not policy.check_files:
        return None
    try:
        return policy.resolve_class(value, base())
    except ClassRefused as exc:
        errors.add(path, str(exc))
    except ImportError as exc:  # the base's framework is not installed
        errors.add(path, f"cannot check {value!r}: {exc}")
    return None


def _check_framework_fields(node: ModelNode, at: str, policy: LoadPolicy, limits: SpecLimits,
                            errors: ErrorCollector) -> None:
    fmt = node.resolved_format
    if node.framework == "pytorch" and fmt == "state_dict":
        cls = _check_class(node.model_class, f"{at}.model_class", "torch.nn.Module class",
                           torch_module_base, policy, errors)
        if cls is not None:
            _check_parameter_count(cls, node, at, limits, errors)
    elif node.model_class is not None:
        errors.add(f"{at}.model_class", "is only used by framework 'pytorch' with format "
                                        "'state_dict'")
    if node.model_params and node.model_class is None:
        errors.add(f"{at}.model_params", "is only used together with model_class")
    if node.framework == "custom":
        _check_class(node.handler_class, f"{at}.handler_class", "ModelHandler class",
                     model_handler_base, policy, errors)
        if "model_uri" in node.handler_params:  # it would bypass the checks of uri
            errors.add(f"{at}.handler_params.model_uri", "is set from the node's uri (checked "
                                                         "against the model roots); remove it "
                                                         "and set uri")
    elif node.handler_class is not None or node.handler_params:
        errors.add(f"{at}.handler_class", "is only used by framework 'custom'")
    if node.method is not None:
        if node.framework != "sklearn":
            errors.add(f"{at}.method", "is only used by framework 'sklearn'")
        else:
            _one_of(node.method, SKLEARN_METHODS, f"{at}.method", errors)


def _check_parameter_count(cls: type, node: ModelNode, at: str, limits: SpecLimits,
                           errors: ErrorCollector) -> None:
    """Build the model on PyTorch's meta device (shapes only, no memory) and count
    its parameters: the quantity that ``model_params`` (e.g. MLP ``sizes``) imply."""
    import torch

    if any(p.startswith(f"{at}.model_params") for p, _ in errors.errors):
        return  # the params themselves are out of bounds
    try:
        with torch.device("meta"):
            model = cls(**dict(node.model_params))
        count = sum(int(p.numel()) for p in model.parameters())
    except Exception as exc:  # the class refuses the params: a spec error, not ours
        errors.add(f"{at}.model_params", f"{node.model_class} cannot be built with these "
                                         f"params: {type(exc).__name__}: {_clip(str(exc), 200)}")
        return
    if count > limits.max_model_parameters:
        errors.add(f"{at}.model_params", f"describe a model of {count:,} parameters; at most "
                                         f"{limits.max_model_parameters:,} are allowed "
                                         "(--max-model-parameters)")


#: Frameworks whose model call takes no keyword arguments from the spec.
_NO_INFERENCE_ARGS = {
    "onnx": "ONNX Runtime's session.run takes only the model's inputs, and crossinfer feeds "
            "it the batch",
    "tensorrt": "Beam's TensorRT handler takes none",
}


def _check_call(node: ModelNode, at: str, errors: ErrorCollector) -> None:
    """``inference_args`` names keyword arguments; ``output`` a name or an index."""
    for key in node.inference_args:
        if not key.isidentifier() or keyword.iskeyword(key):
            errors.add(f"{at}.inference_args.{key}", "is not a keyword argument name (a "
                                                      "Python identifier, not a keyword)")
    why = _NO_INFERENCE_ARGS.get(node.framework)
    if node.inference_args and why:
        errors.add(f"{at}.inference_args", f"framework {node.framework!r} takes no inference "
                                           f"args ({why}); remove them")
    if isinstance(node.output, int):
        check_number(node.output, "model.output", f"{at}.output", errors)
    longest = DERIVED_BOUNDS["model.output (length)"].maximum
    if isinstance(node.output, str) and not node.output.strip():
        errors.add(f"{at}.output", "an output name must not be empty")
    elif isinstance(node.output, str) and len(node.output) > longest:
        errors.add(f"{at}.output", f"an output name is at most {longest} characters")


def _check_uri(node: ModelNode, at: str, policy: LoadPolicy, errors: ErrorCollector) -> None:
    if node.uri is None:
        if node.framework != "custom":
            errors.add(f"{at}.uri", "is required: a local path or a Beam FileSystems URI of "
                                    "the model file")
        return
    try:
        location = policy.resolve_location(node.uri)
    except LocationRefused as exc:
        errors.add(f"{at}.uri", str(exc))
        return
    if policy.check_files and is_local(location) and node.framework != "custom" \
            and not os.path.isfile(location):
        errors.add(f"{at}.uri", f"no such file {node.uri!r}" if not os.path.lexists(location)
                   else f"{node.uri!r} is not a regular file")


def _check_ab_test(node: ABTestNode, at: str, errors: ErrorCollector) -> None:
    _one_of(node.split, SPLITS, f"{at}.split", errors)
    check_number(node.seed, "ab_test.seed", f"{at}.seed", errors)
    if node.salt is not None and len(node.salt) > _TEXT_LENGTH:
        errors.add(f"{at}.salt", f"longer than {_TEXT_LENGTH} characters")
    if len(node.arms) < 2:
        errors.add(f"{at}.arms", f"an A/B test needs at least two arms, got {len(node.arms)}")
    names: set[str] = set()
    for i, arm in enumerate(node.arms):
        _check_name(arm.name, f"{at}.arms[{i}].name", errors)
        if arm.name in names:
            errors.add(f"{at}.arms[{i}].name", f"arm name {arm.name!r} is used twice")
        names.add(arm.name)
        check_number(arm.weight, "ab_test.arms[].weight", f"{at}.arms[{i}].weight", errors)


def _check_keyed(node: KeyedNode, at: str, errors: ErrorCollector) -> None:
    if not node.routes:
        errors.add(f"{at}.routes", "needs at least one route")
    owner: dict[str, int] = {}
    for i, route in enumerate(node.routes):
        if not route.keys:
            errors.add(f"{at}.routes[{i}].keys", "needs at least one key")
        for key in route.keys:
            if len(key) > _TEXT_LENGTH:
                errors.add(f"{at}.routes[{i}].keys", f"a key is longer than {_TEXT_LENGTH} "
                                                     "characters")
                continue
            if key in owner:
                errors.add(f"{at}.routes[{i}].keys",
                           f"key {key!r} is already routed by routes[{owner[key]}]")
            owner.setdefault(key, i)
    if node.max_models_per_worker is not None:
        check_number(node.max_models_per_worker, "keyed.max_models_per_worker",
                     f"{at}.max_models_per_worker", errors)
    if node.shards is not None:
        check_number(node.shards, "keyed.shards", f"{at}.shards", errors)


def _short(value: Any) -> str:
    """A client-controlled value, bounded for an error message."""
    return _clip(repr(value), 60)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
