"""Semantic validation of a decoded spec, with field paths.

Structure (types, required fields) is checked while decoding; this module
checks meaning: known frameworks and formats, unique names, sane weights and
batch sizes, op names and params, allow-listed classes, model files that exist
under the allowed roots, well-formed checksums. Every problem is collected and
raised together as one :class:`SpecError`.
"""

from __future__ import annotations

import keyword
import math
import os
import re

import numpy as np

from crossinfer.policy import LoadPolicy, is_local, local_path
from crossinfer.processing.ops import build_op
from crossinfer.spec.errors import ErrorCollector
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

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def validate_spec(spec: InferenceSpec, policy: LoadPolicy | None = None) -> InferenceSpec:
    """Return ``spec`` unchanged, or raise SpecError listing every problem."""
    errors = ErrorCollector()
    validate_node(spec.node, "node", policy or LoadPolicy(), errors)
    errors.raise_if_any()
    return spec


def validate_node(node: Node, path: str, policy: LoadPolicy, errors: ErrorCollector) -> None:
    seen: dict[str, str] = {}
    for at, each in walk(node, path):
        _check_name(each.name, f"{at}.name", errors)
        if each.name in seen:
            errors.add(f"{at}.name", f"name {each.name!r} is already used at {seen[each.name]}; "
                                     "node names must be unique within a spec")
        else:
            seen[each.name] = f"{at}.name"
        if isinstance(each, ModelNode):
            _check_model(each, at, policy, errors)
        elif isinstance(each, ABTestNode):
            _check_ab_test(each, at, errors)
        elif isinstance(each, SequenceNode):
            if not each.stages:
                errors.add(f"{at}.stages", "needs at least one stage")
        elif isinstance(each, KeyedNode):
            _check_keyed(each, at, errors)


def _check_name(name: str, path: str, errors: ErrorCollector) -> None:
    if not _NAME.match(name or ""):
        errors.add(path, f"{name!r} is not a valid name: use 1-100 letters, digits, '_', '-' or "
                         "'.', starting with a letter or digit")


