"""Layout of a space-time diagram: `SpaceTime` in, geometry out. Pure.

Theory of operation
-------------------
Time runs left to right, one horizontal lane per process, in the order of
`SpaceTime.processes`. A message is a straight arrow from (sent_at, sender's
lane) to (received_at, receiver's lane). Each process's recording point is a
dot on its lane; the *cut* is the polyline joining the recording points lane
by lane. A transfer the snapshot recorded as channel state was sent before its
sender's recording point and received after its receiver's, so its arrow
starts left of the cut and ends right of it: it must cross the cut, and the
layout computes where (`Arrow.crossing`) so the renderer can highlight it.

Only a window of time is shown: the span of the recording points, the markers
and the recorded transfers, padded on both sides. Arrows are clipped to it;
transfers entirely outside it are counted in `Layout.omitted`.

When the source did not know a recorded transfer's times, the arrow is drawn
*schematically* (`Arrow.schematic`): from just before the sender's recording
point to just after the receiver's, so it still crosses the cut where it
belongs. With many processes or transfers the ordinary transfers are
collapsed into dots on the lanes and a count per channel; markers, the
recorded transfers and the cut always stay.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from diagram.model import Message, Process, SpaceTime

Point = tuple[float, float]

# Geometry constants, in SVG user units (px).
MARGIN_LEFT = 110.0
MARGIN_RIGHT = 150.0
TOP = 64.0
AXIS_HEIGHT = 44.0
NOTE_LINE = 16.0
SCHEMATIC_OFFSET = 26.0
STUB_LENGTH = 28.0


@dataclass(frozen=True)
class LayoutOptions:
    width: float = 1000.0
    # None: collapse when there are more than `collapse_above_processes`
    # processes or more than `collapse_above_transfers` transfers to draw.
    collapse_transfers: bool | None = None
    collapse_above_processes: int = 8
    collapse_above_transfers: int = 120
    pad_fraction: float = 0.15


@dataclass(frozen=True)
class Lane:
    node: str
    index: int
    y: float
    x_start: float
    x_end: float
    recorded_x: float | None
    completed_x: float | None
    balance: int | None
    initiated: bool
    waiting_for: tuple[str, ...]

    @property
    def missing(self) -> bool:
        return self.recorded_x is None


@dataclass(frozen=True)
class Arrow:
    message: Message
    x1: float
    y1: float
    x2: float
    y2: float
    schematic: bool = False  # times unknown: drawn across the cut, not at real times
    open_end: bool = False  # never received (or not known to be): a stub
    crossing: Point | None = None  # where a recorded transfer crosses the cut

    @property
    def kind(self) -> str:
        return self.message.kind


@dataclass(frozen=True)
class CutSegment:
    """Part of the cut between two recording points on neighbouring recorded lanes;
    `bridges_missing` when lanes of processes that never recorded lie between."""

    x1: float
    y1: float
    x2: float
    y2: float
    bridges_missing: bool = False


@dataclass(frozen=True)
class WaitHint:
    """`waiter` recorded but still waited for a marker from `sender` when it ended."""

    waiter: str
    sender: str
    x: float  # where the wait is drawn (right end of the window)
    y_waiter: float
    y_sender: float
    recorded_x: float  # where the waiter's wait began


@dataclass(frozen=True)
class Dot:
    """A collapsed transfer's send or receive on a lane."""

    node: str
    peer: str
    x: float
    y: float
    sent: bool


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    plot_left: float
    plot_right: float
    t0: float
    t1: float
    title: str
    subtitle: str
    snapshot_id: str
    status: str
    time_unit: str
    lanes: tuple[Lane, ...]
    arrows: tuple[Arrow, ...]
    cut: tuple[CutSegment, ...]
    waits: tuple[WaitHint, ...]
    ticks: tuple[Tick, ...]
    dots: tuple[Dot, ...] = ()
    collapsed: tuple[tuple[str, str, int], ...] = ()  # (src, dst, transfers collapsed)
    omitted: int = 0  # transfers entirely outside the window, not drawn
    notes: tuple[str, ...] = field(default=())

    def lane(self, node: str) -> Lane:
        for lane in self.lanes:
            if lane.node == node:
                return lane
        raise KeyError(node)


