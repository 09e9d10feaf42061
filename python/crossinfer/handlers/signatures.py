"""Which ``inference_args`` a loaded model's call takes, told on the worker.

At construction, spec validation tells what it can without loading anything
(:mod:`crossinfer.spec.signatures`). At load, on the worker
(:func:`loaded_args_problem`): the loaded estimator's method, the state dict
model's ``forward``, a TorchScript model's compiled ``forward`` schema. A
problem found here fails the node's elements with its message (see
:mod:`crossinfer.handlers.loaded`). Custom handlers' ``run_inference`` cannot
tell: a handler that refuses its args fails each element with the handler's
own error.
"""

from __future__ import annotations

from typing import Any

from crossinfer.spec.nodes import ModelNode
from crossinfer.spec.signatures import call_problems, unknown_args


def loaded_args_problem(node: ModelNode, model: Any) -> str | None:
    """Why the loaded ``model``'s call cannot take the node's inference args, or None."""
    if not node.inference_args:
        return None
    if node.framework == "sklearn":
        method = node.method or "predict"
        problems = call_problems(getattr(model, method, None), node,
                                 f"{type(model).__name__}.{method}", unbound=False)
    elif node.framework == "pytorch":
        schema = getattr(getattr(model, "forward", None), "schema", None)
        if schema is not None:  # TorchScript: the compiled signature
            names = [a.name for a in schema.arguments][2:]  # after self and the input
            problems = unknown_args(node, names, "the TorchScript model's forward")
        else:
            problems = call_problems(getattr(model, "forward", None), node,
                                     f"{type(model).__name__}.forward", unbound=False)
    else:
        return None
    return "; ".join(message for _, message in problems) or None
