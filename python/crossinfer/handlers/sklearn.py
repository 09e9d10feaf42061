"""scikit-learn models: skops (data only), or pickle / joblib (code-capable, opt-in).

``skops`` files are read with skops' safe loader: every type the file names
must be one skops trusts by default (scikit-learn estimators, numpy and scipy
types) or one the load policy lists in ``skops_trusted`` (e.g.
``sklearn.tree._tree.Tree``, which trees and forests need), else the model is
refused before anything is constructed. Pickle and
joblib files run whatever functions they name when loaded; the load policy
allows them only when it lists them in ``code_formats``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from crossinfer.handlers.adapter import FrameworkAdapter, ModelLoadError
from crossinfer.handlers.files import skops_untrusted, untrusted_text


def load_skops(data: bytes, name: str, trusted: tuple[str, ...] = ()) -> Any:
    """An estimator from skops bytes; ModelLoadError naming any type that neither
    skops' defaults nor ``trusted`` (the policy's ``skops_trusted``) trust."""
    import skops.io

    try:
        untrusted = skops_untrusted(data, trusted)
    except ValueError as exc:  # not a skops file (zip), or a malformed schema
        raise ModelLoadError(f"model {name!r}: {exc}") from exc
    if untrusted:
        raise ModelLoadError(f"model {name!r}: the skops file {untrusted_text(untrusted)}")
    return skops.io.loads(data, trusted=list(trusted) or None)


class SklearnAdapter(FrameworkAdapter):
    framework = "sklearn"

    def _load(self, data: bytes | None) -> Any:
        assert data is not None
        fmt = self.node.resolved_format
        if fmt == "skops":
            return load_skops(data, self.node.name, self.policy.skops_trusted)
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
