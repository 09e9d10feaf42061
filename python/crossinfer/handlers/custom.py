"""Custom models: a user's Beam ModelHandler class, named by an allow-listed import path.

The class is imported on the worker, constructed with ``handler_params`` (and
``model_uri`` when the spec sets ``uri``), and its ``load_model`` and
``run_inference`` are used as they are. Results may be PredictionResults or
plain arrays.
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
from crossinfer.policy import LoadPolicy, import_object
from crossinfer.spec.nodes import ModelNode


class CustomAdapter(FrameworkAdapter):
    framework = "custom"

    def __init__(self, node: ModelNode, policy: LoadPolicy) -> None:
        super().__init__(node, policy)
        # Allow-listed classes are imported here, at construction, so a class that is
        # not a ModelHandler fails the pipeline (or the expansion) before any worker runs.
        if policy.class_allowed(node.handler_class or ""):
            self._handler_class()

    def _handler_class(self) -> type:
        path = self.node.handler_class or ""
        try:
            cls = import_object(path)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ModelLoadError(f"model {self.node.name!r}: cannot import handler class "
                                 f"{path!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, ModelHandler)):
            raise ModelLoadError(f"model {self.node.name!r}: {path!r} is not a subclass of "
                                 "apache_beam.ml.inference.base.ModelHandler")
        return cls

    def handler(self) -> ModelHandler:
        path = self.node.handler_class or ""
        if not self.policy.class_allowed(path):
            raise ModelLoadError(f"model {self.node.name!r}: handler class {path!r} is not "
                                 "allow-listed")
        cls = self._handler_class()
        params = dict(self.node.handler_params)
        if self.node.uri is not None:
            params.setdefault("model_uri", self.node.uri)
        return cls(**params)

    def _load(self) -> Any:
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
    def __init__(self, handler: ModelHandler, model: Any) -> None:
        self.handler = handler
        self.model = model
