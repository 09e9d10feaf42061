"""What every node expansion needs: the load policy and the I/O mapping."""

from __future__ import annotations

from dataclasses import dataclass, field

from crossinfer.policy import LoadPolicy
from crossinfer.rows import IOConfig


@dataclass(frozen=True)
class ExpandContext:
    policy: LoadPolicy = field(default_factory=LoadPolicy)
    io: IOConfig = field(default_factory=IOConfig)


def child_path(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name
