"""Admission control for expansions: two lanes, bounded queues, a deadline.

Expanding is CPU-bound Python (Beam builds and serialises the pipeline, about
50 ms per model node), so expansions running side by side share one GIL and
do not finish sooner together; they only slow each other down. Hence:

* **two lanes**: small requests (specs of at most :data:`SMALL_SPEC_NODES`
  nodes, e.g. one model or a two-arm A/B test, over input schemas of at most
  :data:`SMALL_INPUT_FIELDS` fields - the cost of an expansion grows with
  both) run in their own lane, so they never queue behind large ones; large
  ones run in the other lane, one at a time by default
  (``--max-concurrent-expansions``);
* **bounded queues**: a request that finds its lane's slots taken waits in a
  queue of at most ``--max-queued-expansions``; beyond that it is refused at
  once (:class:`Busy`, gRPC ``RESOURCE_EXHAUSTED``: retry later);
* **a deadline**: a request waits at most until its deadline (the service's
  ``--expansion-timeout-secs`` or the client's own gRPC deadline, whichever
  comes first), then is refused (:class:`TimedOut`, ``DEADLINE_EXCEEDED``); a
  running expansion is checked against it between its phases (a Python thread
  cannot be stopped mid-way; the spec limits bound how long one phase takes).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from crossinfer.errors import CrossinferError

#: Specs with at most this many nodes use the small lane ...
SMALL_SPEC_NODES = 8
#: ... when their input schema has at most this many fields (nested ones counted).
SMALL_INPUT_FIELDS = 128
#: Small expansions running at once (each takes well under a second).
SMALL_SLOTS = 4


class Busy(CrossinferError):
    """Every slot and queue place of the request's lane is taken."""


class TimedOut(CrossinferError):
    """The request's deadline passed."""


class _Lane:
    def __init__(self, name: str, slots: int, queue: int) -> None:
        self.name = name
        self.slots = slots
        self.queue = queue
        self.running = 0
        self.waiting = 0
        self.cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self, deadline: float) -> Iterator[None]:
        with self.cond:
            if self.running >= self.slots:
                if self.waiting >= self.queue:
                    raise Busy(f"the service is busy: {self.running} {self.name} expansions "
                               f"running and {self.waiting} waiting (at most {self.queue}); "
                               "retry later")
                self.waiting += 1
                try:
                    while self.running >= self.slots:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimedOut(f"waited for a free {self.name} expansion slot until "
                                           "the deadline; retry later")
                        self.cond.wait(left)
                finally:
                    self.waiting -= 1
            self.running += 1
        try:
            yield
        finally:
            with self.cond:
                self.running -= 1
                self.cond.notify()


class Admission:
    """Admits expansions to a small and a large lane (see the module docstring).

    ``large_slots``: large expansions at once; ``queue``: waiting requests per
    lane; ``timeout_secs``: the longest any request may take from arrival.
    """

    def __init__(self, large_slots: int = 1, queue: int = 16,
                 timeout_secs: float = 60.0) -> None:
        self.timeout_secs = timeout_secs
        self._small = _Lane("small", SMALL_SLOTS, queue)
        self._large = _Lane("large", large_slots, queue)

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now, over both lanes."""
        return self._small.waiting + self._large.waiting

    @property
    def capacity(self) -> int:
        """Requests that can be running or waiting at once, over both lanes."""
        return sum(lane.slots + lane.queue for lane in (self._small, self._large))

    def deadline(self, context: Any = None) -> float:
        """A monotonic deadline: ours, or the client's gRPC deadline if sooner."""
        limit = self.timeout_secs
        remaining = context.time_remaining() if context is not None else None
        if remaining is not None:
            limit = min(limit, remaining)
        return time.monotonic() + limit

    def slot(self, nodes: int, deadline: float,
             fields: int = 0) -> contextlib.AbstractContextManager[None]:
        """Hold a slot of the lane for a spec of ``nodes`` nodes over an input schema
        of ``fields`` fields; Busy or TimedOut."""
        small = nodes <= SMALL_SPEC_NODES and fields <= SMALL_INPUT_FIELDS
        return (self._small if small else self._large).slot(deadline)


def count_nodes(doc: Any) -> int:
    """Nodes in a spec's JSON (objects with a ``kind``), counted without recursion."""
    count, stack = 0, [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            count += "kind" in value
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return count


def check_deadline(deadline: float, phase: str) -> None:
    """TimedOut when ``deadline`` has passed (checked between expansion phases)."""
    if time.monotonic() > deadline:
        raise TimedOut(f"the expansion passed its deadline {phase}")
