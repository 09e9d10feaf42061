"""scikit-learn models: skops (data only), or pickle / joblib (code-capable, opt-in).

``skops`` files are read with skops' safe loader: every type the file names
must be one skops trusts by default (scikit-learn estimators, numpy and scipy
types), else the model is refused before anything is constructed. Pickle and
joblib files run whatever functions they name when loaded; the load policy
allows them only when it lists them in ``code_formats``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from crossinfer.handlers.adapter import FrameworkAdapter, ModelLoadError


def load_skops(data: bytes, name: str) -> Any:
    """An estimator from skops bytes; ModelLoadError naming any untrusted type."""
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except Exception as exc:  # not a skops file (zip), or a malformed schema
        raise ModelLoadError(f"model {name!r}: not a readable skops file: "
                             f"{type(exc).__name__}: {exc}") from exc
    if untrusted:
        shown = ", ".join(untrusted[:5]) + (" ..." if len(untrusted) > 5 else "")
        raise ModelLoadError(f"model {name!r}: the skops file names types outside skops' "
                             f"trusted defaults ({shown}); refusing to load it")
    return skops.io.loads(data)


class SklearnAdapter(FrameworkAdapter):
    framework = "sklearn"

    def _load(self, data: bytes | None) -> Any:
        assert data is not None
        fmt = self.node.resolved_format
        if fmt == "skops":
            return load_skops(data, self.node.name)
        # Code-capable formats: load() has checked the policy allows them.
        if fmt == "joblib":
            import joblib

            return joblib.load(io.BytesIO(data))
        import pickle

        return pickle.loads(data)

    def predict(self, model: Any, batch: np.ndarray, inference_args: dict[str, Any]
                ) -> np.ndarray:
        method = getattr(model, self.node.method or "predict")
        return self.batch_output(method(batch, **inference_args), len(batch))
