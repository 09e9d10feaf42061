"""The gRPC Expand handler: refuse, admit, validate, then let Beam's servicer expand.

Every request goes through :func:`plan` first: an allow-listed URN, a strictly
decoded payload within the size limits, a sanitised request (see
:mod:`.security`), a spec validated against the service's load policy and
limits, local model files checked (pins, skops types), the input schema checked, and the core
transform constructed (which surfaces framework problems). Only then does
Beam's ``ExpansionServiceServicer.Expand`` run, on the sanitised request. Any
problem with the request becomes ``ExpansionResponse.error`` - the handler
never raises, so one bad request cannot take the service down. A request the
service has no room or time for (:mod:`.admission`) is refused with the gRPC
status ``RESOURCE_EXHAUSTED`` or ``DEADLINE_EXCEEDED`` instead, so clients can
tell "retry later" from "fix the spec".
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import grpc
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_expansion_api_pb2
from apache_beam.runners.portability.expansion_service import ExpansionServiceServicer
from apache_beam.transforms.environments import Environment

from crossinfer.expansion import transport
from crossinfer.expansion.admission import Admission, Busy, TimedOut, check_deadline, count_nodes
from crossinfer.expansion.payload import Payload, PayloadError, decode_payload
from crossinfer.expansion.report import REPORT_URN, plan_report
from crossinfer.expansion.schemas import (
    InputSchemaError,
    check_input_schema,
    check_schema_id,
    output_types,
)
from crossinfer.expansion.security import RequestRefused, sanitize
from crossinfer.expansion.transform import ExpandedInference, prepared, register_urns
from crossinfer.expansion.urns import PATTERNS, pattern_for_urn, urn_for_node
from crossinfer.policy import LoadPolicy, LocationRefused, is_local
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
    transform: beam.PTransform


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


def decode(request: beam_expansion_api_pb2.ExpansionRequest,
           limits: SpecLimits) -> Payload:
    """The request's payload, after its URN is known to be ours; or raise."""
    urn = request.transform.spec.urn
    if pattern_for_urn(urn) is None:
        raise RequestRefused(unknown_urn_message(urn))
    return decode_payload(request.transform.spec.payload, limits)


def plan(request: beam_expansion_api_pb2.ExpansionRequest, policy: LoadPolicy,
         files: ModelFiles, limits: SpecLimits | None = None,
         payload: Payload | None = None) -> Plan:
    """Check ``request`` and build the transform it asks for, or raise.

    ``payload``: the request's payload when :func:`decode` already read it.
    """
    limits = limits or SpecLimits()
    urn = request.transform.spec.urn
    if urn == REPORT_URN:  # the experiment report (crossinfer.expansion.report)
        clean_request, report = plan_report(request, limits)
        return Plan(urn, clean_request, report)
    pattern = pattern_for_urn(urn)
    if pattern is None:
        raise RequestRefused(unknown_urn_message(urn))
    if payload is None:
        payload = decode_payload(request.transform.spec.payload, limits)
    clean = sanitize(request)
    spec = load_spec(payload.spec, policy, limits)
    if not isinstance(spec.node, pattern.node_type):
        raise RequestRefused(
            f"spec.node.kind: {urn} expands a {pattern.name!r} spec, but the root node is "
            f"{spec.node.kind!r}; use {urn_for_node(spec.node)}")
    files.verify(spec, policy)
    batches = payload.input_schema is not None  # the batch transport
    rows_schema = payload.input_schema if batches else clean.input_schema
    check_schema_id(rows_schema)
    check_input_schema(rows_schema, payload.features_field, payload.key_field,
                       key_required=payload.key_field_given or needs_key(spec))
    if batches:
        transport.check_batch_schema(clean.input_schema)
        core: beam.PTransform = transport.BatchTransportInference(
            spec, input_schema=rows_schema, features_field=payload.features_field,
            key_field=payload.key_field, policy=policy)
        results_type, failures_type = transport.batch_output_types()
    else:
        results_type, failures_type = output_types(rows_schema)
        core = pattern.transform(spec, features_field=payload.features_field,
                                 key_field=payload.key_field, policy=policy,
                                 output_factory=results_type, failure_factory=failures_type)
    return Plan(urn, clean.request, ExpandedInference(core, results_type, failures_type))


