"""scikit-learn models (pickle or joblib) through Beam's SklearnModelHandlerNumpy."""

from __future__ import annotations

from typing import Any

import numpy as np

from crossinfer.handlers.adapter import FrameworkAdapter


class SklearnAdapter(FrameworkAdapter):
    framework = "sklearn"

    def _load(self) -> Any:
        from apache_beam.ml.inference.sklearn_inference import (
            ModelFileType,
            SklearnModelHandlerNumpy,
        )
        file_type = (ModelFileType.JOBLIB if self.node.resolved_format == "joblib"
                     else ModelFileType.PICKLE)
        return SklearnModelHandlerNumpy(model_uri=self.node.uri,
                                        model_file_type=file_type).load_model()

    def predict(self, model: Any, batch: np.ndarray, inference_args: dict[str, Any]
                ) -> np.ndarray:
        method = getattr(model, self.node.method or "predict")
        return self.batch_output(method(batch, **inference_args), len(batch))