def layout(space: SpaceTime, options: LayoutOptions | None = None) -> Layout:
    """Place every lane, arrow, recording point and the cut of `space`."""
    opts = options or LayoutOptions()
    processes = space.processes
    count = len(processes)
    lane_gap = max(28.0, min(84.0, 540.0 / max(count, 1)))
    plot_left, plot_right = MARGIN_LEFT, max(opts.width - MARGIN_RIGHT, MARGIN_LEFT + 100.0)
    t0, t1 = _window(space, opts.pad_fraction)

    def x_of(t: float) -> float:
        return plot_left + (t - t0) / (t1 - t0) * (plot_right - plot_left)

    lanes = tuple(
        Lane(
            node=p.node,
            index=i,
            y=TOP + 20.0 + i * lane_gap,
            x_start=plot_left,
            x_end=plot_right,
            recorded_x=None if p.recorded_at is None else x_of(p.recorded_at),
            completed_x=None if p.completed_at is None else x_of(p.completed_at),
            balance=p.balance,
            initiated=p.initiated,
            waiting_for=p.waiting_for,
        )
        for i, p in enumerate(processes)
    )
    by_node = {lane.node: lane for lane in lanes}
    cut = _cut(lanes)

    transfers = [m for m in space.messages if m.kind == "transfer"]
    collapse = opts.collapse_transfers
    if collapse is None:
        collapse = (
            count > opts.collapse_above_processes or len(transfers) > opts.collapse_above_transfers
        )

    arrows: list[Arrow] = []
    dots: list[Dot] = []
    collapsed: Counter[tuple[str, str]] = Counter()
    omitted = 0
    for message in space.messages:
        src, dst = by_node[message.src], by_node[message.dst]
        if message.kind == "transfer" and not message.recorded and collapse:
            placed = False
            for t, lane, peer, sent in (
                (message.sent_at, src, dst.node, True),
                (message.received_at, dst, src.node, False),
            ):
                if t is not None and t0 <= t <= t1:
                    dots.append(Dot(lane.node, peer, x_of(t), lane.y, sent))
                    placed = True
            if placed:
                collapsed[(message.src, message.dst)] += 1
            else:
                omitted += 1
            continue
        arrow = _arrow(message, src, dst, x_of, t0, t1)
        if arrow is None:
            omitted += 1
            continue
        if message.recorded:
            arrow = _with_crossing(arrow, cut)
        arrows.append(arrow)

    waits = tuple(
        WaitHint(
            waiter=lane.node,
            sender=sender,
            x=plot_right + 14.0 + 10.0 * k,
            y_waiter=lane.y,
            y_sender=by_node[sender].y if sender in by_node else lane.y,
            recorded_x=lane.recorded_x,
        )
        for lane in lanes
        if lane.recorded_x is not None
        for k, sender in enumerate(lane.waiting_for)
    )

    notes = list(space.notes)
    if collapse and collapsed:
        notes.append(
            f"{sum(collapsed.values())} other transfers collapsed into dots on the lanes "
            "(markers, recorded transfers and the cut are drawn in full)"
        )
    if omitted:
        notes.append(
            f"{omitted} transfers not drawn (outside the time window, or only one end "
            "in the nodes' timelines)"
        )
    height = lanes[-1].y + AXIS_HEIGHT + 16.0 + NOTE_LINE * len(notes)
    unit = {"ms": "ms", "tick": "ticks", "lamport": "Lamport clock"}.get(
        space.time_unit, space.time_unit
    )
    subtitle = f"time: {unit}" + (f" since {space.origin}" if space.origin else "")
    return Layout(
        width=opts.width,
        height=height,
        plot_left=plot_left,
        plot_right=plot_right,
        t0=t0,
        t1=t1,
        title=f"{space.snapshot_id}: {space.status}",
        subtitle=subtitle,
        snapshot_id=space.snapshot_id,
        status=space.status,
        time_unit=space.time_unit,
        lanes=lanes,
        arrows=tuple(arrows),
        cut=cut,
        waits=waits,
        ticks=tuple(Tick(x_of(t), label) for t, label in _ticks(t0, t1, space.time_unit)),
        dots=tuple(dots),
        collapsed=tuple((s, d, n) for (s, d), n in sorted(collapsed.items())),
        omitted=omitted,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------ helpers


def _window(space: SpaceTime, pad_fraction: float) -> tuple[float, float]:
    """The time span shown: what matters to the cut, padded."""
    core: list[float] = []
    for p in space.processes:
        core += [t for t in (p.recorded_at, p.completed_at) if t is not None]
    for m in space.messages:
        if m.kind == "marker" or m.recorded:
            core += [t for t in (m.sent_at, m.received_at) if t is not None]
    if not core:  # nothing but ordinary transfers: show them all
        core = [t for m in space.messages for t in (m.sent_at, m.received_at) if t is not None]
    if not core:
        return 0.0, 1.0
    low, high = min(core), max(core)
    span = high - low
    if span <= 0:
        span = 1.0
    pad = span * pad_fraction
    if space.time_unit in ("tick", "lamport"):
        pad = max(pad, 1.0)
    return low - pad, high + pad


def _cut(lanes: Sequence[Lane]) -> tuple[CutSegment, ...]:
    segments = []
    previous: Lane | None = None
    skipped = False
    for lane in lanes:
        if lane.recorded_x is None:
            skipped = previous is not None or skipped
            continue
        if previous is not None and previous.recorded_x is not None:
            segments.append(
                CutSegment(previous.recorded_x, previous.y, lane.recorded_x, lane.y, skipped)
            )
        previous, skipped = lane, False
    return tuple(segments)


def _arrow(
    message: Message,
    src: Lane,
    dst: Lane,
    x_of: Callable[[float], float],
    t0: float,
    t1: float,
) -> Arrow | None:
    sent, received = message.sent_at, message.received_at
    if sent is not None and received is not None:
        clipped = _clip(sent, received, t0, t1)
        if clipped is None:
            return None
        (ta, fa), (tb, fb) = clipped
        y1 = src.y + (dst.y - src.y) * fa
        y2 = src.y + (dst.y - src.y) * fb
        return Arrow(message, x_of(ta), y1, x_of(tb), y2)
    if message.recorded and src.recorded_x is not None and dst.recorded_x is not None:
        # Recorded in flight, some time unknown: keep the known end, draw the other
        # just beyond the recording point on its side of the cut.
        # Far enough beyond both recording points that the arrow cuts across the cut
        # line instead of running along it.
        offset = SCHEMATIC_OFFSET + 0.5 * abs(src.recorded_x - dst.recorded_x)
        x1 = x_of(sent) if sent is not None else src.recorded_x - offset
        x2 = x_of(received) if received is not None else dst.recorded_x + offset
        return Arrow(message, x1, src.y, x2, dst.y, schematic=True, open_end=received is None)
    if sent is not None and t0 <= sent <= t1 and message.kind == "marker":
        # A marker sent but never received: a stub pointing at the receiver.
        x1 = x_of(sent)
        direction = 1.0 if dst.y >= src.y else -1.0
        dy = min(abs(dst.y - src.y) * 0.4, 22.0) * direction
        return Arrow(message, x1, src.y, x1 + STUB_LENGTH, src.y + dy, open_end=True)
    return None


def _clip(
    sent: float, received: float, t0: float, t1: float
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Clip the time interval of an arrow to [t0, t1]: ((t, fraction), (t, fraction)),
    fraction being how far along the arrow (0 at the send, 1 at the receive)."""
    if sent == received:
        return ((sent, 0.0), (received, 1.0)) if t0 <= sent <= t1 else None
    low, high = min(sent, received), max(sent, received)
    if high < t0 or low > t1:
        return None

    def at(t: float) -> tuple[float, float]:
        return t, (t - sent) / (received - sent)

    start = at(min(max(sent, t0), t1))
    end = at(min(max(received, t0), t1))
    return start, end


def _with_crossing(arrow: Arrow, cut: Sequence[CutSegment]) -> Arrow:
    best: tuple[float, Point] | None = None
    for segment in cut:
        hit = _intersect(
            (arrow.x1, arrow.y1),
            (arrow.x2, arrow.y2),
            (segment.x1, segment.y1),
            (segment.x2, segment.y2),
        )
        if hit is not None and (best is None or hit[0] < best[0]):
            best = hit
    if best is None:
        return arrow
    return Arrow(
        arrow.message,
        arrow.x1,
        arrow.y1,
        arrow.x2,
        arrow.y2,
        arrow.schematic,
        arrow.open_end,
        best[1],
    )


def _intersect(a: Point, b: Point, c: Point, d: Point) -> tuple[float, Point] | None:
    """Where segment a-b meets segment c-d: (parameter along a-b, point), or None."""
    rx, ry = b[0] - a[0], b[1] - a[1]
    sx, sy = d[0] - c[0], d[1] - c[1]
    denominator = rx * sy - ry * sx
    if abs(denominator) < 1e-12:
        return None
    qx, qy = c[0] - a[0], c[1] - a[1]
    t = (qx * sy - qy * sx) / denominator
    u = (qx * ry - qy * rx) / denominator
    eps = 1e-9
    if -eps <= t <= 1 + eps and -eps <= u <= 1 + eps:
        return t, (a[0] + t * rx, a[1] + t * ry)
    return None


def _ticks(t0: float, t1: float, unit: str) -> list[tuple[float, str]]:
    span = t1 - t0
    raw = span / 8.0
    magnitude = 10.0 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1.0, 2.0, 5.0, 10.0) if m * magnitude >= raw)
    if unit in ("tick", "lamport"):
        step = max(1.0, round(step))
    first = math.ceil(t0 / step) * step
    ticks: list[tuple[float, str]] = []
    t = first
    while t <= t1 + 1e-9 and len(ticks) < 40:
        label = f"{t:g}" if unit != "ms" else _ms_label(t, step)
        ticks.append((t, label))
        t += step
    return ticks


def _ms_label(t: float, step: float) -> str:
    if step >= 1000:
        return f"{t / 1000:g}s"
    if step >= 1:
        return f"{round(t):d}"
    return f"{t:.{max(0, -math.floor(math.log10(step)))}f}"


def process_order(processes: Sequence[Process]) -> list[Process]:
    """Processes in natural order of their ids (n2 before n10)."""
    return sorted(processes, key=lambda p: natural_key(p.node))


def natural_key(name: str) -> tuple[tuple[int, str], ...]:
    parts: list[tuple[int, str]] = []
    digits = ""
    text = ""
    for char in name:
        if char.isdigit():
            if text:
                parts.append((1, text))
                text = ""
            digits += char
        else:
            if digits:
                parts.append((0, f"{int(digits):020d}"))
                digits = ""
            text += char
    if digits:
        parts.append((0, f"{int(digits):020d}"))
    if text:
        parts.append((1, text))
    return tuple(parts)
