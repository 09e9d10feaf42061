"""The URNs crossinfer's expansion service answers, and what each one expands to.

A URN names a pattern; the spec's root node must be of that pattern's kind, so
a client that asked for an A/B test never silently gets a single model.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossinfer.patterns import ABTest, Inference, Keyed, Model, Sequence
from crossinfer.spec.nodes import ABTestNode, KeyedNode, ModelNode, Node, SequenceNode
from crossinfer.wire import (
    AB_TEST_URN,
    FAILURES_TAG,
    KEYED_URN,
    MODEL_URN,
    REPORT_URN,
    RESULTS_TAG,
    SEQUENCE_URN,
    URN_PREFIX,
    urn,
)

# The URNs and tags live in crossinfer.wire; re-exported for the service's callers.
__all__ = ["AB_TEST_URN", "BY_URN", "FAILURES_TAG", "KEYED_URN", "MODEL_URN", "PATTERNS",
           "REPORT_URN", "RESULTS_TAG", "SEQUENCE_URN", "URN_PREFIX", "Pattern",
           "pattern_for_urn", "urn_for_node"]


@dataclass(frozen=True)
class Pattern:
    """One expandable pattern: its URN, the root node kind it takes, the core transform."""

    name: str
    node_type: type
    transform: type[Inference]

    @property
    def urn(self) -> str:
        return urn(self.name)


PATTERNS: tuple[Pattern, ...] = (
    Pattern("model", ModelNode, Model),
    Pattern("ab_test", ABTestNode, ABTest),
    Pattern("sequence", SequenceNode, Sequence),
    Pattern("keyed", KeyedNode, Keyed),
)

BY_URN: dict[str, Pattern] = {p.urn: p for p in PATTERNS}

assert [p.urn for p in PATTERNS] == [MODEL_URN, AB_TEST_URN, SEQUENCE_URN, KEYED_URN]


def pattern_for_urn(urn: str) -> Pattern | None:
    return BY_URN.get(urn)


def urn_for_node(node: Node) -> str:
    """The URN that expands a spec whose root is ``node``."""
    for pattern in PATTERNS:
        if isinstance(node, pattern.node_type):
            return pattern.urn
    raise TypeError(f"not a spec node: {type(node).__name__}")
