"""The one entry point that checks a spec, and the rules no single field states.

:func:`validate_spec` checks, in this order, and raises one :class:`SpecError`
listing every problem of the first stage that has any, each with its field
path:

1. every field against its declaration (:mod:`crossinfer.spec.nodes`: types,
   known values, bounds, sizes, op parameters) - :func:`codec.checked`;
2. the spec's size (:class:`~crossinfer.spec.limits.SpecLimits`), before
   anything costly;
3. the rules that relate fields (unique names and keys, a format its
   framework reads, fields only some frameworks use, ops only post-processing
   may use, ``min_batch_size <= max_batch_size``) and those of the load policy
   (:mod:`crossinfer.policy`: classes that resolve to allow-listed class
   objects, formats that run no code unless allowed, pins, model files that
   exist under the allowed roots, a model class's parameter count).

What the model files and classes tell (the inference args a model's call
takes) is checked when a transform is built
(:mod:`crossinfer.handlers.signatures`).
"""

from __future__ import annotations

import os
from typing import Any

from crossinfer.policy import (
    ClassRefused,
    LoadPolicy,
    LocationRefused,
    is_local,
    model_handler_base,
    torch_module_base,
)
from crossinfer.spec.codec import checked
from crossinfer.spec.constraints import clip, short
from crossinfer.spec.errors import ErrorCollector
from crossinfer.spec.limits import SpecLimits
from crossinfer.spec.nodes import (
    FORMATS,
    ABTestNode,
    InferenceSpec,
    KeyedNode,
    ModelNode,
    Node,
    Op,
    walk,
)
from crossinfer.spec.ops import stage_problem
from crossinfer.spec.relations import relation_problems


def validate_spec(spec: InferenceSpec, policy: LoadPolicy | None = None,
                  limits: SpecLimits | None = None) -> InferenceSpec:
    """The checked spec (a normalised copy of ``spec``), or SpecError listing every
    problem with its field path.

    ``policy``: what it may load (default: :class:`LoadPolicy`'s defaults);
    ``limits``: how large it may be (default: :class:`SpecLimits`'s defaults).
    """
    policy = policy or LoadPolicy()
    limits = limits or SpecLimits()
    spec = checked(spec)
    errors = ErrorCollector()
    check_size(spec.node, "node", limits, errors)
    errors.raise_if_any()
    check_rules(spec.node, "node", policy, limits, errors)
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


def check_rules(node: Node, path: str, policy: LoadPolicy, limits: SpecLimits,
                errors: ErrorCollector) -> None:
    """The rules that relate fields (:mod:`crossinfer.spec.relations`), and the load
    policy's, over a checked tree."""
    for at, message in relation_problems(node, path):
        errors.add(at, message)
    for at, each in walk(node, path):
        if isinstance(each, ModelNode):
            _check_model(each, at, policy, limits, errors)


def _check_model(node: ModelNode, at: str, policy: LoadPolicy, limits: SpecLimits,
                 errors: ErrorCollector) -> None:
    fmt = node.resolved_format
    if fmt not in FORMATS[node.framework]:
        formats = ", ".join(map(repr, FORMATS[node.framework]))
        errors.add(f"{at}.format", f"expected one of {formats} for framework "
                                   f"{node.framework!r}, got {short(fmt)}")
    else:
        problem = policy.format_problem(fmt)
        if problem:
            errors.add(f"{at}.format", problem)
    if node.sha256 is None and policy.require_sha256 and node.uri:
        errors.add(f"{at}.sha256", "is required: the load policy requires a pinned SHA-256 "
                                   "checksum for every model file (service: --require-sha256; "
                                   "Python: LoadPolicy(require_sha256=True))")
    _check_framework_fields(node, at, policy, limits, errors)
    why = _NO_INFERENCE_ARGS.get(node.framework)
    if node.inference_args and why:
        errors.add(f"{at}.inference_args", f"framework {node.framework!r} takes no inference "
                                           f"args ({why}); remove them")
    _check_uri(node, at, policy, errors)
    for i, step in enumerate(node.preprocess):
        problem = stage_problem(step.name, "pre") if isinstance(step, Op) else None
        if problem:
            errors.add(f"{at}.preprocess[{i}]", problem)


def _check_class(value: str | None, path: str, what: str, base: Any, policy: LoadPolicy,
                 errors: ErrorCollector) -> type | None:
    """The class ``value`` names, checked against the policy; None (and an error) if not."""
    if value is None:
        errors.add(path, f"is required: the import path of the {what}, 'package.module:Name'")
        return None
    if not policy.class_allowed(value):
        if value.count(":") != 1 or "." in value.partition(":")[2]:
            errors.add(path, f"{short(value)} is not an import path like 'package.module:Name' "
                             "(one class name after the colon)")
        else:
            allowed = ", ".join(policy.allowed_classes) or "none"
            errors.add(path, f"{short(value)} is not in the allow-list of importable classes "
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
    if node.framework == "pytorch" and node.resolved_format == "state_dict":
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
    if node.method is not None and node.framework != "sklearn":
        errors.add(f"{at}.method", "is only used by framework 'sklearn'")


def _check_parameter_count(cls: type, node: ModelNode, at: str, limits: SpecLimits,
                           errors: ErrorCollector) -> None:
    """Build the model on PyTorch's meta device (shapes only, no memory) and count
    its parameters: the quantity that ``model_params`` (e.g. MLP ``sizes``) imply."""
    import torch

    try:
        with torch.device("meta"):
            model = cls(**dict(node.model_params))
        count = sum(int(p.numel()) for p in model.parameters())
    except Exception as exc:  # the class refuses the params: a spec error, not ours
        errors.add(f"{at}.model_params", f"{node.model_class} cannot be built with these "
                                         f"params: {type(exc).__name__}: {clip(str(exc), 200)}")
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
