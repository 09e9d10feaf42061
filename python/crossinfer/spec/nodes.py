"""The inference spec, declared once: its nodes and their fields.

Each field is declared here once - its type, its default and its rule
(:mod:`crossinfer.spec.constraints`, numbers from :mod:`crossinfer.spec.limits`)
- and everything else follows from the declaration: decoding and validation
with field paths (:mod:`crossinfer.spec.codec`, through pydantic), the
canonical JSON, the JSON Schema (``schema.json``, :mod:`crossinfer.spec.schema`).
The Java builders write the same documents; the golden files
(``tests/golden``) hold both languages to them. Rules that relate several
fields, or depend on the load policy, are in :mod:`crossinfer.spec.validate`.

The classes are plain frozen dataclasses: building one checks nothing, so a
Python pipeline can build a tree and have it checked once, with the field
path of every problem, when the transform is constructed (or by
:func:`crossinfer.spec.load_spec`).

A spec is a tree of nodes:

* :class:`ModelNode` - one model (framework, URI, device, batching, memory, ops).
* :class:`ABTestNode` - arms with weights; ``random``, ``hash`` or ``mirror`` split.
* :class:`SequenceNode` - stages, each stage's post-processed output feeding the next.
* :class:`KeyedNode` - routes of keys to models, an optional default, a model bound.

Nodes nest: an A/B arm or a sequence stage can be any node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictStr,
    Tag,
    TypeAdapter,
)
from pydantic_core import CoreSchema, core_schema

from crossinfer.spec.constraints import (
    IMPORT_PATH_PATTERN,
    Dimensions,
    Dtype,
    Items,
    Keys,
    Name,
    Number,
    OneOf,
    Output,
    Params,
    Pattern,
    Text,
    Version,
    refuse,
    type_name,
)
from crossinfer.spec.ops import OPS, OpParams, op_params

SPEC_VERSION = 1

FRAMEWORKS = ("pytorch", "onnx", "sklearn", "tensorrt", "custom")
DEVICES = ("cpu", "gpu", "auto")
SPLITS = ("random", "hash", "mirror")

#: The formats each framework reads, the first being its default. ``skops`` is
#: scikit-learn's data-only format (skops.io); the formats that can run code
#: when loaded are listed in :data:`crossinfer.policy.CODE_FORMATS`.
FORMATS: Mapping[str, tuple[str, ...]] = {
    "pytorch": ("torchscript", "state_dict"),
    "onnx": ("onnx",),
    "sklearn": ("pickle", "joblib", "skops"),
    "tensorrt": ("engine",),
    "custom": ("custom",),
}

#: Every format, in the order of :data:`FORMATS`.
ALL_FORMATS = tuple(dict.fromkeys(fmt for formats in FORMATS.values() for fmt in formats))

#: Methods a scikit-learn model may be called with.
SKLEARN_METHODS = ("predict", "predict_proba", "decision_function", "transform")

#: pydantic settings of every spec class: unknown fields are refused, and an
#: instance built in Python is checked field by field like a decoded one.
SPEC_CONFIG = ConfigDict(extra="forbid", revalidate_instances="always",
                         use_attribute_docstrings=True)

#: Field metadata: written even when it equals its default, and required in the
#: JSON Schema (a reader still fills in the default).
ALWAYS = {"always": True}

ImportPath = Annotated[str, Pattern(
    IMPORT_PATH_PATTERN, "", checked=False)]  # the load policy checks and resolves it


@dataclass(frozen=True)
class Op:
    """A named pre- or post-processing step, e.g. ``Op("normalize", {"std": 16})``.

    In JSON an op is flat: ``{"op": "normalize", "std": 16}``. The names, the
    parameters and where each op may run are declared in
    :mod:`crossinfer.spec.ops`.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(_step, ref="Op")

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> dict[str, Any]:
        each = handler(TypeAdapter(OpParams).core_schema)
        return {"type": "object", "required": ["op"], "properties": {"op": {"enum": list(OPS)}},
                "oneOf": each["anyOf"]}


