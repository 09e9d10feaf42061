"""The gRPC Expand handler: refuse, admit, validate, then let Beam's servicer expand.

Every request goes through :func:`check` (cheap and bounded: an allow-listed
URN, a strictly decoded payload within the size limits, a sanitised request
with bounded row schemas, see :mod:`.security`), is admitted to a lane by its
size (:mod:`.admission`), then goes through :func:`plan`: the input read with
Beam's own code, a spec validated against the service's load policy and
limits, local model files checked (pins, the types a skops file names:
:func:`check_model_files`), the input schema checked, and the core transform
constructed (which surfaces framework problems). Only then does
Beam's ``ExpansionServiceServicer.Expand`` run, on the sanitised request. Any
problem with the request becomes ``ExpansionResponse.error`` - the handler
never raises, so one bad request cannot take the service down. A request the
service has no room or time for (:mod:`.admission`) is refused with the gRPC
status ``RESOURCE_EXHAUSTED`` or ``DEADLINE_EXCEEDED`` instead, so clients can
tell "retry later" from "fix the spec".
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_expansion_api_pb2, schema_pb2
from apache_beam.runners.portability.expansion_service import ExpansionServiceServicer
from apache_beam.transforms.environments import Environment

from crossinfer.expansion import transport
from crossinfer.expansion.admission import Admission, Busy, TimedOut, check_deadline, count_nodes
from crossinfer.expansion.limits import RequestLimits
from crossinfer.expansion.payload import Payload, PayloadError, decode_payload
from crossinfer.expansion.registry import BUDGET
from crossinfer.expansion.report import (
    REPORT_URN,
    ReportPayload,
    decode_report_payload,
    plan_report,
)
from crossinfer.expansion.schemas import (
    InputSchemaError,
    check_input_schema,
    field_count,
    output_types,
    python_type,
)
from crossinfer.expansion.security import (
    CleanRequest,
    RequestRefused,
    check_grouping,
    check_with_beam,
    checked_schema,
    input_bounded,
    restore_client_components,
    sanitize,
)
from crossinfer.expansion.server import status_of
from crossinfer.expansion.transform import ExpandedInference, prepared, register_urns
from crossinfer.expansion.urns import PATTERNS, pattern_for_urn, urn_for_node
from crossinfer.handlers.files import file_problems
from crossinfer.patterns import Inference
from crossinfer.policy import LoadPolicy
from crossinfer.spec import SpecError, load_spec, walk
from crossinfer.spec.limits import SpecLimits
from crossinfer.spec.nodes import ABTestNode, InferenceSpec, KeyedNode, ModelNode

_LOG = logging.getLogger("crossinfer.expansion")

#: Prefix of every error this service returns, so a client can tell ours apart.
ERROR_PREFIX = "crossinfer: "

#: Errors whose message is written for the user (field path first).
_USER_ERRORS = (PayloadError, RequestRefused, InputSchemaError, SpecError)

_FQN_URN = "beam:transforms:python:fully_qualified_named"


@dataclass(frozen=True)
class Plan:
    """A checked request: the sanitised request for Beam, and the transform it expands to."""

    urn: str
    request: beam_expansion_api_pb2.ExpansionRequest
    transform: beam.PTransform[Any, Any]
    #: The sanitised request and the client's components (put back in the response).
    clean: CleanRequest | None = None


@dataclass(frozen=True)
class Checked:
    """A request checked cheaply, before admission: its size decides its lane.

    ``payload`` and ``rows_schema`` are None for the report URN (its payload is
    ``report``; its spec is validated in its lane, as an inference spec is)."""

    urn: str
    payload: Payload | None = None
    clean: CleanRequest | None = None
    #: The schema of the rows to infer on, with content-derived ids.
    rows_schema: schema_pb2.Schema | None = None
    nodes: int = 1
    fields: int = 0
    #: The report URN's decoded payload (None for inference).
    report: ReportPayload | None = None


def unknown_urn_message(urn: str) -> str:
    ours = ", ".join([*(p.urn for p in PATTERNS), REPORT_URN])
    note = ""
    if urn.startswith(_FQN_URN) or "fully_qualified" in urn:
        note = " (Beam's fully-qualified-name transform is not exposed: this service runs no " \
               "client-named code)"
    elif "pickled" in urn or urn.startswith("beam:transform:python:"):
        note = " (pickled or Python-source transforms are refused)"
    shown = urn if len(urn) <= 200 else urn[:197] + "..."
    return f"transform.spec.urn: {shown!r} is not a crossinfer transform{note}; this service " \
           f"expands only {ours}"


def check(request: beam_expansion_api_pb2.ExpansionRequest, limits: SpecLimits,
          request_limits: RequestLimits) -> Checked:
    """The cheap checks (no Beam schema code, no spec validation): an allow-listed
    URN, the payload decoded within the spec limits, the request sanitised with its
    row schemas bounded and given content-derived ids; or raise."""
    urn = request.transform.spec.urn
    if urn == REPORT_URN:  # the experiment report (crossinfer.expansion.report)
        report = decode_report_payload(request.transform.spec.payload, limits)
        clean = sanitize(request, request_limits)
        # Its lane by its size, as for inference: the spec's nodes, the input's fields.
        return Checked(urn, clean=clean, nodes=count_nodes(report.spec),
                       fields=field_count(clean.input_schema), report=report)
    if pattern_for_urn(urn) is None:
        raise RequestRefused(unknown_urn_message(urn))
    payload = decode_payload(request.transform.spec.payload, limits)
    clean = sanitize(request, request_limits)
    rows_schema = clean.input_schema
    if payload.input_schema is not None:  # the batch transport: the rows inside batches
        rows_schema = checked_schema(payload.input_schema.SerializeToString(), request_limits,
                                     "payload", path="payload.input_schema")
    return Checked(urn, payload, clean, rows_schema, count_nodes(payload.spec),
                   field_count(rows_schema))


def plan(request: beam_expansion_api_pb2.ExpansionRequest, policy: LoadPolicy,
         limits: SpecLimits | None = None, checked: Checked | None = None,
         request_limits: RequestLimits | None = None,
         deadline: float | None = None) -> Plan:
    """Check ``request`` and build the transform it asks for, or raise.

    ``checked``: the request's :func:`check` when already done; ``deadline``: a
    monotonic time checked between the costly phases (TimedOut).
    """
    limits = limits or SpecLimits()
    request_limits = request_limits or RequestLimits()
    checked = checked or check(request, limits, request_limits)
    urn = checked.urn
    if urn == REPORT_URN:
        assert checked.report is not None and checked.clean is not None
        report = plan_report(checked.report, checked.clean, policy, limits)
        return Plan(urn, checked.clean.request, report, checked.clean)
    pattern = pattern_for_urn(urn)
    payload, clean, rows_schema = checked.payload, checked.clean, checked.rows_schema
    assert pattern is not None and payload is not None and clean is not None
    assert rows_schema is not None
    windowing = check_with_beam(clean)
    _check(deadline, "while its input was read")
    spec = load_spec(payload.spec, policy, limits)
    if not isinstance(spec.node, pattern.node_type):
        raise RequestRefused(
            f"spec.node.kind: {urn} expands a {pattern.name!r} spec, but the root node is "
            f"{spec.node.kind!r}; use {urn_for_node(spec.node)}")
    grouping = grouping_node(spec, input_bounded(clean))
    if grouping is not None:
        check_grouping(clean, windowing, f"the keyed node at {grouping} groups its input by "
                                         "route")
    check_model_files(spec, policy)
    batches = payload.input_schema is not None  # the batch transport
    check_input_schema(rows_schema, payload.features_field, payload.key_field,
                       key_required=payload.key_field_given or needs_key(spec))
    _check(deadline, "while its spec was checked")
    if batches:
        transport.check_batch_schema(clean.input_schema)
        python_type(rows_schema, "payload.input_schema")
        core: Inference = transport.BatchTransportInference(
            spec, input_schema=rows_schema, features_field=payload.features_field,
            key_field=payload.key_field, policy=policy, limits=limits, timing=payload.timing)
        results_type, failures_type = transport.batch_output_types(payload.timing)
    else:
        results_type, failures_type = output_types(rows_schema, payload.timing)
        core = pattern.transform(spec, features_field=payload.features_field,
                                 key_field=payload.key_field, policy=policy, limits=limits,
                                 output_factory=results_type, failure_factory=failures_type,
                                 timing=payload.timing)
    return Plan(urn, clean.request, ExpandedInference(core, results_type, failures_type), clean)


def _check(deadline: float | None, phase: str) -> None:
    if deadline is not None:
        check_deadline(deadline, phase)


def check_model_files(spec: InferenceSpec, policy: LoadPolicy) -> None:
    """SpecError naming each field when a local model file differs from its pin,
    names skops types the policy does not trust, or cannot be read safely
    (:func:`crossinfer.handlers.files.file_problems`): checked at expansion, so a
    client learns it here rather than from failure rows. (Python pipelines built
    directly check these on the workers only, when they load.)"""
    problems = [(f"{path}.{field}", message) for path, node in walk(spec.node)
                if isinstance(node, ModelNode) for field, message in file_problems(node, policy)]
    if problems:
        raise SpecError(problems)


def grouping_node(spec: InferenceSpec, bounded: bool) -> str | None:
    """The field path of the first node whose expansion groups its input by key
    (a keyed node over bounded input: a GroupByKey), or None."""
    if not bounded:
        return None  # unbounded keyed input is batched with state, not grouped
    return next((path for path, node in walk(spec.node) if isinstance(node, KeyedNode)),
                None)


def needs_key(spec: InferenceSpec) -> bool:
    """Whether any node routes or splits by the element's key."""
    return any(isinstance(node, KeyedNode) or (isinstance(node, ABTestNode)
                                               and node.split == "hash")
               for _, node in walk(spec.node))


