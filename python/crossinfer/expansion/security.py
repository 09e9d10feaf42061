"""Turn a client's ExpansionRequest into one that cannot make the service run code.

Beam's stock expansion service deserialises whatever the request carries: every
transform in ``components`` (a pickled DoFn is unpickled), coders (a pickled
coder is unpickled), windowing strategies (a pickled WindowFn is unpickled), and
it merges the client's pipeline options into its own. Here the request is
rebuilt from validated pieces only:

* the transform: one of our URNs, its payload, exactly one input;
* the input PCollection with a Row coder (``beam:coder:row:v1``) and the coders
  and windowing strategy it reaches, each of a standard, data-only URN;
* producers of the input: replaced by bare Impulse stubs (which is all a client
  sends anyway - Beam only needs a producer to exist);
* no output coder requests (our outputs are typed by the service) and no client
  pipeline options except ``streaming`` (the service owns the worker
  environment; a client's ``LOOPBACK`` or ``environment_config`` would otherwise
  leak into the expansion and break it);
* every name and id bounded in length (the transform's name is copied into every
  sub-transform's name, so an unbounded one multiplied the response);
* every row schema within the input-schema bounds and given ids derived from its
  content (:mod:`.registry`), before Beam's code sees it; the client's own protos
  are put back in the response (:func:`restore_client_components`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_expansion_api_pb2, beam_runner_api_pb2, schema_pb2
from google.protobuf import struct_pb2

from crossinfer.errors import CrossinferError
from crossinfer.expansion.limits import RequestLimits, fixed
from crossinfer.expansion.registry import with_content_ids
from crossinfer.expansion.schemas import InputSchemaError, failing_field, schema_problem

#: Coders that describe data only (no pickled Python, no opaque foreign coders).
SAFE_CODER_URNS = frozenset(c.urn for c in (
    common_urns.coders.BOOL, common_urns.coders.BYTES, common_urns.coders.DOUBLE,
    common_urns.coders.GLOBAL_WINDOW, common_urns.coders.INTERVAL_WINDOW,
    common_urns.coders.ITERABLE, common_urns.coders.KV, common_urns.coders.LENGTH_PREFIX,
    common_urns.coders.NULLABLE, common_urns.coders.PARAM_WINDOWED_VALUE,
    common_urns.coders.ROW, common_urns.coders.SHARDED_KEY,
    common_urns.coders.STATE_BACKED_ITERABLE, common_urns.coders.STRING_UTF8,
    common_urns.coders.TIMER, common_urns.coders.VARINT, common_urns.coders.WINDOWED_VALUE,
))

#: Window functions that are pure data (a pickled Python WindowFn is not).
SAFE_WINDOW_FN_URNS = frozenset(w.urn for w in (
    common_urns.global_windows, common_urns.fixed_windows, common_urns.sliding_windows,
    common_urns.session_windows,
))

ROW_CODER_URN = common_urns.coders.ROW.urn
IMPULSE_URN = common_urns.primitives.IMPULSE.urn

#: Client pipeline options that still apply to an expansion.
_KEPT_OPTIONS = frozenset({"beam:option:streaming:v1"})


class RequestRefused(CrossinferError, ValueError):
    """The request is malformed or asks for something the service never does."""


@dataclass(frozen=True)
class CleanRequest:
    request: beam_expansion_api_pb2.ExpansionRequest
    #: The input PCollection's row schema, with content-derived ids.
    input_schema: schema_pb2.Schema
    #: The client's components, as sent (see :func:`restore_client_components`).
    client: beam_runner_api_pb2.Components = field(
        default_factory=beam_runner_api_pb2.Components)


def sanitize(request: beam_expansion_api_pb2.ExpansionRequest,
             limits: RequestLimits | None = None) -> CleanRequest:
    """A rebuilt request holding only what expanding a crossinfer transform needs;
    RequestRefused (or InputSchemaError) naming what is wrong. Cheap: nothing here
    runs Beam's schema or windowing code (see :func:`check_with_beam`)."""
    limits = limits or RequestLimits()
    check_names(request)
    given = request.transform
    if len(given.inputs) != 1:
        raise RequestRefused(f"input: a crossinfer transform takes exactly one input "
                             f"PCollection, got {len(given.inputs)}")
    (tag, pcoll_id), = given.inputs.items()
    source = request.components
    if pcoll_id not in source.pcollections:
        raise RequestRefused(f"input: PCollection {pcoll_id!r} is not in the request's "
                             "components")
    pcoll = source.pcollections[pcoll_id]
    clean = beam_runner_api_pb2.Components()
    # Only what Beam needs of the input (its display data and the like stay out).
    clean.pcollections[pcoll_id].CopyFrom(beam_runner_api_pb2.PCollection(
        unique_name=_bounded_id(pcoll.unique_name, "the input PCollection"),
        coder_id=pcoll.coder_id, is_bounded=pcoll.is_bounded,
        windowing_strategy_id=pcoll.windowing_strategy_id))
    input_coder = source.coders.get(pcoll.coder_id)
    if input_coder is None or input_coder.spec.urn != ROW_CODER_URN:
        found = input_coder.spec.urn if input_coder is not None else "none"
        raise RequestRefused(
            f"input: the input PCollection must have a schema (coder {ROW_CODER_URN}), got "
            f"{found!r}; send Beam Rows (Java: a PCollection<Row> with setRowSchema; "
            "Python: beam.Row elements, or a NamedTuple type registered with "
            "beam.coders.registry.register_coder(T, beam.coders.RowCoder))")
    _copy_coder(source, clean, pcoll.coder_id, "input coder", limits)
    _copy_windowing(source, clean, pcoll.windowing_strategy_id, limits)
    # Beam's servicer needs a producer per input PCollection; a payload-free
    # Impulse stub under the client's id and name is enough and runs nothing.
    stub_id, stub_name, out_tag = f"crossinfer_input_{tag}", f"crossinfer_input_{tag}", "out"
    for tid, t in source.transforms.items():
        produced = [k for k, v in t.outputs.items() if v == pcoll_id]
        if produced:
            stub_id, stub_name, out_tag = tid, t.unique_name, produced[0]
            for value in (stub_id, stub_name, out_tag):
                _bounded_id(value, "the input's producer")
            break
    clean.transforms[stub_id].CopyFrom(beam_runner_api_pb2.PTransform(
        unique_name=stub_name, spec=beam_runner_api_pb2.FunctionSpec(urn=IMPULSE_URN),
        outputs={out_tag: pcoll_id}))
    transform = beam_runner_api_pb2.PTransform(
        unique_name=given.unique_name,
        spec=beam_runner_api_pb2.FunctionSpec(urn=given.spec.urn, payload=given.spec.payload),
        inputs={tag: pcoll_id})
    options = struct_pb2.Struct()
    for key, value in request.pipeline_options.fields.items():
        if key in _KEPT_OPTIONS:
            options.fields[key].CopyFrom(value)
    schema = schema_pb2.Schema.FromString(clean.coders[pcoll.coder_id].spec.payload)
    clean_request = beam_expansion_api_pb2.ExpansionRequest(
        components=clean, transform=transform, namespace=request.namespace,
        pipeline_options=options, requirements=list(request.requirements))
    return CleanRequest(clean_request, schema, source)