def _one_of(value: object, allowed: tuple[str, ...], path: str, errors: ErrorCollector) -> bool:
    if value not in allowed:
        errors.add(path, f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        return False
    return True


def _check_model(node: ModelNode, at: str, policy: LoadPolicy, errors: ErrorCollector) -> None:
    if not _one_of(node.framework, FRAMEWORKS, f"{at}.framework", errors):
        return
    _one_of(node.resolved_format, FORMATS[node.framework], f"{at}.format", errors)
    _one_of(node.device, DEVICES, f"{at}.device", errors)
    try:
        np.dtype(node.dtype)
    except TypeError:
        errors.add(f"{at}.dtype", f"{node.dtype!r} is not a numpy dtype name like 'float32'")
    if node.input_shape is not None and (
            not node.input_shape or any(d <= 0 for d in node.input_shape)):
        errors.add(f"{at}.input_shape", f"dimensions must be positive, got "
                                        f"{list(node.input_shape)}")
    _check_batching(node, at, errors)
    if node.memory.model_copies is not None and node.memory.model_copies < 1:
        errors.add(f"{at}.memory.model_copies", f"must be at least 1, got "
                                                f"{node.memory.model_copies}")
    if node.sha256 is not None and not _SHA256.match(node.sha256):
        errors.add(f"{at}.sha256", "expected 64 lowercase hex digits (the file's SHA-256)")
    if node.sha256 is None and policy.require_sha256 and node.uri:
        errors.add(f"{at}.sha256", "is required: this service only loads models with a pinned "
                                   "SHA-256 checksum")
    _check_framework_fields(node, at, policy, errors)
    _check_call(node, at, errors)
    _check_uri(node, at, policy, errors)
    for stage in ("preprocess", "postprocess"):
        for i, step in enumerate(getattr(node, stage)):
            try:
                build_op(step, "pre" if stage == "preprocess" else "post")
            except (ValueError, TypeError) as exc:
                errors.add(f"{at}.{stage}[{i}]", str(exc))


def _check_batching(node: ModelNode, at: str, errors: ErrorCollector) -> None:
    b = node.batching
    for field_name in ("min_batch_size", "max_batch_size"):
        value = getattr(b, field_name)
        if value is not None and value < 1:
            errors.add(f"{at}.batching.{field_name}", f"must be at least 1, got {value}")
    if (b.min_batch_size is not None and b.max_batch_size is not None
            and b.min_batch_size > b.max_batch_size):
        errors.add(f"{at}.batching.min_batch_size",
                   f"{b.min_batch_size} is larger than max_batch_size {b.max_batch_size}")
    if b.max_wait_secs is not None and not (b.max_wait_secs > 0 and math.isfinite(
            b.max_wait_secs)):
        errors.add(f"{at}.batching.max_wait_secs", f"must be a positive number of seconds, got "
                                                   f"{b.max_wait_secs}")


def _check_class(value: str | None, path: str, what: str, policy: LoadPolicy,
                 errors: ErrorCollector) -> None:
    if value is None:
        errors.add(path, f"is required: the import path of the {what}, 'package.module:Name'")
    elif not _IMPORT_PATH.match(value):
        errors.add(path, f"{value!r} is not an import path like 'package.module:Name'")
    elif not policy.class_allowed(value):
        allowed = ", ".join(policy.allowed_classes) or "none"
        errors.add(path, f"{value!r} is not in the allow-list of importable classes "
                         f"(allowed: {allowed})")


def _check_framework_fields(node: ModelNode, at: str, policy: LoadPolicy,
                            errors: ErrorCollector) -> None:
    fmt = node.resolved_format
    if node.framework == "pytorch" and fmt == "state_dict":
        _check_class(node.model_class, f"{at}.model_class", "torch.nn.Module class", policy,
                     errors)
    elif node.model_class is not None:
        errors.add(f"{at}.model_class", "is only used by framework 'pytorch' with format "
                                        "'state_dict'")
    if node.model_params and node.model_class is None:
        errors.add(f"{at}.model_params", "is only used together with model_class")
    if node.framework == "custom":
        _check_class(node.handler_class, f"{at}.handler_class", "ModelHandler class", policy,
                     errors)
    elif node.handler_class is not None or node.handler_params:
        errors.add(f"{at}.handler_class", "is only used by framework 'custom'")
    if node.method is not None:
        if node.framework != "sklearn":
            errors.add(f"{at}.method", "is only used by framework 'sklearn'")
        else:
            _one_of(node.method, SKLEARN_METHODS, f"{at}.method", errors)


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
    if isinstance(node.output, int) and node.output < 0:
        errors.add(f"{at}.output", f"an output index must be 0 or more, got {node.output}")
    if isinstance(node.output, str) and not node.output.strip():
        errors.add(f"{at}.output", "an output name must not be empty")


def _check_uri(node: ModelNode, at: str, policy: LoadPolicy, errors: ErrorCollector) -> None:
    if node.uri is None:
        if node.framework != "custom":
            errors.add(f"{at}.uri", "is required: a local path or a Beam FileSystems URI of "
                                    "the model file")
        return
    problem = policy.location_problem(node.uri)
    if problem:
        errors.add(f"{at}.uri", problem)
        return
    if policy.check_files and is_local(node.uri) and node.framework != "custom":
        path = local_path(node.uri)
        if not os.path.isfile(path):
            errors.add(f"{at}.uri", f"no such file {node.uri!r}")


def _check_ab_test(node: ABTestNode, at: str, errors: ErrorCollector) -> None:
    _one_of(node.split, SPLITS, f"{at}.split", errors)
    if len(node.arms) < 2:
        errors.add(f"{at}.arms", f"an A/B test needs at least two arms, got {len(node.arms)}")
    names: set[str] = set()
    for i, arm in enumerate(node.arms):
        _check_name(arm.name, f"{at}.arms[{i}].name", errors)
        if arm.name in names:
            errors.add(f"{at}.arms[{i}].name", f"arm name {arm.name!r} is used twice")
        names.add(arm.name)
        if not (math.isfinite(arm.weight) and arm.weight > 0):
            errors.add(f"{at}.arms[{i}].weight", f"must be a positive number, got {arm.weight}")


def _check_keyed(node: KeyedNode, at: str, errors: ErrorCollector) -> None:
    if not node.routes:
        errors.add(f"{at}.routes", "needs at least one route")
    owner: dict[str, int] = {}
    for i, route in enumerate(node.routes):
        if not route.keys:
            errors.add(f"{at}.routes[{i}].keys", "needs at least one key")
        for key in route.keys:
            if key in owner:
                errors.add(f"{at}.routes[{i}].keys",
                           f"key {key!r} is already routed by routes[{owner[key]}]")
            owner.setdefault(key, i)
    bound = node.max_models_per_worker
    if bound is not None and bound < 1:
        errors.add(f"{at}.max_models_per_worker", f"must be at least 1, got {bound}")