#: Most characters of a traceback the log keeps per request (its head and its tail).
_LOG_TRACEBACK_CHARS = 8000


def _bounded(text: str, limit: int = _LOG_TRACEBACK_CHARS) -> str:
    """A traceback for the log, at most ``limit`` characters: its head and its tail
    (an exception's message can quote the client's request, e.g. a trigger's repr)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - limit:,} characters left out] ...\n{text[-half:]}"


def _short(text: str, limit: int = 300) -> str:
    """One bounded log line: the client controls these strings."""
    line = " | ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= limit else line[:limit - 3] + "..."


class CrossinferExpansionServicer(ExpansionServiceServicer):
    """Beam's expansion servicer, restricted to crossinfer's URNs.

    :meth:`answer` is the whole handling of one request (the service's asyncio
    front end calls it in a thread once the request has arrived);
    :meth:`Expand` is the same for gRPC's thread-pool server and in-process use.
    """

    def __init__(self, policy: LoadPolicy, environment: Environment,
                 limits: SpecLimits | None = None, admission: Admission | None = None,
                 request_limits: RequestLimits | None = None) -> None:
        # Beam builds its default environment from options (and would pick
        # DOCKER); the service decides the environment itself from its flags.
        super().__init__(  # type: ignore[no-untyped-call]  # Beam's servicer is untyped
            options=PipelineOptions(flags=[], sdk_location="container",
                                    experiments=["beam_fn_api"]))
        self._default_environment = environment
        self._policy = policy
        self._limits = limits or SpecLimits()
        self._request_limits = request_limits or RequestLimits()
        self._admission = admission or Admission()
        register_urns()

    @property
    def policy(self) -> LoadPolicy:
        return self._policy

    def Expand(self, request: beam_expansion_api_pb2.ExpansionRequest,
               context: Any = None) -> beam_expansion_api_pb2.ExpansionResponse:
        try:
            return self.answer(request, self._admission.deadline(context))
        except (Busy, TimedOut) as exc:
            if context is None:
                raise
            context.abort(status_of(exc), f"{ERROR_PREFIX}{exc}")
            raise  # abort raises; for type checkers

    def answer(self, request: beam_expansion_api_pb2.ExpansionRequest,
               deadline: float) -> beam_expansion_api_pb2.ExpansionResponse:
        """The response to ``request`` (errors in ``response.error``), or Busy /
        TimedOut when the service has no room or time for it (``deadline``: a
        ``time.monotonic()`` value)."""
        start = time.perf_counter()
        urn = request.transform.spec.urn
        try:
            with BUDGET.expansion():
                response = self._admitted(request, deadline)
        except (Busy, TimedOut) as exc:
            _LOG.info("expand urn=%s outcome=%s ms=%.0f", _short(urn) or "-",
                      status_of(exc).name.lower(), (time.perf_counter() - start) * 1000)
            raise
        except Exception as exc:  # a handler that raises fails the RPC: answer instead
            _LOG.error("internal error expanding %r:\n%s", _short(urn),
                       _bounded("".join(traceback.format_exception(exc))))
            response = beam_expansion_api_pb2.ExpansionResponse(
                error=f"{ERROR_PREFIX}internal error: {type(exc).__name__}: {_short(str(exc))}")
        ms = (time.perf_counter() - start) * 1000
        if response.error:
            _LOG.info("expand urn=%s outcome=error ms=%.0f error=%s", _short(urn) or "-", ms,
                      _short(response.error))
        else:
            _LOG.info("expand urn=%s outcome=ok ms=%.0f", urn, ms)
        return response

    def _admitted(self, request: beam_expansion_api_pb2.ExpansionRequest,
                  deadline: float) -> beam_expansion_api_pb2.ExpansionResponse:
        """The cheap checks (bounded), then the expansion in the request's lane."""
        try:
            checked = check(request, self._limits, self._request_limits)
        except _USER_ERRORS as exc:
            return beam_expansion_api_pb2.ExpansionResponse(error=ERROR_PREFIX + str(exc))
        with self._admission.slot(checked.nodes, deadline, checked.fields):
            check_deadline(deadline, "while it waited")
            return self._expand(request, checked, deadline)

    def _expand(self, request: beam_expansion_api_pb2.ExpansionRequest, checked: Checked,
                deadline: float) -> beam_expansion_api_pb2.ExpansionResponse:
        try:
            prepared_plan = plan(request, self._policy, self._limits, checked,
                                 self._request_limits, deadline)
        except _USER_ERRORS as exc:
            return beam_expansion_api_pb2.ExpansionResponse(error=ERROR_PREFIX + str(exc))
        except TimedOut:
            raise
        except Exception as exc:
            # Framework problems (e.g. TensorRT absent) surface while the core
            # transform is constructed; their message is the useful part.
            _LOG.debug("expansion refused", exc_info=True)
            return beam_expansion_api_pb2.ExpansionResponse(
                error=f"{ERROR_PREFIX}{type(exc).__name__}: {_short(str(exc), 1000)}")
        check_deadline(deadline, "while it was checked")
        with prepared(prepared_plan.urn, prepared_plan.transform):
            response: beam_expansion_api_pb2.ExpansionResponse = super().Expand(  # type: ignore[no-untyped-call]
                prepared_plan.request, None)
        check_deadline(deadline, "while Beam expanded it")
        if response.error:
            # Beam returns a traceback; keep it in our log (bounded: its last line
            # can quote the client's request), give the client its last line (the
            # exception) after our prefix.
            _LOG.error("Beam failed to expand %s:\n%s", prepared_plan.urn,
                       _bounded(response.error))
            last = response.error.strip().splitlines()[-1]
            return beam_expansion_api_pb2.ExpansionResponse(
                error=f"{ERROR_PREFIX}internal error while expanding: {_short(last)}")
        # A producer stub the service made up for an input the client sent without
        # one (the Go SDK does) must not come back: merged into the client's
        # pipeline it is a second producer of the input, which Prism refuses.
        for made_up in (set(prepared_plan.request.components.transforms)
                        - set(request.components.transforms)):
            if made_up in response.components.transforms:
                del response.components.transforms[made_up]
        if prepared_plan.clean is not None:
            restore_client_components(response, prepared_plan.clean)
        return response