#: The request's strings that the service copies into its response, by field path.
def _names(request: beam_expansion_api_pb2.ExpansionRequest) -> list[tuple[str, str]]:
    given = request.transform
    found = [("transform.unique_name", given.unique_name), ("namespace", request.namespace)]
    found += [("transform.inputs", k) for k in given.inputs]
    found += [("transform.inputs", v) for v in given.inputs.values()]
    found += [("requirements", r) for r in request.requirements]
    return found


def check_names(request: beam_expansion_api_pb2.ExpansionRequest) -> None:
    """RequestRefused unless every name and id the service copies is bounded."""
    longest = fixed("transform.unique_name, namespace, ids and tags (length)")
    if len(request.requirements) > 64:
        raise RequestRefused(f"requirements: {len(request.requirements)} entries; at most 64")
    for path, text in _names(request):
        if len(text) > longest:
            raise RequestRefused(f"{path}: a name or id of {len(text):,} characters; at most "
                                 f"{longest} are allowed")


def _bounded_id(value: str, what: str) -> str:
    longest = fixed("transform.unique_name, namespace, ids and tags (length)")
    if len(value) > longest:
        raise RequestRefused(f"input: {what} has an id or name of {len(value):,} characters; "
                             f"at most {longest} are allowed")
    return value


def _copy_coder(source: beam_runner_api_pb2.Components, clean: beam_runner_api_pb2.Components,
                coder_id: str, what: str, limits: RequestLimits) -> None:
    """Copy a coder and its component coders, refusing any that is not data-only;
    row schemas are checked and get content-derived ids (the client's are put back
    in the response)."""
    stack = [(coder_id, what)]
    while stack:
        cid, role = stack.pop()
        if cid in clean.coders:
            continue
        if cid not in source.coders:
            raise RequestRefused(f"input: {role} {cid!r} is not in the request's components")
        if len(clean.coders) >= 16:
            raise RequestRefused(f"input: {role}: more than 16 coders reached from the input")
        _bounded_id(cid, role)
        coder = source.coders[cid]
        if coder.spec.urn not in SAFE_CODER_URNS:
            raise RequestRefused(f"input: {role} has coder {coder.spec.urn!r}, which is not a "
                                 "standard data coder; pickled or language-specific coders "
                                 "are refused")
        clean.coders[cid].CopyFrom(coder)
        if coder.spec.urn == ROW_CODER_URN:
            schema = checked_schema(coder.spec.payload, limits, f"{role} {cid!r}")
            clean.coders[cid].spec.payload = schema.SerializeToString()
        stack.extend((c, f"component of {role}") for c in coder.component_coder_ids)


