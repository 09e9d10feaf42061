"""What a crossinfer URN expands to, and how Beam's servicer finds it.

Beam's ``ExpansionServiceServicer`` builds the transform with
``PTransform.from_runner_api``, i.e. through a process-wide URN registry. Our
servicer validates a request and builds the transform *before* delegating (so
errors are clean and name fields); the constructor registered here only hands
that prepared transform over, through a thread-local slot set around the
delegated call. It never decodes a payload itself, so no code path reaches our
URNs without the checks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import PCollection

from crossinfer.expansion.urns import FAILURES_TAG, PATTERNS, RESULTS_TAG
from crossinfer.patterns import Inference


class ExpandedInference(beam.PTransform[Any, Any]):
    """The core transform plus schema'd outputs, tagged ``results``/``failures``."""

    def __init__(self, core: Inference, results_type: type, failures_type: type) -> None:
        super().__init__()
        self._core = core
        self._results_type = results_type
        self._failures_type = failures_type

    def expand(self, pcoll: PCollection[Any]) -> dict[str, PCollection[Any]]:
        outputs = pcoll | self._core
        # The core's row factories already build these NamedTuple types; saying
        # so gives both outputs a RowCoder, which is what makes them Rows to a
        # Java/Go pipeline (instead of pickled Python objects), at no extra step.
        outputs.results.element_type = self._results_type
        outputs.failures.element_type = self._failures_type
        return {RESULTS_TAG: outputs.results, FAILURES_TAG: outputs.failures}


class _Slot(threading.local):
    urn: str | None = None
    transform: beam.PTransform[Any, Any] | None = None


_SLOT = _Slot()


@contextmanager
def prepared(urn: str, transform: beam.PTransform[Any, Any]) -> Iterator[None]:
    """Make ``transform`` what ``urn`` expands to, for this thread, for the block."""
    _SLOT.urn, _SLOT.transform = urn, transform
    try:
        yield
    finally:
        _SLOT.urn, _SLOT.transform = None, None


def _from_runner_api(proto: Any, unused_payload: bytes,
                     unused_context: Any) -> beam.PTransform[Any, Any]:
    if _SLOT.transform is None or proto.spec.urn != _SLOT.urn:
        raise RuntimeError(f"{proto.spec.urn} is expanded only through crossinfer's "
                           "expansion servicer, which validates the request first")
    return _SLOT.transform


_registered = False


def register_urns() -> None:
    """Register our URNs with Beam's PTransform registry (idempotent)."""
    global _registered
    if not _registered:
        from crossinfer.expansion.report import REPORT_URN

        for urn in (*(pattern.urn for pattern in PATTERNS), REPORT_URN):
            beam.PTransform.register_urn(urn, None, _from_runner_api)
        _registered = True
