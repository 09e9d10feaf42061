"""The records that flow between crossinfer's steps inside a pipeline.

An input element becomes an :class:`Item` (features as a numpy array plus the
original element, untouched). Each model step replaces ``features`` with its
post-processed output, so a following sequence stage consumes it. Anything that
cannot be inferred becomes a :class:`Failure` carrying the original element,
the node that failed and why; failures pass through later steps unchanged and
leave the pattern on its failures output.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Item:
    """One element in flight. ``path`` names the node that produced ``inference``."""

    __slots__ = ("features", "inference", "key", "label", "labels", "model", "original",
                 "path", "score", "scores")

    def __init__(self, original: Any, features: np.ndarray, key: str | None = None) -> None:
        self.original = original
        self.features = features
        self.key = key
        self.model: str | None = None
        self.path: str | None = None
        self.inference: np.ndarray | None = None
        self.label: int | None = None
        self.score: float | None = None
        self.labels: list[int] | None = None
        self.scores: list[float] | None = None

    def derive(self, features: np.ndarray) -> Item:
        """A copy for the next step (A/B mirror arms must not share mutable state)."""
        nxt = Item(self.original, features, self.key)
        nxt.model, nxt.path = self.model, self.path
        return nxt

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_item, (tuple(getattr(self, s) for s in Item.__slots__),))

    def __repr__(self) -> str:
        return f"Item(path={self.path!r}, key={self.key!r}, features={self.features!r})"


def _rebuild_item(values: tuple[Any, ...]) -> Item:
    item = Item.__new__(Item)
    for slot, value in zip(Item.__slots__, values, strict=False):
        setattr(item, slot, value)
    return item


class Failure:
    """An element that could not be inferred: the original element, the failing
    node's path and a message a user can act on."""

    __slots__ = ("error", "node", "original")

    def __init__(self, original: Any, node: str, error: str) -> None:
        self.original = original
        self.node = node
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (Failure, (self.original, self.node, self.error))

    def __repr__(self) -> str:
        return f"Failure(node={self.node!r}, error={self.error!r})"


def error_text(exc: BaseException) -> str:
    """``ExceptionType: message`` on one line, bounded in length."""
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= 500 else text[:497] + "..."