class _AsStep:
    """Validates a step (a named op or a Python function) with :class:`Op`'s schema."""

    def __get_pydantic_core_schema__(self, source: Any,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler.generate_schema(Op)


#: A processing step: a named op (portable) or, in Python pipelines only, a
#: function ``numpy.ndarray -> numpy.ndarray``.
Step = Annotated[Op | Callable[..., Any], _AsStep()]


def _step(value: Any) -> Any:
    """A step, checked: an :class:`Op` (its params validated), an op's JSON object
    (decoded to an Op, its params as given), or a Python function."""
    name: Any
    if isinstance(value, Op):
        name, params = value.name, value.params
    elif isinstance(value, dict):
        name = value.get("op")
        if not isinstance(name, str):
            refuse('is required: the op\'s name, e.g. "softmax"', at=".op")
        params = {k: v for k, v in value.items() if k != "op"}
    elif callable(value):
        return value
    else:
        refuse(f'expected an op object like {{"op": "softmax"}}, got {type_name(value)}')
    if not isinstance(name, str):
        refuse(f"expected an op name, got {type_name(name)}")
    try:
        op_params(name, params)
    except ValueError as exc:
        refuse(str(exc))
    return value if isinstance(value, Op) else Op(name, params)


@dataclass(frozen=True)
class Batching:
    """How RunInference batches elements for one model."""

    __pydantic_config__ = SPEC_CONFIG

    min_batch_size: Annotated[int, Number("model.batching.min_batch_size")] | None = None
    """Elements per model call, at least (Beam's default when absent)."""
    max_batch_size: Annotated[int, Number("model.batching.max_batch_size")] | None = None
    """Elements per model call, at most."""
    max_wait_secs: Annotated[float, Number("model.batching.max_wait_secs")] | None = None
    """How long a streaming pipeline buffers a batch, in seconds."""


@dataclass(frozen=True)
class Memory:
    """Model memory settings passed through to Beam's ModelHandler."""

    __pydantic_config__ = SPEC_CONFIG

    large_model: StrictBool = False
    """One copy per machine, shared by every process."""
    model_copies: Annotated[int, Number("model.memory.model_copies")] | None = None
    """Exactly this many copies per machine."""


@dataclass(frozen=True)
class ModelNode:
    """One model.

    ``uri`` is a local path or any Beam FileSystems URI. ``model_class`` (PyTorch
    state dicts) and ``handler_class`` (custom handlers) are import paths
    ``package.module:Name`` that must resolve to a class defined in a module the
    load policy allows (see :class:`crossinfer.policy.LoadPolicy`). Every number
    is bounded (:mod:`crossinfer.spec.limits`).

    ``inference_args``: keyword arguments of this model's call (the scikit-learn
    method, the PyTorch ``forward``, the custom handler's ``run_inference``);
    ONNX and TensorRT models take none. ``output``: which output to use when the
    model returns several (a dict key or an ONNX output name, or a tuple/list
    index); see :func:`crossinfer.handlers.adapter.select_output`.
    """

    __pydantic_config__ = SPEC_CONFIG
    kind: ClassVar[str] = "model"

    name: Annotated[str, Name()]
    framework: Annotated[str, OneOf(*FRAMEWORKS)]
    uri: Annotated[str, Text("model.uri (length)")] | None = None
    """Local path or Beam FileSystems URI (gs://, s3://, ...)."""
    format: Annotated[str, OneOf(*ALL_FORMATS)] | None = None
    """pickle, joblib, torchscript and engine can run code when loaded: a service refuses
    them unless started with --allow-code-format."""
    model_class: ImportPath | None = None
    """module:ClassName of a torch.nn.Module (format state_dict), allow-listed by the load
    policy."""
    model_params: Annotated[Mapping[str, Any], Params()] = field(default_factory=dict)
    """Keyword arguments of model_class."""
    handler_class: ImportPath | None = None
    """module:ClassName of a Beam ModelHandler (framework custom), allow-listed by the load
    policy."""
    handler_params: Annotated[Mapping[str, Any], Params()] = field(default_factory=dict)
    """Keyword arguments of handler_class."""
    method: Annotated[str, OneOf(*SKLEARN_METHODS)] | None = None
    inference_args: Annotated[Mapping[str, Any], Params(keywords=True)] = field(
        default_factory=dict)
    """Keyword arguments of this model's call (not for onnx or tensorrt)."""
    output: Annotated[str | int, Output()] | None = None
    """The output to use when the model returns several: a dict key or ONNX output name, or a
    tuple/list index."""
    device: Annotated[str, OneOf(*DEVICES)] = "cpu"
    dtype: Annotated[str, Dtype()] = "float32"
    """A numeric numpy dtype name: the features are cast to it."""
    input_shape: Annotated[tuple[Annotated[int, Number("model.input_shape[]")], ...],
                           Dimensions()] | None = None
    """The shape of one row's features (checked before the model sees it)."""
    batching: Batching = field(default_factory=Batching)
    memory: Memory = field(default_factory=Memory)
    preprocess: tuple[Step, ...] = ()
    postprocess: tuple[Step, ...] = ()
    sha256: Annotated[str, Pattern(
        "[0-9a-f]{64}", "expected 64 lowercase hex digits (the file's SHA-256)")] | None = None
    """The model file's SHA-256: a worker refuses a file with another checksum."""

    @property
    def resolved_format(self) -> str | None:
        """The format, or the framework's default when none was given."""
        if self.format is not None:
            return self.format
        formats = FORMATS.get(self.framework)
        return formats[0] if formats else None


@dataclass(frozen=True)
class Arm:
    """One arm of an A/B test: a name, a weight (relative) and the node it runs."""

    __pydantic_config__ = SPEC_CONFIG
    #: The canonical JSON's order (the Java builders' too): the weight before the node.
    json_order: ClassVar[tuple[str, ...]] = ("name", "weight", "node")

    name: Annotated[str, Name()]
    node: AnyNode
    weight: Annotated[float, Number("ab_test.arms[].weight")] = field(default=1.0,
                                                                       metadata=ALWAYS)


@dataclass(frozen=True)
class ABTestNode:
    """Split elements between arms.

    * ``random``: each element picks an arm by weight, from a number fixed
      by ``seed``, the salt, the element's features and its key (when it has
      one): distinct elements split independently, the same seed and data
      split the same way on every run and runner, and elements alike in
      features and key land in the same arm.
    * ``hash``: sticky on the element's key: ``sha256(salt + key)`` picks the arm,
      so a key always lands in the same arm, in batch and in streaming. ``salt``
      (of both splits) defaults to the node name, so two experiments split
      independently.
    * ``mirror``: every element reaches every arm (side-by-side comparison).
    """

    __pydantic_config__ = SPEC_CONFIG
    kind: ClassVar[str] = "ab_test"

    name: Annotated[str, Name()]
    arms: Annotated[tuple[Arm, ...], Items(2, "an A/B test needs at least two arms, got {n}")]
    split: Annotated[str, OneOf(*SPLITS)] = "random"
    seed: Annotated[int, Number("ab_test.seed")] = 0
    salt: Annotated[str, Text("ab_test.salt, keyed.routes[].keys[] (length)")] | None = None
    """Defaults to the node name."""


@dataclass(frozen=True)
class SequenceNode:
    """Stages run one after the other; each stage's output (after its
    post-processing) becomes the next stage's features."""

    __pydantic_config__ = SPEC_CONFIG
    kind: ClassVar[str] = "sequence"

    name: Annotated[str, Name()]
    stages: Annotated[tuple[AnyNode, ...], Items(1, "needs at least one stage")]


def _model_only(where: str) -> BeforeValidator:
    """Refuses other node kinds where only a model node fits, naming the kind."""

    def check(value: Any) -> Any:
        kind = _node_kind(value)
        if kind == "model":
            return _without_kind(value)
        if kind in NODE_TYPES:
            refuse(f"{where}, got {kind!r}", at=".kind")
        return _without_kind(_no_node(value))

    return BeforeValidator(check)


@dataclass(frozen=True)
class Route:
    """Keys that share one model."""

    __pydantic_config__ = SPEC_CONFIG

    keys: Annotated[tuple[StrictStr, ...], Keys()]
    node: Annotated[ModelNode, _model_only("keyed routes take model nodes")]


@dataclass(frozen=True)
class KeyedNode:
    """Route elements by key to models, keeping at most ``max_models_per_worker``
    models resident per worker process. Elements of one model are grouped
    before inference, so a bound below the number of models does not thrash.

    ``shards``: groups per route (1 to 1024), so one route's work spreads over
    up to that many workers. None: 16 when every model of the node fits the
    bound (``max_models_per_worker`` unset or at least the number of models),
    else 1 (see :mod:`crossinfer.patterns.shards`)."""

    __pydantic_config__ = SPEC_CONFIG
    kind: ClassVar[str] = "keyed"

    name: Annotated[str, Name()]
    routes: Annotated[tuple[Route, ...], Items(1, "needs at least one route")]
    default: Annotated[ModelNode, _model_only("the default route takes a model node")] \
        | None = None
    """The model of keys no route names; without one, such elements fail."""
    max_models_per_worker: Annotated[int, Number("keyed.max_models_per_worker")] | None = None
    shards: Annotated[int, Number("keyed.shards")] | None = None
    """Groups per route: one route's work spreads over up to this many workers."""


Node = ModelNode | ABTestNode | SequenceNode | KeyedNode

NODE_TYPES: Mapping[str, type[Node]] = {
    cls.kind: cls for cls in (ModelNode, ABTestNode, SequenceNode, KeyedNode)
}


def _node_kind(value: Any) -> str | None:
    """The ``kind`` of a node (an object or a node instance), or None."""
    if isinstance(value, dict):
        kind = value.get("kind")
        return kind if isinstance(kind, str) else None
    return value.kind if isinstance(value, (ModelNode, ABTestNode, SequenceNode, KeyedNode)) \
        else None


def _without_kind(value: Any) -> Any:
    """A node object without its ``kind`` (the discriminator, not a field)."""
    return {k: v for k, v in value.items() if k != "kind"} if isinstance(value, dict) else value


def _no_node(value: Any) -> Any:
    """``value`` if it could be a node at all; else refused as not a node, or as of no
    known kind."""
    if not isinstance(value, dict):
        refuse(f"expected a node object, got {type_name(value)}")
    known = ", ".join(map(repr, NODE_TYPES))
    refuse(f"expected one of {known}, got {value.get('kind')!r}", at=".kind")


def _any_kind(value: Any) -> Any:
    return value if _node_kind(value) in NODE_TYPES else _no_node(value)


#: Any node, told apart by its ``kind``: the type of an arm's node, a stage, the root.
AnyNode = Annotated[
    Annotated[ModelNode, BeforeValidator(_without_kind), Tag("model")]
    | Annotated[ABTestNode, BeforeValidator(_without_kind), Tag("ab_test")]
    | Annotated[SequenceNode, BeforeValidator(_without_kind), Tag("sequence")]
    | Annotated[KeyedNode, BeforeValidator(_without_kind), Tag("keyed")],
    Discriminator(_node_kind),
    BeforeValidator(_any_kind),
]


@dataclass(frozen=True)
class InferenceSpec:
    """A versioned spec document: ``{"version": 1, "node": {...}}``."""

    __pydantic_config__ = SPEC_CONFIG

    node: AnyNode
    version: Annotated[int, Version(SPEC_VERSION)] = field(default=SPEC_VERSION,
                                                           metadata=ALWAYS)


def child_nodes(node: Node) -> list[tuple[str, Node]]:
    """The direct children of ``node`` with their relative field paths."""
    if isinstance(node, ABTestNode):
        return [(f"arms[{i}].node", arm.node) for i, arm in enumerate(node.arms)]
    if isinstance(node, SequenceNode):
        return [(f"stages[{i}]", stage) for i, stage in enumerate(node.stages)]
    if isinstance(node, KeyedNode):
        children: list[tuple[str, Node]] = [
            (f"routes[{i}].node", route.node) for i, route in enumerate(node.routes)
        ]
        if node.default is not None:
            children.append(("default", node.default))
        return children
    return []


def walk(node: Node, path: str = "node") -> list[tuple[str, Node]]:
    """Every node of the tree, depth first, with its field path."""
    found: list[tuple[str, Node]] = [(path, node)]
    for rel, child in child_nodes(node):
        found.extend(walk(child, f"{path}.{rel}"))
    return found
