"""The experiment report URN: ``beam:transform:crossinfer:experiment_report:v1``.

Input: one PCollection of report input rows (the schema of
:class:`crossinfer.experiments.ReportInput`; a client projects its result and
failure rows to it, as crossinfer's Java ``ExperimentReport`` does). Payload:
an ``ExternalConfigurationPayload`` Row of the report settings:

==============  ===================  =================================================
``spec``        STRING, required     the A/B spec (JSON text) the results came from
``ground_truth``  STRING, nullable   the ground-truth field's name: set = report the metric
``metric``      STRING, nullable     ``accuracy`` (default) or ``mean_abs_error``
``control``     STRING, nullable     the arm compared against (default: the first)
``confidence``  DOUBLE, nullable     interval level in (0, 1) (default 0.95)
==============  ===================  =================================================

Outputs: ``arms`` (ArmReport rows) and ``pairs`` (PairReport rows), with the
fixed schemas of docs/wire-contract.md. Decoding is as strict as the inference
payload's (:mod:`.payload`): the schema is checked before any byte is read,
only STRING and DOUBLE fields, no unknown or repeated field.
"""

from __future__ import annotations

import math
import typing
import uuid
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.portability.api import schema_pb2
from apache_beam.pvalue import PCollection
from apache_beam.transforms.external import NamedTupleBasedPayloadBuilder

from crossinfer.expansion.payload import PayloadError, decode_row_payload, parse_spec_json
from crossinfer.expansion.registry import content_id
from crossinfer.expansion.security import (
    CleanRequest,
    RequestRefused,
    check_grouping,
    check_with_beam,
)
from crossinfer.expansion.urns import REPORT_URN
from crossinfer.experiments import (
    ArmReport,
    PairReport,
    ReportFromInputs,
    ReportInput,
    ReportSettings,
    ReportSettingsError,
)
from crossinfer.experiments.schema import OPTIONAL_INPUT_FIELDS, SCHEMA_IDS
from crossinfer.policy import CODE_FORMATS, LoadPolicy
from crossinfer.spec import load_spec
from crossinfer.spec.limits import SpecLimits

ARMS_TAG = "arms"
PAIRS_TAG = "pairs"

#: The payload's fields and their types (all may be nullable but ``spec``).
FIELDS: dict[str, schema_pb2.AtomicType.ValueType] = {
    "spec": schema_pb2.STRING, "ground_truth": schema_pb2.STRING,
    "metric": schema_pb2.STRING, "control": schema_pb2.STRING,
    "confidence": schema_pb2.DOUBLE,
}
_ID_NAMESPACE = uuid.UUID("8d1f8f0a-6c2b-5d4e-a1f3-0b9c8d7e6f5a")

# Functional form with typing.Optional: Beam reads neither the string annotations of
# `from __future__ import annotations` nor `X | None`.
ReportPayloadRow = NamedTuple("ReportPayloadRow", [  # noqa: UP014 - see above
    ("spec", str),
    ("ground_truth", typing.Optional[str]),  # noqa: UP045
    ("metric", typing.Optional[str]),  # noqa: UP045
    ("control", typing.Optional[str]),  # noqa: UP045
    ("confidence", typing.Optional[float]),  # noqa: UP045
])


def encode_report_payload(spec_json: str, ground_truth: str | None = None,
                          metric: str | None = None, control: str | None = None,
                          confidence: float | None = None) -> bytes:
    """The serialized payload of a report request (Python clients, tests)."""
    data: bytes = NamedTupleBasedPayloadBuilder(ReportPayloadRow(
        spec_json, ground_truth, metric, control, confidence)).payload()
    return data


@dataclass(frozen=True)
class ReportPayload:
    """A decoded report payload: the spec as plain JSON (within the spec limits'
    bytes and nesting, not yet validated) and the report's other settings."""

    spec: dict[str, Any]
    settings: dict[str, Any]


def decode_report_payload(data: bytes, limits: SpecLimits | None = None) -> ReportPayload:
    """Decode the payload (cheap: no spec validation), or raise PayloadError naming
    the field."""
    values = decode_row_payload(data, _checked_schema)
    confidence = values.get("confidence")
    if confidence is not None and not (math.isfinite(confidence) and 0 < confidence < 1):
        raise PayloadError(f"payload.confidence: {confidence!r} is not in (0, 1)")
    settings: dict[str, Any] = {
        "ground_truth": values.get("ground_truth"),
        "metric": values.get("metric") or "accuracy",
        "control": values.get("control") or "",
        "confidence": 0.95 if confidence is None else confidence,
    }
    return ReportPayload(parse_spec_json(values.get("spec"), limits), settings)


