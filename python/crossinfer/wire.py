"""Names and values crossinfer shares with every other language: the one place for them.

Each constant here is part of the wire contract (``docs/wire-contract.md``)
that the Java SDK, a Go or any other Beam pipeline, and the expansion service
rely on; the Python patterns use the same values. Change one only with a new
contract version. The module imports nothing, so any layer may use it.
"""

from __future__ import annotations

# ------------------------------------------------------------------ URNs

URN_PREFIX = "beam:transform:crossinfer:"
URN_VERSION = "v1"


def urn(name: str) -> str:
    """The URN of one expandable transform: ``beam:transform:crossinfer:<name>:v1``."""
    return f"{URN_PREFIX}{name}:{URN_VERSION}"


MODEL_URN = urn("model")
AB_TEST_URN = urn("ab_test")
SEQUENCE_URN = urn("sequence")
KEYED_URN = urn("keyed")
#: The experiment report: report input rows in, ``arms`` and ``pairs`` out.
REPORT_URN = urn("experiment_report")

# ------------------------------------------------------------------ outputs

#: The output tags of every crossinfer inference transform (Python: the
#: ``results`` and ``failures`` of :class:`crossinfer.InferenceOutputs`).
RESULTS_TAG = "results"
FAILURES_TAG = "failures"

#: Fields a result row adds to its input row's, in this order.
OUTPUT_FIELDS = ("model", "path", "inference", "label", "score", "labels", "scores")
#: Fields a result row adds after :data:`OUTPUT_FIELDS` when timing is asked
#: (Python ``timing=True``, the payload's ``timing`` "true", Java ``withTiming()``):
#: per model on the row's path, in path order, its call's wall time divided by
#: its rows in milliseconds (list of float64) and its call's rows (list of int64).
TIMING_FIELDS = ("model_ms", "batch_size")
#: The fields of a failure row.
FAILURE_FIELDS = ("element", "node", "error")
#: The ``node`` of a failure whose input was malformed (no model was involved).
INPUT_NODE = "input"

# ------------------------------------------------------------------ input

DEFAULT_FEATURES_FIELD = "features"
DEFAULT_KEY_FIELD = "key"
#: A ``bytes`` features field holds packed little-endian float32 values.
PACKED_DTYPE = "<f4"

# ------------------------------------------------------------------ batch transport

#: ``lengths`` value of a row the client could not pack.
UNPACKED = -1
#: Feature dtypes a batch may carry: packed float32, float64 (float and double
#: arrays), int64 (integer arrays) - what the row transport would make of them.
BATCH_DTYPES = ("<f4", "<f8", "<i8")
#: Results per result batch at most.
RESULT_BATCH_ROWS = 1024
#: The numeric columns of a result batch and their little-endian dtypes.
RESULT_COLUMNS = {"node": "<i4", "inference": "<f8", "inference_lengths": "<i4",
                  "label": "<i8", "label_set": "u1", "score": "<f8", "score_set": "u1",
                  "labels": "<i8", "labels_lengths": "<i4", "scores": "<f8",
                  "scores_lengths": "<i4"}
#: The columns a result batch adds when timing is asked, and their dtypes:
#: ``model_ms`` and ``batch_size`` concatenated over the results, each result's
#: count (its model stages) in ``model_ms_lengths``.
TIMING_COLUMNS = {"model_ms": "<f8", "model_ms_lengths": "<i4", "batch_size": "<i8"}
