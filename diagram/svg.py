"""SVG text of a laid-out space-time diagram. Pure: `Layout` in, a string out.

The SVG stands alone (its own <style>, fonts that every system has), so the
same text serves the web page, the `.svg` route, `cl-initiator --svg` and
`cl-simulate --svg`. Elements carry classes and data attributes that the
page's script and the tests use:

    g.lane[data-node]            one per process; .missing if it never recorded
    circle.record[data-node]     a recording point (.initiator for initiators)
    path.cut / path.cut-gap      the cut, through the recording points
    line.msg[data-kind=marker|transfer][data-src][data-dst][data-seq][data-amount]
         .recorded               a transfer recorded as channel state (crosses the cut)
         .schematic              its times were not known: drawn across the cut only
    circle.crossing              where a recorded transfer crosses the cut
    g.wait[data-waiter][data-sender]  who still waited for whose marker (aborted)

Every message also has a <title> (the browser's tooltip).
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from diagram.layout import Arrow, Layout
from diagram.model import Message

STYLE = """
.st-bg { fill: #ffffff; }
.st-title { font: bold 15px sans-serif; fill: #1b1f24; }
.st-sub, .st-note, .st-tick { font: 11px sans-serif; fill: #57606a; }
.st-label { font: bold 13px sans-serif; fill: #1b1f24; }
.st-balance { font: 11px sans-serif; fill: #57606a; }
.lane line.life { stroke: #6e7781; stroke-width: 1.5; }
.lane.missing line.life { stroke: #cf222e; stroke-dasharray: 6 4; }
.lane.missing .st-label { fill: #cf222e; }
.st-axis { stroke: #d0d7de; stroke-width: 1; }
.msg { stroke-width: 1.2; fill: none; }
.msg[data-kind="marker"] { stroke: #0969da; stroke-width: 2; }
.msg[data-kind="transfer"] { stroke: #8c959f; }
.msg.recorded { stroke: #e8590c; stroke-width: 2.4; }
.msg.schematic { stroke-dasharray: 5 3; }
.msg.open { stroke-dasharray: 3 3; }
.msg.hl { stroke-width: 4; }
.record { fill: #1b1f24; stroke: #ffffff; stroke-width: 1.5; }
.record.initiator { fill: #8250df; }
.done { fill: none; stroke: #1b1f24; stroke-width: 1.5; }
.cut { stroke: #8250df; stroke-width: 3; fill: none; stroke-linejoin: round; opacity: 0.85; }
.cut-gap { stroke: #cf222e; stroke-width: 2; fill: none; stroke-dasharray: 4 4; }
.crossing { fill: #e8590c; stroke: #ffffff; stroke-width: 1.5; }
.missing-mark { stroke: #cf222e; stroke-width: 3; }
.wait line { stroke: #bf8700; stroke-width: 1.6; stroke-dasharray: 4 3; fill: none; }
.wait text { font: 11px sans-serif; fill: #9a6700; }
.dot { fill: #8c959f; }
.legend text { font: 11px sans-serif; fill: #57606a; }
"""


def render_svg(layout: Layout, id_prefix: str = "st") -> str:
    """The standalone SVG document of `layout`."""
    p = id_prefix
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spacetime" '
        f'width="{layout.width:.0f}" height="{layout.height:.0f}" '
        f'viewBox="0 0 {layout.width:.0f} {layout.height:.0f}" '
        f"data-snapshot={quoteattr(layout.snapshot_id)} data-status={quoteattr(layout.status)} "
        f'font-family="DejaVu Sans, Arial, sans-serif">',
        f"<title>{escape('space-time diagram of ' + layout.title)}</title>",
        f"<style>{STYLE}</style>",
        "<defs>",
    ]
    for name, colour in (
        ("marker", "#0969da"),
        ("transfer", "#8c959f"),
        ("recorded", "#e8590c"),
    ):
        out.append(
            f'<marker id="{p}-head-{name}" viewBox="0 0 10 10" refX="9" refY="5" '
            f'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    out.append("</defs>")
    out.append(
        f'<rect class="st-bg" x="0" y="0" width="{layout.width:.0f}" height="{layout.height:.0f}"/>'
    )
    out.append(f'<text class="st-title" x="16" y="24">{escape(layout.title)}</text>')
    out.append(f'<text class="st-sub" x="16" y="42">{escape(layout.subtitle)}</text>')
    out += _legend(layout)

    # Axis grid and ticks.
    bottom = layout.lanes[-1].y + 18.0
    top = layout.lanes[0].y - 18.0
    out.append('<g class="axis">')
    for tick in layout.ticks:
        out.append(
            f'<line class="st-axis" x1="{tick.x:.1f}" y1="{top:.1f}" '
            f'x2="{tick.x:.1f}" y2="{bottom:.1f}"/>'
        )
        out.append(
            f'<text class="st-tick" x="{tick.x:.1f}" y="{bottom + 14:.1f}" '
            f'text-anchor="middle">{escape(tick.label)}</text>'
        )
    out.append("</g>")

    # Lanes.
    for lane in layout.lanes:
        classes = "lane missing" if lane.missing else "lane"
        out.append(f'<g class="{classes}" data-node={quoteattr(lane.node)}>')
        out.append(
            f'<line class="life" x1="{lane.x_start:.1f}" y1="{lane.y:.1f}" '
            f'x2="{lane.x_end:.1f}" y2="{lane.y:.1f}"/>'
        )
        out.append(
            f'<text class="st-label" x="{lane.x_start - 12:.1f}" y="{lane.y - 2:.1f}" '
            f'text-anchor="end">{escape(lane.node)}</text>'
        )
        detail = (
            "never recorded"
            if lane.missing
            else ("" if lane.balance is None else f"balance {lane.balance}")
        )
        if detail:
            out.append(
                f'<text class="st-balance" x="{lane.x_start - 12:.1f}" y="{lane.y + 12:.1f}" '
                f'text-anchor="end">{escape(detail)}</text>'
            )
        if lane.missing:
            x, y = lane.x_end - 10, lane.y
            out.append(
                f'<path class="missing-mark" d="M{x - 6:.1f},{y - 6:.1f} L{x + 6:.1f},{y + 6:.1f} '
                f'M{x - 6:.1f},{y + 6:.1f} L{x + 6:.1f},{y - 6:.1f}"/>'
            )
        out.append("</g>")

    # Collapsed transfers.
    for dot in layout.dots:
        out.append(
            f'<circle class="dot" cx="{dot.x:.1f}" cy="{dot.y + (-4 if dot.sent else 4):.1f}" '
            f'r="1.8" data-node={quoteattr(dot.node)} data-peer={quoteattr(dot.peer)}/>'
        )

    # Messages: ordinary transfers under markers, recorded ones on top.
    def rank(arrow: Arrow) -> int:
        if arrow.message.recorded:
            return 2
        return 1 if arrow.kind == "marker" else 0

    for arrow in sorted(layout.arrows, key=rank):
        out.append(_arrow(arrow, p))

    # The cut, then the recording points over it.
    for segment in layout.cut:
        cls = "cut-gap" if segment.bridges_missing else "cut"
        out.append(
            f'<path class="{cls}" d="M{segment.x1:.1f},{segment.y1:.1f} '
            f'L{segment.x2:.1f},{segment.y2:.1f}"/>'
        )
    for arrow in layout.arrows:
        if arrow.crossing is not None:
            m = arrow.message
            out.append(
                f'<circle class="crossing" cx="{arrow.crossing[0]:.1f}" '
                f'cy="{arrow.crossing[1]:.1f}" r="4.5" data-src={quoteattr(m.src)} '
                f"data-dst={quoteattr(m.dst)} data-seq={quoteattr(_str(m.seq))}>"
                f"<title>{escape(_describe(m))}</title></circle>"
            )
    for lane in layout.lanes:
        if lane.completed_x is not None:
            out.append(
                f'<circle class="done" cx="{lane.completed_x:.1f}" cy="{lane.y:.1f}" r="5" '
                f"data-node={quoteattr(lane.node)}><title>{escape(lane.node)} "
                "received its last marker</title></circle>"
            )
        if lane.recorded_x is not None:
            cls = "record initiator" if lane.initiated else "record"
            what = "initiated and recorded" if lane.initiated else "recorded"
            balance = "" if lane.balance is None else f" balance {lane.balance}"
            out.append(
                f'<circle class="{cls}" cx="{lane.recorded_x:.1f}" cy="{lane.y:.1f}" r="6" '
                f"data-node={quoteattr(lane.node)}><title>{escape(lane.node)} {what}"
                f"{escape(balance)}</title></circle>"
            )

    # Who waited for whom.
    for wait in layout.waits:
        out.append(
            f'<g class="wait" data-waiter={quoteattr(wait.waiter)} '
            f"data-sender={quoteattr(wait.sender)}>"
            f'<line x1="{wait.recorded_x:.1f}" y1="{wait.y_waiter:.1f}" x2="{wait.x:.1f}" '
            f'y2="{wait.y_waiter:.1f}"/>'
            f'<line x1="{wait.x:.1f}" y1="{wait.y_sender:.1f}" x2="{wait.x:.1f}" '
            f'y2="{wait.y_waiter:.1f}"/>'
            f'<text x="{wait.x + 6:.1f}" y="{wait.y_waiter + 4:.1f}">'
            f"{escape(f'waits for {wait.sender}')}</text>"
            f"<title>{escape(f'{wait.waiter} never got the marker from {wait.sender}')}</title>"
            "</g>"
        )

    y = layout.lanes[-1].y + AXIS_OFFSET
    for note in layout.notes:
        out.append(f'<text class="st-note" x="16" y="{y:.1f}">{escape(note)}</text>')
        y += 16.0
    out.append("</svg>")
    return "\n".join(out) + "\n"


AXIS_OFFSET = 54.0


def _legend(layout: Layout) -> list[str]:
    x = layout.width - 440.0
    items = [
        ("marker", "#0969da", "marker"),
        ("transfer", "#8c959f", "transfer"),
        ("recorded", "#e8590c", "recorded in flight"),
        ("cut", "#8250df", "the cut"),
    ]
    out = ['<g class="legend">']
    lx = x
    for k, (_, colour, label) in enumerate(items):
        if k:
            lx += 40.0 + 6.2 * len(items[k - 1][2])
        out.append(
            f'<line x1="{lx:.1f}" y1="20" x2="{lx + 22:.1f}" y2="20" stroke="{colour}" '
            f'stroke-width="{3 if k >= 2 else 2}"/>'
        )
        out.append(f'<text x="{lx + 27:.1f}" y="24">{escape(label)}</text>')
    out.append("</g>")
    return out


def _arrow(arrow: Arrow, prefix: str) -> str:
    m = arrow.message
    classes = ["msg"]
    if m.recorded:
        classes.append("recorded")
    if arrow.schematic:
        classes.append("schematic")
    if arrow.open_end:
        classes.append("open")
    head = "recorded" if m.recorded else m.kind
    attrs = (
        f'class="{" ".join(classes)}" data-kind="{m.kind}" data-src={quoteattr(m.src)} '
        f"data-dst={quoteattr(m.dst)} data-seq={quoteattr(_str(m.seq))} "
        f"data-amount={quoteattr(_str(m.amount))} "
        f"data-snapshot={quoteattr(m.snapshot_id or '')}"
    )
    end = "" if arrow.open_end and not m.recorded else f' marker-end="url(#{prefix}-head-{head})"'
    return (
        f'<line {attrs} x1="{arrow.x1:.1f}" y1="{arrow.y1:.1f}" x2="{arrow.x2:.1f}" '
        f'y2="{arrow.y2:.1f}"{end}><title>{escape(_describe(m))}</title></line>'
    )


def _str(value: int | None) -> str:
    return "" if value is None else str(value)


def _time(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def describe(message: Message) -> str:
    """One line about a message, e.g. 'transfer n1→n2 #41, amount 43: sent t=12, ...'."""
    return _describe(message)


def _describe(m: Message) -> str:
    if m.kind == "marker":
        head = f"marker {m.snapshot_id or ''} {m.src}→{m.dst}".replace("  ", " ")
    else:
        head = f"transfer {m.src}→{m.dst} #{_str(m.seq)}, amount {_str(m.amount)}"
    when = f"sent t={_time(m.sent_at)}, received t={_time(m.received_at)}"
    if m.received_at is None and m.kind == "marker":
        when = f"sent t={_time(m.sent_at)}, never received"
    tail = "; recorded in flight across the cut" if m.recorded else ""
    return f"{head}: {when}{tail}"