def report_settings(payload: ReportPayload, policy: LoadPolicy,
                    limits: SpecLimits | None = None) -> ReportSettings:
    """The checked settings of a decoded payload: its spec validated as this
    service validates an inference spec (``load_spec`` with ``limits``: the
    envelope, sizes, names, every number, field paths), except the rules for
    loading models - nothing is loaded: the report reads the spec's structure,
    never its models. So no file is opened and no class imported, and model
    roots, formats and pins are not checked (class names must still be ones
    ``policy`` allows); SpecError naming each field, or PayloadError."""
    structure_only = replace(policy, check_files=False, model_roots=None,
                             code_formats=tuple(CODE_FORMATS), require_sha256=False)
    spec = load_spec(payload.spec, structure_only, limits)
    try:
        return ReportSettings.from_spec(spec, **payload.settings)
    except ReportSettingsError as exc:
        text = str(exc)
        if text.startswith("experiment"):
            text = "spec.node" + text[len("experiment"):]
        raise PayloadError(f"payload.{text}") from exc


def _checked_schema(schema: schema_pb2.Schema) -> schema_pb2.Schema:
    names = [f.name for f in schema.fields]
    unknown = [n for n in names if n not in FIELDS]
    if unknown:
        raise PayloadError(f"payload: unknown field(s) {', '.join(map(repr, unknown))}; the "
                           f"report payload has only {', '.join(FIELDS)}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PayloadError(f"payload: field(s) {', '.join(map(repr, duplicates))} appear "
                           "more than once")
    if "spec" not in names:
        raise PayloadError("payload.spec: is required (the A/B spec as JSON text)")
    clean = schema_pb2.Schema(encoding_positions_set=schema.encoding_positions_set)
    for f in schema.fields:
        want = FIELDS[f.name]
        if f.type.WhichOneof("type_info") != "atomic_type" or f.type.atomic_type != want:
            raise PayloadError(f"payload.{f.name}: must be a {schema_pb2.AtomicType.Name(want)}")
        clean.fields.add(name=f.name, encoding_position=f.encoding_position,
                         type=schema_pb2.FieldType(atomic_type=want, nullable=f.type.nullable))
    if clean.encoding_positions_set and sorted(
            f.encoding_position for f in clean.fields) != list(range(len(clean.fields))):
        raise PayloadError("payload: encoding positions must number the fields 0..n-1")
    clean.id = content_id(_ID_NAMESPACE, clean)
    return clean


def _input_types() -> dict[str, schema_pb2.FieldType]:
    from apache_beam.typehints.schemas import schema_from_element_type

    return {f.name: f.type for f in schema_from_element_type(ReportInput).fields}


def check_report_input(schema: schema_pb2.Schema) -> None:
    """The input rows must have exactly the ReportInput fields, with its types
    (in any order; a field ReportInput allows null may be non-null), but for
    the optional ones (``OPTIONAL_INPUT_FIELDS``: the timing fields and ``key``), which older
    clients' rows lack."""
    want = _input_types()
    got = {f.name: f.type for f in schema.fields}
    missing = sorted(set(want) - set(got) - set(OPTIONAL_INPUT_FIELDS))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        raise RequestRefused(
            "input: the report reads rows of the report input schema (fields "
            f"{', '.join(want)}); missing: {', '.join(missing) or 'none'}; unknown: "
            f"{', '.join(extra) or 'none'}")
    for name, t in want.items():
        if name not in got:
            continue  # an optional field: null
        g = schema_pb2.FieldType()
        g.CopyFrom(got[name])
        g.nullable = t.nullable  # nullable or not, either way
        if g.SerializeToString(deterministic=True) != t.SerializeToString(deterministic=True):
            raise RequestRefused(f"input: field {name!r} has type {str(got[name]).strip()!r}; "
                                 f"the report input needs {str(t).strip()!r}")


class _AsReportInput(beam.DoFn):
    """The client's rows (its schema's NamedTuple) -> ReportInput (an optional
    field the rows lack is null)."""

    def process(self, row: Any) -> Any:
        values: list[Any] = [getattr(row, f, None) for f in ReportInput._fields]
        yield ReportInput(*values)


class ExpandedReport(beam.PTransform[Any, Any]):
    def __init__(self, settings: ReportSettings) -> None:
        super().__init__()
        self._settings = settings

    def expand(self, pcoll: PCollection[Any]) -> dict[str, PCollection[Any]]:
        as_input = _AsReportInput()  # type: ignore[no-untyped-call]  # Beam's DoFn.__init__
        rows = pcoll | "AsReportInput" >> beam.ParDo(as_input).with_output_types(ReportInput)
        out = rows | "Report" >> ReportFromInputs(self._settings)
        return {ARMS_TAG: out.arms, PAIRS_TAG: out.pairs}


def plan_report(payload: ReportPayload, clean: CleanRequest, policy: LoadPolicy,
                limits: SpecLimits | None = None) -> beam.PTransform[Any, Any]:
    """Check a decoded report request (``clean``: the sanitised request); the
    transform, or raise (PayloadError, SpecError, RequestRefused)."""
    settings = report_settings(payload, policy, limits)
    check_report_input(clean.input_schema)
    windowing = check_with_beam(clean)
    check_grouping(clean, windowing, "the report groups its input by arm and window")
    return ExpandedReport(settings)


assert set(SCHEMA_IDS) == {ReportInput, ArmReport, PairReport}
__all__ = ["REPORT_URN", "ReportPayload", "decode_report_payload", "encode_report_payload",
           "plan_report", "report_settings"]