def checked_schema(payload: bytes, limits: RequestLimits, role: str,
                   path: str = "input") -> schema_pb2.Schema:
    """The row schema in ``payload`` (of the ``role``), within the input-schema
    bounds, with ids derived from its content; RequestRefused / InputSchemaError
    naming ``path`` and what is wrong."""
    largest = fixed("input schema (bytes)")
    if len(payload) > largest:
        raise InputSchemaError(f"{path}: the schema of the {role} is {len(payload):,} bytes; "
                               f"at most {largest:,} are allowed")
    try:
        schema = schema_pb2.Schema.FromString(payload)
    except Exception as exc:  # protobuf raises DecodeError (and RecursionError) and others
        raise RequestRefused(f"{path}: the {role} carries a malformed schema "
                             f"({type(exc).__name__})") from exc
    problem = schema_problem(schema, limits)
    if problem:
        raise InputSchemaError(f"{path}: {problem}")
    return with_content_ids(schema)


def restore_client_components(response: beam_expansion_api_pb2.ExpansionResponse,
                              clean: CleanRequest) -> None:
    """Put the client's own protos back under the ids the client sent (the service
    replaced schema ids and dropped what it does not need): merged into the
    client's pipeline, the response describes the client's PCollections as the
    client does."""
    kept = clean.request.components
    for kind in ("coders", "pcollections", "windowing_strategies"):
        given, ours, out = (getattr(c, kind) for c in (clean.client, kept, response.components))
        for cid in ours:
            if cid in given and cid in out:
                out[cid].CopyFrom(given[cid])


