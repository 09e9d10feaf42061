"""The inference spec as Python dataclasses.

One spec is shared by every language: these classes, the JSON Schema in
``schema.json`` and the Java builders describe the same nodes with the same
field names. The JSON form is produced and read by :mod:`crossinfer.spec.codec`.

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
from typing import Any, ClassVar

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

#: Methods a scikit-learn model may be called with.
SKLEARN_METHODS = ("predict", "predict_proba", "decision_function", "transform")


@dataclass(frozen=True)
class Op:
    """A named pre- or post-processing step, e.g. ``Op("normalize", {"std": 16})``.

    In JSON an op is flat: ``{"op": "normalize", "std": 16}``.
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


#: A processing step: a named op (portable) or, in Python pipelines only, a
#: function ``numpy.ndarray -> numpy.ndarray``.
Step = Op | Callable[..., Any]


@dataclass(frozen=True)
class Batching:
    """How RunInference batches elements for one model.

    ``max_wait_secs`` bounds how long a streaming pipeline buffers a batch.
    """

    min_batch_size: int | None = None
    max_batch_size: int | None = None
    max_wait_secs: float | None = None


@dataclass(frozen=True)
class Memory:
    """Model memory settings passed through to Beam's ModelHandler.

    ``large_model``: one copy per machine shared by every process.
    ``model_copies``: exactly this many copies per machine.
    """

    large_model: bool = False
    model_copies: int | None = None


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

    kind: ClassVar[str] = "model"

    name: str
    framework: str
    uri: str | None = None
    format: str | None = None
    model_class: str | None = None
    model_params: Mapping[str, Any] = field(default_factory=dict)
    handler_class: str | None = None
    handler_params: Mapping[str, Any] = field(default_factory=dict)
    method: str | None = None
    inference_args: Mapping[str, Any] = field(default_factory=dict)
    output: str | int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    input_shape: tuple[int, ...] | None = None
    batching: Batching = field(default_factory=Batching)
    memory: Memory = field(default_factory=Memory)
    preprocess: tuple[Step, ...] = ()
    postprocess: tuple[Step, ...] = ()
    sha256: str | None = None

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

    name: str
    node: Node
    weight: float = 1.0


@dataclass(frozen=True)
class ABTestNode:
    """Split elements between arms.

    * ``random``: each element picks an arm by weight from a generator seeded
      with ``seed``.
    * ``hash``: sticky on the element's key: ``sha256(salt + key)`` picks the arm,
      so a key always lands in the same arm, in batch and in streaming. ``salt``
      defaults to the node name, so two experiments split independently.
    * ``mirror``: every element reaches every arm (side-by-side comparison).
    """

    kind: ClassVar[str] = "ab_test"

    name: str
    arms: tuple[Arm, ...]
    split: str = "random"
    seed: int = 0
    salt: str | None = None


@dataclass(frozen=True)
class SequenceNode:
    """Stages run one after the other; each stage's output (after its
    post-processing) becomes the next stage's features."""

    kind: ClassVar[str] = "sequence"

    name: str
    stages: tuple[Node, ...]


@dataclass(frozen=True)
class Route:
    """Keys that share one model."""

    keys: tuple[str, ...]
    node: ModelNode


@dataclass(frozen=True)
class KeyedNode:
    """Route elements by key to models, keeping at most ``max_models_per_worker``
    models resident per worker process. Elements of one model are grouped
    before inference, so a bound below the number of models does not thrash.

    ``shards``: groups per route (1 to 1024), so one route's work spreads over
    up to that many workers. None: 16 when every model of the node fits the
    bound (``max_models_per_worker`` unset or at least the number of models),
    else 1 (see :mod:`crossinfer.patterns.shards`)."""

    kind: ClassVar[str] = "keyed"

    name: str
    routes: tuple[Route, ...]
    default: ModelNode | None = None
    max_models_per_worker: int | None = None
    shards: int | None = None


Node = ModelNode | ABTestNode | SequenceNode | KeyedNode

NODE_TYPES: Mapping[str, type] = {
    cls.kind: cls for cls in (ModelNode, ABTestNode, SequenceNode, KeyedNode)
}


@dataclass(frozen=True)
class InferenceSpec:
    """A versioned spec document: ``{"version": 1, "node": {...}}``."""

    node: Node
    version: int = SPEC_VERSION


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
