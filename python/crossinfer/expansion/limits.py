"""Bounds on what an expansion request carries besides its spec, declared once, as data.

The spec's own bounds live in :mod:`crossinfer.spec.limits`. These bound the
rest of a request - the input schema, the names and ids around the transform,
and how a call may use the port - and are checked *before* Beam's code sees
any of it: Beam's schema code costs about 4x more per level of nested rows
and about 0.2 ms per field, and it cannot be interrupted once it runs, so the
bounds are what keep its worst case a fraction of a second (see
docs/security.md for the figures).

* :class:`RequestLimits` - the configurable ones, with a service flag each
  (``--max-input-fields`` ...);
* :data:`FIXED_BOUNDS` - the others;
* :func:`markdown_table` - the tables docs/security.md holds (a test checks
  they agree: ``python -m crossinfer.expansion.limits`` prints them).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


def _flag(name: str, default: float, maximum: float, why: str) -> Any:
    return field(default=default, metadata={"flag": f"--{name}", "maximum": maximum,
                                            "why": why})


@dataclass(frozen=True)
class RequestLimits:
    """How large an input schema may be and how long a call may take to arrive.

    Every field is positive and at most its flag's ``maximum``; ValueError otherwise.
    """

    max_input_fields: int = _flag(
        "max-input-fields", 1000, 100_000,
        "fields of the input schema, the fields of nested rows counted")
    max_input_row_nesting: int = _flag(
        "max-input-row-nesting", 2, 8,
        "levels of rows nested inside the input schema's fields (in arrays and maps too)")
    receive_timeout_secs: float = _flag(
        "receive-timeout-secs", 10.0, 600.0,
        "seconds a call may take to send its request once it is open")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            integer = f.type == "int"
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    integer and not isinstance(value, int)) or not 0 < value <= f.metadata[
                    "maximum"]:
                raise ValueError(f"{f.metadata['flag']}: must be a positive "
                                 f"{'integer' if integer else 'number'} of at most "
                                 f"{_num(f.metadata['maximum'])}, got {value!r}")


@dataclass(frozen=True)
class Fixed:
    """A bound that is not configurable."""

    maximum: int
    why: str


#: Bounds that hold whatever the flags say.
FIXED_BOUNDS: Mapping[str, Fixed] = {
    "input schema (bytes)": Fixed(
        256 << 10, "bytes of one serialized row schema (the input coder's, or the batch "
                   "transport's input_schema)"),
    "input schema (type nesting)": Fixed(
        8, "levels of arrays, iterables, maps, logical types and rows inside one field's type"),
    "input schema field names (length)": Fixed(256, "characters of one field name"),
    "transform.unique_name, namespace, ids and tags (length)": Fixed(
        1024, "characters of each name or id of the request's transform, PCollection, "
              "coders and windowing strategy"),
    "calls waiting for their request": Fixed(
        64, "calls the service holds open before their request arrives; one more refuses "
            "the call that has waited longest"),
    "calls per connection": Fixed(
        16, "calls in flight on one connection (HTTP/2 max concurrent streams); more wait "
            "in the client, or are refused (UNAVAILABLE) when sent before the client knew"),
}

def fixed(name: str) -> int:
    """The value of one of :data:`FIXED_BOUNDS`."""
    return FIXED_BOUNDS[name].maximum


def markdown_table(limits: RequestLimits | None = None) -> str:
    """The bounds as the Markdown tables of docs/security.md."""
    limits = limits or RequestLimits()
    lines = ["| service flag | default | at most | bounds |", "| --- | --- | --- | --- |"]
    for f in fields(limits):
        lines.append(f"| `{f.metadata['flag']}` | {_num(getattr(limits, f.name))} | "
                     f"{_num(f.metadata['maximum'])} | {f.metadata['why']} |")
    lines += ["", "| bound | at most | of |", "| --- | --- | --- |"]
    for name, bound in FIXED_BOUNDS.items():
        lines.append(f"| {name} | {_num(bound.maximum)} | {bound.why} |")
    return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:g}"
    value = int(value)
    if value >= 1024 and value % 1024 == 0 and value & (value - 1) == 0:
        return f"{value:,} ({value >> 10} KiB)"
    return f"{value:,}"


if __name__ == "__main__":
    sys.stdout.write(markdown_table())