def check_with_beam(clean: CleanRequest) -> Any:
    """Decode the input coder and windowing strategy with Beam's own code, as its
    expansion will; whatever it raises is the client's and is refused as ``input:``
    (bad window payloads raised ZeroDivisionError deep inside Beam's expansion).
    Returns the input's ``apache_beam.transforms.core.Windowing``."""
    from apache_beam.runners import pipeline_context

    request = clean.request
    (pcoll_id,) = request.transform.inputs.values()
    pcoll = request.components.pcollections[pcoll_id]
    context = pipeline_context.PipelineContext(request.components)
    try:
        windowing = context.windowing_strategies.get_by_id(pcoll.windowing_strategy_id)
    except Exception as exc:  # Beam's windowing code on the client's payload
        raise RequestRefused(f"input: the windowing strategy {pcoll.windowing_strategy_id!r} "
                             f"cannot be read: {_reason(exc)}") from exc
    try:
        context.coders.get_by_id(pcoll.coder_id)
    except Exception as exc:  # Beam's coder code on the client's coders
        raise RequestRefused(f"input: {failing_field(clean.input_schema, exc)}") from exc
    return windowing


def input_bounded(clean: CleanRequest) -> bool:
    """Whether the request's input PCollection is bounded."""
    (pcoll_id,) = clean.request.transform.inputs.values()
    return bool(clean.request.components.pcollections[pcoll_id].is_bounded
                != beam_runner_api_pb2.IsBounded.UNBOUNDED)


def check_grouping(clean: CleanRequest, windowing: Any, why: str) -> None:
    """RequestRefused (``input:``) when a GroupByKey over the input's windowing
    (``windowing``, from :func:`check_with_beam`) would fail Beam's own check:
    a trigger that may lose data, or unbounded input in the global window with
    the default trigger. ``why`` says which part of the request groups. (Beam
    raised it deep in its expansion, as an internal error with the trigger's
    whole repr.)"""
    from apache_beam.transforms.trigger import DataLossReason, DefaultTrigger
    from apache_beam.transforms.window import GlobalWindows

    (pcoll_id,) = clean.request.transform.inputs.values()
    ws_id = clean.request.components.pcollections[pcoll_id].windowing_strategy_id
    trigger = windowing.triggerfn
    if not input_bounded(clean) and isinstance(windowing.windowfn, GlobalWindows) and \
            isinstance(trigger, DefaultTrigger):
        raise RequestRefused(f"input: the windowing strategy {_clip(ws_id, 100)!r} is the "
                             f"global window with the default trigger over unbounded input, "
                             f"which never fires; {why}: window the input or set a trigger")
    reason = trigger.may_lose_data(windowing)
    if reason != DataLossReason.NO_POTENTIAL_LOSS:
        raise RequestRefused(
            f"input: the windowing strategy {_clip(ws_id, 100)!r} has the trigger "
            f"{_clip(str(trigger), 200)}, which may lose data "
            f"({str(reason).replace('DataLossReason.', '')}); {why}: use a trigger that "
            "fires repeatedly (Repeatedly(...), AfterWatermark) or the default trigger")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _reason(exc: BaseException) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= 300 else text[:297] + "..."


def _copy_windowing(source: beam_runner_api_pb2.Components,
                    clean: beam_runner_api_pb2.Components, ws_id: str,
                    limits: RequestLimits) -> None:
    _bounded_id(ws_id, "windowing strategy")
    if ws_id not in source.windowing_strategies:
        raise RequestRefused(f"input: windowing strategy {ws_id!r} is not in the request's "
                             "components")
    strategy = source.windowing_strategies[ws_id]
    if strategy.window_fn.urn not in SAFE_WINDOW_FN_URNS:
        raise RequestRefused(f"input: window function {strategy.window_fn.urn!r} is refused; "
                             "use global, fixed, sliding or session windows")
    clean.windowing_strategies[ws_id].CopyFrom(strategy)
    # Standard window functions need no environment: the client's stays out.
    clean.windowing_strategies[ws_id].environment_id = ""
    _copy_coder(source, clean, strategy.window_coder_id, "window coder", limits)
