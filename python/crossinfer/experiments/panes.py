"""What the report's steps after its GroupByKeys keep across a window's panes.

Under Beam's default trigger a window's GroupByKey fires once when the
watermark passes the window's end (the ``ON_TIME`` pane) and once more per
late pane within the allowed lateness (``LATE``); each pane (discarding, as
:func:`~crossinfer.experiments.transform._closing_windows` sets) holds only its
own elements. So that a late pane's report rows restate the window's report
over every result so far, its mirror results pair with results of any pane,
and a key counts once however many panes it comes in, these steps keep what
they saw in Beam state, per key and window (the runner drops it when the
window expires: its end plus the allowed lateness). Only where late panes can
come - unbounded input with an allowed lateness, ``late`` below, decided when
the pipeline is built - is state read or written; and not after a pane that
is its window's last (``PaneInfo.is_last``).

The state is the step's own values pickled (as the GroupByKey before it
pickles them), in a bag per key and window, one record per pane: the rows'
accumulators (a few per bundle), the keys new to the window, and the mirror
results their bundle could not pair (all of them until the window expires:
each late pane reads its bucket's back and pairs them again).
"""

from __future__ import annotations

import pickle
from typing import Any

from apache_beam.coders import BytesCoder
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming


def bag(name: str) -> BagStateSpec:
    """A bag of pickled values, one per pane that kept any (see :func:`keep`)."""
    return BagStateSpec(name, BytesCoder())


def kept(state: Any) -> list[Any]:
    """Every value :func:`keep` kept in ``state``, in pane order."""
    return [pickle.loads(data) for data in state.read()]


def late_panes(bounded: bool, allowed_lateness: Duration) -> bool:
    """Whether late panes can follow a window's first: its results are
    unbounded and have an allowed lateness (bounded input has no late data)."""
    return not bounded and allowed_lateness > Duration()


def earlier(state: Any, pane: PaneInfo, late: bool) -> list[Any]:
    """The values earlier panes of this key and window kept (none without
    ``late`` panes, and before the first pane: its state is not read)."""
    return kept(state) if late and not pane.is_first else []


def keep(state: Any, pane: PaneInfo, value: Any, late: bool) -> None:
    """Keep ``value`` (pickled: a copy, whatever the caller does with it next)
    for the window's later panes, if ``late`` panes can come and ``pane`` is
    not its last."""
    if late and not pane.is_last:
        state.add(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def timing(pane: PaneInfo) -> str:
    """``EARLY``, ``ON_TIME``, ``LATE`` or ``UNKNOWN`` (Beam's ``PaneInfoTiming`` names)."""
    return str(PaneInfoTiming.to_string(pane.timing))
