"""Which ``inference_args`` a model's call takes, told as early as the framework allows.

* At construction (:func:`construction_problems`), nothing is loaded: a PyTorch
  state dict's ``model_class`` is resolved by the load policy (allow-listed,
  a ``torch.nn.Module``) and its ``forward`` signature read; for a scikit-learn
  file the class it builds is read without loading it
  (:func:`crossinfer.handlers.files.inspect_file`: from a skops file's
  ``schema.json``, or from a pickle or joblib file's first pickle opcodes;
  nothing is unpickled and nothing runs) - and, when it is a scikit-learn
  class, the method's signature read. ONNX and TensorRT take no args at all (spec validation).
* At load, on the worker (:func:`loaded_args_problem`): the loaded estimator's
  method, the state dict model's ``forward``, a TorchScript model's compiled
  ``forward`` schema. A problem found here fails the node's elements with its
  message (see :mod:`crossinfer.handlers.loaded`).
* Custom handlers' ``run_inference`` cannot tell: a handler that refuses its
  args fails each element with the handler's own error.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable
from typing import Any

from crossinfer.handlers.files import inspect_file
from crossinfer.policy import (
    ClassRefused,
    LoadPolicy,
    LocationRefused,
    is_local,
    torch_module_base,
)
from crossinfer.spec.nodes import ModelNode


def construction_problems(node: ModelNode, policy: LoadPolicy) -> list[tuple[str, str]]:
    """(field, message) for each inference arg the model's call cannot take, where
    that can be told without loading the model; [] when all fit or it cannot tell."""
    if not node.inference_args:
        return []
    if node.framework == "pytorch" and node.resolved_format == "state_dict":
        if node.model_class is None:
            return []
        try:
            cls = policy.resolve_class(node.model_class, torch_module_base())
        except ClassRefused:
            return []  # reported by spec validation, naming the field
        forward = getattr(cls, "forward", None)
        return _problems(forward, node, f"{_name(cls)}.forward", unbound=True)
    if node.framework == "sklearn" and node.uri and is_local(node.uri):
        try:
            path = policy.resolve_location(node.uri)
        except LocationRefused:
            return []  # reported by spec validation, naming the field
        try:  # read safely, once per file (crossinfer.handlers.files)
            found = inspect_file(path, node.resolved_format).built_class
        except OSError:
            return []  # reported by the file checks, naming the field
        if found is None or not (found[0] == "sklearn" or found[0].startswith("sklearn.")):
            return []  # only scikit-learn's own classes are imported to look
        try:
            cls = getattr(importlib.import_module(found[0]), found[1])
        except (ImportError, AttributeError):
            return []
        method = node.method or "predict"
        return _problems(getattr(cls, method, None), node, f"{found[1]}.{method}", unbound=True)
    return []


def loaded_args_problem(node: ModelNode, model: Any) -> str | None:
    """Why the loaded ``model``'s call cannot take the node's inference args, or None."""
    if not node.inference_args:
        return None
    if node.framework == "sklearn":
        method = node.method or "predict"
        problems = _problems(getattr(model, method, None), node,
                             f"{type(model).__name__}.{method}", unbound=False)
    elif node.framework == "pytorch":
        schema = getattr(getattr(model, "forward", None), "schema", None)
        if schema is not None:  # TorchScript: the compiled signature
            names = [a.name for a in schema.arguments][2:]  # after self and the input
            problems = _unknown(node, names, "the TorchScript model's forward")
        else:
            problems = _problems(getattr(model, "forward", None), node,
                                 f"{type(model).__name__}.forward", unbound=False)
    else:
        return None
    return "; ".join(message for _, message in problems) or None


def _problems(fn: Any, node: ModelNode, what: str, unbound: bool) -> list[tuple[str, str]]:
    if fn is None:
        return []
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []  # no signature to read: cannot tell
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return []  # takes any keyword
    params = params[(2 if unbound else 1):]  # after self and the input batch
    names = [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                  inspect.Parameter.KEYWORD_ONLY)]
    return _unknown(node, names, what)


def _unknown(node: ModelNode, names: Iterable[str], what: str) -> list[tuple[str, str]]:
    names = list(names)
    taken = ", ".join(names) or "none"
    return [(f"inference_args.{key}", f"{what} takes no argument {key!r} (its arguments after "
                                      f"the input: {taken})")
            for key in node.inference_args if key not in names]


def _name(cls: Any) -> str:
    return getattr(cls, "__name__", str(cls))
