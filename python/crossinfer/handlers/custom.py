"""Custom models: a user's Beam ModelHandler class, named by an allow-listed import path.

The class must be defined in an allow-listed module and subclass Beam's
``ModelHandler`` (see :meth:`crossinfer.policy.LoadPolicy.resolve_class`). It is
resolved at construction and again on the worker, constructed with
``handler_params`` plus ``model_uri`` - always the checked location of the
spec's ``uri``, never a value from ``handler_params`` (refused there: it would
skip the model-root check) - and its ``load_model`` and ``run_inference`` are
used as they are. Results may be PredictionResults or plain arrays.

The handler opens its model itself, the way its code says: allow-listing a
class trusts it with what it opens (Beam's ``SklearnModelHandlerNumpy``
unpickles its file, so it can run the code of any writer of the model roots).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from crossinfer.handlers.adapter import (
    FrameworkAdapter,
    ModelLoadError,
    as_batch_output,
    select_output,
)
from crossinfer.policy import ClassRefused, LoadPolicy, model_handler_base
from crossinfer.spec.nodes import ModelNode


class CustomAdapter(FrameworkAdapter):
    framework = "custom"
    # The handler opens its own files (after load() checked the policy and the pin).
    reads_bytes = False

    def __init__(self, node: ModelNode, policy: LoadPolicy) -> None:
        super().__init__(node, policy)
        # Resolved here, at construction, so a class that is not allowed or not a
        # ModelHandler fails the pipeline (or the expansion) before any worker runs.
        self._handler_class()

    def _handler_class(self) -> type:
        """The allow-listed ModelHandler class (resolved again on each worker)."""
        try:
            return self.policy.resolve_class(self.node.handler_class or "",
                                             model_handler_base())
        except ClassRefused as exc:
            raise ModelLoadError(f"model {self.node.name!r}: handler_class: {exc}") from exc

    def handler(self) -> ModelHandler[Any, Any, Any]:
        cls = self._handler_class()
        params = dict(self.node.handler_params)
        if "model_uri" in params:  # refused by spec validation; never trusted here
            raise ModelLoadError(f"model {self.node.name!r}: handler_params.model_uri is set "
                                 "from the node's uri; remove it")
        if self.location is not None:
            params["model_uri"] = self.location
        handler: ModelHandler[Any, Any, Any] = cls(**params)
        return handler

    def _load(self, data: bytes | None) -> Any:
        handler = self.handler()
        return _CustomModel(handler, handler.load_model())

    def predict(self, model: Any, batch: np.ndarray, inference_args: dict[str, Any]
                ) -> np.ndarray:
        results = list(model.handler.run_inference(list(batch), model.model,
                                                   inference_args or None))
        rows = [np.asarray(select_output(r.inference if isinstance(r, PredictionResult) else r,
                                         self.node.output, self.node.name)) for r in results]
        return as_batch_output(np.stack(rows), len(batch), self.node.name)


class _CustomModel:
    def __init__(self, handler: ModelHandler[Any, Any, Any], model: Any) -> None:
        self.handler = handler
        self.model = model