def needs_key(spec: InferenceSpec) -> bool:
    """Whether any node routes or splits by the element's key."""
    return any(isinstance(node, KeyedNode) or (isinstance(node, ABTestNode)
                                               and node.split == "hash")
               for _, node in walk(spec.node))


class ModelFiles:
    """Checks local model files at expansion time - pinned SHA-256s, and that a
    skops file names only types skops trusts - so a changed or unsafe file fails
    the client's pipeline construction, not a worker hours later (workers check
    again). Each file is read once per (path, size, mtime)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, int, int], tuple[str, list[str] | None]] = {}

    def verify(self, spec: InferenceSpec, policy: LoadPolicy) -> None:
        """SpecError naming each pinned file whose digest differs, and each skops
        file with untrusted types."""
        problems = []
        for path, node in walk(spec.node):
            if not (isinstance(node, ModelNode) and node.uri):
                continue
            skops = node.resolved_format == "skops"
            if not (node.sha256 or skops):
                continue
            try:  # the same normalised location the workers open
                location = policy.resolve_location(node.uri)
            except LocationRefused:
                continue  # reported by spec validation
            if not is_local(location):
                continue  # remote files are checked by the workers
            found = self.inspect(location, skops)
            if found is None:
                continue  # a missing file is reported by spec validation
            digest, untrusted = found
            if node.sha256 and digest != node.sha256:
                problems.append((f"{path}.sha256", f"the file {node.uri!r} has SHA-256 "
                                 f"{digest}, but the spec pins {node.sha256}; refusing it "
                                 "(the file changed or the pin is wrong)"))
            if untrusted:
                shown = ", ".join(untrusted[:5]) + (" ..." if len(untrusted) > 5 else "")
                problems.append((f"{path}.uri", f"the skops file {node.uri!r} names types "
                                 f"outside skops' trusted defaults ({shown}); refusing it"))
        if problems:
            raise SpecError(problems)

    def inspect(self, path: str, skops: bool) -> tuple[str, list[str] | None] | None:
        """(SHA-256, untrusted skops types or None) of a local file; None if missing."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (path, st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._seen.get(key)
        if cached is not None and (cached[1] is not None or not skops):
            return cached
        sha = hashlib.sha256()
        with open(path, "rb") as f:  # in chunks: model files can be large
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        found = (sha.hexdigest(), skops_untrusted(path) if skops else None)
        with self._lock:
            self._seen[key] = found
        return found


def skops_untrusted(path: str) -> list[str]:
    """The types a skops file names that skops does not trust by default (skops
    reads only the file's schema, nothing is constructed)."""
    import skops.io

    try:
        return list(skops.io.get_untrusted_types(file=path))
    except Exception as exc:  # not a zip, or a malformed schema
        return [f"(not a readable skops file: {type(exc).__name__})"]


def _short(text: str, limit: int = 300) -> str:
    """One bounded log line: the client controls these strings."""
    line = " | ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= limit else line[:limit - 3] + "..."


