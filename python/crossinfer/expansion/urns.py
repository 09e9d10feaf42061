"""The URNs crossinfer's expansion service answers, and what each one expands to.

A URN names a pattern; the spec's root node must be of that pattern's kind, so
a client that asked for an A/B test never silently gets a single model.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossinfer.patterns import ABTest, Inference, Keyed, Model, Sequence
from crossinfer.spec.nodes import ABTestNode, KeyedNode, ModelNode, Node, SequenceNode

URN_PREFIX = "beam:transform:crossinfer:"
VERSION = "v1"


@dataclass(frozen=True)
class Pattern:
    """One expandable pattern: its URN, the root node kind it takes, the core transform."""

    name: str
    node_type: type
    transform: type[Inference]

    @property
    def urn(self) -> str:
        return f"{URN_PREFIX}{self.name}:{VERSION}"


PATTERNS: tuple[Pattern, ...] = (
    Pattern("model", ModelNode, Model),
    Pattern("ab_test", ABTestNode, ABTest),
    Pattern("sequence", SequenceNode, Sequence),
    Pattern("keyed", KeyedNode, Keyed),
)

BY_URN: dict[str, Pattern] = {p.urn: p for p in PATTERNS}

MODEL_URN = PATTERNS[0].urn
AB_TEST_URN = PATTERNS[1].urn
SEQUENCE_URN = PATTERNS[2].urn
KEYED_URN = PATTERNS[3].urn

#: The experiment report (crossinfer.expansion.report): report input rows in,
#: ``arms`` and ``pairs`` out.
REPORT_URN = f"{URN_PREFIX}experiment_report:{VERSION}"

#: The output tags of every crossinfer inference transform.
RESULTS_TAG = "results"
FAILURES_TAG = "failures"


def pattern_for_urn(urn: str) -> Pattern | None:
    return BY_URN.get(urn)


def urn_for_node(node: Node) -> str:
    """The URN that expands a spec whose root is ``node``."""
    for pattern in PATTERNS:
        if isinstance(node, pattern.node_type):
            return pattern.urn
    raise TypeError(f"not a spec node: {type(node).__name__}")
