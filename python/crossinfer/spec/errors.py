"""Spec errors that name the field path of every problem."""

from __future__ import annotations

from collections.abc import Iterable

from crossinfer.errors import CrossinferError


class SpecError(CrossinferError, ValueError):
    """A spec is invalid. ``errors`` lists ``(field_path, message)`` pairs.

    The text reads ``node.arms[1].node.uri: no such file 'm.pt'`` - one line per
    problem - so a Java or Python user sees exactly which field to fix.
    """

    def __init__(self, errors: Iterable[tuple[str, str]]):
        self.errors: list[tuple[str, str]] = list(errors)
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [f"{path}: {message}" for path, message in self.errors]
        if len(lines) == 1:
            return f"invalid inference spec: {lines[0]}"
        return "invalid inference spec:\n  " + "\n  ".join(lines)

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.errors]


class ErrorCollector:
    """Collects ``(path, message)`` pairs and raises them together."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def raise_if_any(self) -> None:
        if self.errors:
            raise SpecError(self.errors)
