"""What an experiment report is configured with, checked at construction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from crossinfer.errors import CrossinferError
from crossinfer.spec.codec import node_from_dict, spec_from_dict
from crossinfer.spec.nodes import ABTestNode, InferenceSpec, ModelNode, Node, SequenceNode

METRICS = ("accuracy", "mean_abs_error")


class ReportSettingsError(CrossinferError, ValueError):
    """A report setting is wrong; the message starts with the setting's name."""


@dataclass(frozen=True)
class ReportSettings:
    """The report's settings.

    Args:
      experiment: the A/B node (the root of the spec the results came from):
        its name, arms, weights and split.
      ground_truth: the input field with the true label (``accuracy``) or the
        true value (``mean_abs_error``); None: no accuracy, no differences.
      id_field: the input field that identifies an element, joining a
        mirror's arms (``id`` by default; compared as text; ids must be
        unique per window: an id met twice in one arm when results are paired
        is not paired, and copies arriving after a pairing pair again).
      key_field: the input field a ``hash`` split is sticky on (``key`` by
        default, as :class:`~crossinfer.ABTest`'s ``key_field``): the unit of
        assignment, so the sample-ratio-mismatch test counts distinct keys per
        arm, not elements (elements of one key are not independent).
      metric: ``accuracy`` (``label == truth``) or ``mean_abs_error``
        (``|inference[0] - truth|``, for regression outputs).
      control: the arm the others are compared with (default: the first).
      confidence: level of every interval, in (0, 1).

    Raises:
      ReportSettingsError: naming the setting, e.g. ``control: 'b' is not an
        arm of 'digits_ab' (arms: control, treatment)``.
    """

    experiment: ABTestNode
    ground_truth: str | None = None
    id_field: str = "id"
    key_field: str = "key"
    metric: str = "accuracy"
    control: str = ""
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not isinstance(self.experiment, ABTestNode):
            raise ReportSettingsError(
                f"experiment: the report reads an A/B test's results; got a "
                f"{type(self.experiment).__name__}")
        arms = self.arm_names
        if len(arms) < 2:
            raise ReportSettingsError("experiment.arms: an experiment needs two arms or more")
        for i, arm in enumerate(arms):  # what ABTest takes: a result's path names its arm
            if not arm or "/" in arm or arm in arms[:i]:
                raise ReportSettingsError(
                    f"experiment.arms[{i}].name: {arm!r} is not an arm name (arm names are "
                    f"non-empty, unique and without '/')")
        if not self.control:
            object.__setattr__(self, "control", arms[0])
        if self.control not in arms:
            raise ReportSettingsError(f"control: {self.control!r} is not an arm of "
                                      f"{self.experiment.name!r} (arms: {', '.join(arms)})")
        if self.metric not in METRICS:
            raise ReportSettingsError(f"metric: {self.metric!r} is not one of "
                                      f"{', '.join(METRICS)}")
        if not (isinstance(self.confidence, float | int) and 0 < self.confidence < 1):
            raise ReportSettingsError(f"confidence: {self.confidence!r} is not in (0, 1)")
        for name in ("ground_truth", "id_field", "key_field"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.isidentifier()):
                raise ReportSettingsError(f"{name}: {value!r} is not a field name")

    @classmethod
    def from_spec(cls, spec: InferenceSpec | Node | str | dict[str, Any],
                  **settings: Any) -> ReportSettings:
        """Settings for the A/B test at the root of ``spec`` (JSON text, a
        dict, an InferenceSpec or the node). The spec is read for its
        structure only: model files need not exist here."""
        if isinstance(spec, str):
            spec = json.loads(spec)
        if isinstance(spec, dict):
            spec = spec_from_dict(spec) if "node" in spec else node_from_dict(spec)
        node = spec.node if isinstance(spec, InferenceSpec) else spec
        return cls(experiment=node, **settings)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.experiment.arms)

    @property
    def mirror(self) -> bool:
        return self.experiment.split == "mirror"

    @property
    def hashed(self) -> bool:
        """A ``hash`` split: keys, not elements, are assigned to arms."""
        return self.experiment.split == "hash"

    @property
    def expected_shares(self) -> dict[str, float] | None:
        """Each arm's configured share of the traffic; None for a mirror."""
        if self.mirror:
            return None
        total = sum(arm.weight for arm in self.experiment.arms)
        return {arm.name: arm.weight / total for arm in self.experiment.arms}

    @property
    def others(self) -> tuple[str, ...]:
        """The arms compared with the control, in spec order."""
        return tuple(a for a in self.arm_names if a != self.control)

    @property
    def control_index(self) -> int:
        """The control's index in :attr:`arm_names` (how the report's steps number arms)."""
        return self.arm_names.index(self.control)

    @property
    def other_indices(self) -> list[int]:
        """:attr:`others`' indices in :attr:`arm_names`."""
        return [self.arm_names.index(a) for a in self.others]

    def arm_of(self, path: str) -> str | None:
        """The arm of a result ``path`` or failure ``node`` (the segment after
        the A/B node's name), or None when the element never reached an arm."""
        prefix = self.experiment.name + "/"
        if not path.startswith(prefix):
            return None
        arm = path[len(prefix):].split("/", 1)[0]
        return arm if arm in self.arm_names else None

    def stages(self, arm: str) -> tuple[str, ...]:
        """Names of the model stages on an arm's route, in route order (a
        sequence's models; one name otherwise)."""
        node = next(a.node for a in self.experiment.arms if a.name == arm)
        return tuple(_stage_names(node))


def _stage_names(node: Node) -> list[str]:
    if isinstance(node, SequenceNode):
        return [name for stage in node.stages for name in _stage_names(stage)]
    if isinstance(node, ModelNode):
        return [node.name]
    return [node.name]  # a keyed or nested A/B node: one model per element, by route