class CrossinferExpansionServicer(ExpansionServiceServicer):
    """Beam's expansion servicer, restricted to crossinfer's URNs."""

    def __init__(self, policy: LoadPolicy, environment: Environment,
                 limits: SpecLimits | None = None, admission: Admission | None = None) -> None:
        # Beam builds its default environment from options (and would pick
        # DOCKER); the service decides the environment itself from its flags.
        super().__init__(options=PipelineOptions(flags=[], sdk_location="container",
                                                 experiments=["beam_fn_api"]))
        self._default_environment = environment
        self._policy = policy
        self._limits = limits or SpecLimits()
        self._admission = admission or Admission()
        self._files = ModelFiles()
        register_urns()

    @property
    def policy(self) -> LoadPolicy:
        return self._policy

    def Expand(self, request: beam_expansion_api_pb2.ExpansionRequest,
               context: Any = None) -> beam_expansion_api_pb2.ExpansionResponse:
        start = time.perf_counter()
        urn = request.transform.spec.urn
        try:
            response = self._admitted(request, context)
        except (Busy, TimedOut) as exc:
            ms = (time.perf_counter() - start) * 1000
            code = (grpc.StatusCode.RESOURCE_EXHAUSTED if isinstance(exc, Busy)
                    else grpc.StatusCode.DEADLINE_EXCEEDED)
            _LOG.info("expand urn=%s outcome=%s ms=%.0f", _short(urn) or "-", code.name.lower(),
                      ms)
            if context is None:
                raise
            context.abort(code, f"{ERROR_PREFIX}{exc}")
        except Exception as exc:  # a handler that raises fails the RPC: answer instead
            _LOG.exception("internal error expanding %r", urn)
            response = beam_expansion_api_pb2.ExpansionResponse(
                error=f"{ERROR_PREFIX}internal error: {type(exc).__name__}: {exc}")
        ms = (time.perf_counter() - start) * 1000
        if response.error:
            _LOG.info("expand urn=%s outcome=error ms=%.0f error=%s", _short(urn) or "-", ms,
                      _short(response.error))
        else:
            _LOG.info("expand urn=%s outcome=ok ms=%.0f", urn, ms)
        return response

    def _admitted(self, request: beam_expansion_api_pb2.ExpansionRequest,
                  context: Any) -> beam_expansion_api_pb2.ExpansionResponse:
        """Decode the payload (cheap, bounded), then expand in the spec's lane."""
        deadline = self._admission.deadline(context)
        payload: Payload | None = None
        if request.transform.spec.urn != REPORT_URN:  # a report's payload is its own
            try:
                payload = decode(request, self._limits)
            except _USER_ERRORS as exc:
                return beam_expansion_api_pb2.ExpansionResponse(error=ERROR_PREFIX + str(exc))
        # A report expands a fixed, small graph whatever its spec: the small lane.
        nodes = count_nodes(payload.spec) if payload is not None else 1
        with self._admission.slot(nodes, deadline):
            check_deadline(deadline, "while it waited")
            return self._expand(request, context, payload, deadline)

    def _expand(self, request: beam_expansion_api_pb2.ExpansionRequest, context: Any,
                payload: Payload | None, deadline: float
                ) -> beam_expansion_api_pb2.ExpansionResponse:
        try:
            prepared_plan = plan(request, self._policy, self._files, self._limits, payload)
        except _USER_ERRORS as exc:
            return beam_expansion_api_pb2.ExpansionResponse(error=ERROR_PREFIX + str(exc))
        except Exception as exc:
            # Framework problems (e.g. TensorRT absent) surface while the core
            # transform is constructed; their message is the useful part.
            _LOG.debug("expansion refused", exc_info=True)
            return beam_expansion_api_pb2.ExpansionResponse(
                error=f"{ERROR_PREFIX}{type(exc).__name__}: {exc}")
        check_deadline(deadline, "while it was checked")
        with prepared(prepared_plan.urn, prepared_plan.transform):
            response = super().Expand(prepared_plan.request, context)
        check_deadline(deadline, "while Beam expanded it")
        if response.error:
            # Beam returns a traceback; keep it in our log, give the client its
            # last line (the exception) after our prefix.
            _LOG.error("Beam failed to expand %s:\n%s", prepared_plan.urn, response.error)
            last = response.error.strip().splitlines()[-1]
            response = beam_expansion_api_pb2.ExpansionResponse(
                error=f"{ERROR_PREFIX}internal error while expanding: {last}")
        # A producer stub the service made up for an input the client sent without
        # one (the Go SDK does) must not come back: merged into the client's
        # pipeline it is a second producer of the input, which Prism refuses.
        for made_up in (set(prepared_plan.request.components.transforms)
                        - set(request.components.transforms)):
            if made_up in response.components.transforms:
                del response.components.transforms[made_up]
        return response
