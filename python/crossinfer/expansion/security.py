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
  leak into the expansion and break it).
"""

from __future__ import annotations

from dataclasses import dataclass

from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_expansion_api_pb2, beam_runner_api_pb2, schema_pb2
from google.protobuf import struct_pb2

from crossinfer.errors import CrossinferError
from crossinfer.expansion.schemas import code_bearing_field

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
    input_schema: schema_pb2.Schema


def sanitize(request: beam_expansion_api_pb2.ExpansionRequest) -> CleanRequest:
    """A rebuilt request holding only what expanding a crossinfer transform needs."""
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
    clean.pcollections[pcoll_id].CopyFrom(pcoll)
    input_coder = source.coders.get(pcoll.coder_id)
    if input_coder is None or input_coder.spec.urn != ROW_CODER_URN:
        found = input_coder.spec.urn if input_coder is not None else "none"
        raise RequestRefused(
            f"input: the input PCollection must have a schema (coder {ROW_CODER_URN}), got "
            f"{found!r}; send Beam Rows (Java: a PCollection<Row> with setRowSchema; "
            "Python: beam.Row elements, or a NamedTuple type registered with "
            "beam.coders.registry.register_coder(T, beam.coders.RowCoder))")
    _copy_coder(source, clean, pcoll.coder_id, "input coder")
    _copy_windowing(source, clean, pcoll.windowing_strategy_id)
    # Beam's servicer needs a producer per input PCollection; a payload-free
    # Impulse stub under the client's id and name is enough and runs nothing.
    stub_id, stub_name, out_tag = f"crossinfer_input_{tag}", f"crossinfer_input_{tag}", "out"
    for tid, t in source.transforms.items():
        produced = [k for k, v in t.outputs.items() if v == pcoll_id]
        if produced:
            stub_id, stub_name, out_tag = tid, t.unique_name, produced[0]
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
    schema = schema_pb2.Schema.FromString(input_coder.spec.payload)
    clean_request = beam_expansion_api_pb2.ExpansionRequest(
        components=clean, transform=transform, namespace=request.namespace,
        pipeline_options=options, requirements=list(request.requirements))
    return CleanRequest(clean_request, schema)


def _copy_coder(source: beam_runner_api_pb2.Components, clean: beam_runner_api_pb2.Components,
                coder_id: str, what: str) -> None:
    """Copy a coder and its component coders, refusing any that is not data-only."""
    stack = [(coder_id, what)]
    while stack:
        cid, role = stack.pop()
        if cid in clean.coders:
            continue
        if cid not in source.coders:
            raise RequestRefused(f"input: {role} {cid!r} is not in the request's components")
        coder = source.coders[cid]
        if coder.spec.urn not in SAFE_CODER_URNS:
            raise RequestRefused(f"input: {role} has coder {coder.spec.urn!r}, which is not a "
                                 "standard data coder; pickled or language-specific coders "
                                 "are refused")
        if coder.spec.urn == ROW_CODER_URN:
            _check_row_payload(coder.spec.payload, role)
        clean.coders[cid].CopyFrom(coder)
        stack.extend((c, f"component of {role}") for c in coder.component_coder_ids)


def _check_row_payload(payload: bytes, role: str) -> None:
    try:
        schema = schema_pb2.Schema.FromString(payload)
    except Exception as exc:  # protobuf raises DecodeError and others
        raise RequestRefused(f"input: {role} carries a malformed schema ({exc})") from exc
    problem = code_bearing_field(schema)
    if problem:
        raise RequestRefused(f"input: {problem}")


def _copy_windowing(source: beam_runner_api_pb2.Components,
                    clean: beam_runner_api_pb2.Components, ws_id: str) -> None:
    if ws_id not in source.windowing_strategies:
        raise RequestRefused(f"input: windowing strategy {ws_id!r} is not in the request's "
                             "components")
    strategy = source.windowing_strategies[ws_id]
    if strategy.window_fn.urn not in SAFE_WINDOW_FN_URNS:
        raise RequestRefused(f"input: window function {strategy.window_fn.urn!r} is refused; "
                             "use global, fixed, sliding or session windows")
    clean.windowing_strategies[ws_id].CopyFrom(strategy)
    _copy_coder(source, clean, strategy.window_coder_id, "window coder")
    env_id = strategy.environment_id
    if env_id and env_id in source.environments:
        clean.environments[env_id].CopyFrom(source.environments[env_id])
