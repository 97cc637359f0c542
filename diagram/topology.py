"""The topology of a snapshot as a graph: nodes with their recorded balances,
channels labelled with the money recorded in flight on them. Pure: a snapshot
document in, SVG text out.

    svg g.node[data-node]       .missing when the node never recorded
    svg g.channel[data-src][data-dst][data-amount][data-count]  .busy when money is on it
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from diagram.layout import natural_key

STYLE = """
.tg-bg { fill: #ffffff; }
.node circle { fill: #f6f8fa; stroke: #1b1f24; stroke-width: 1.5; }
.node.initiator circle { stroke: #8250df; stroke-width: 3; }
.node.missing circle { fill: #ffebe9; stroke: #cf222e; stroke-dasharray: 4 3; }
.node text { font: bold 13px sans-serif; fill: #1b1f24; }
.node text.bal { font: 11px sans-serif; fill: #57606a; }
.channel path { stroke: #8c959f; stroke-width: 1.2; fill: none; }
.channel.busy path { stroke: #e8590c; stroke-width: 2.4; }
.channel text { font: bold 11px sans-serif; fill: #e8590c; }
"""


def topology_svg(document: Mapping[str, Any], size: float = 420.0) -> str:
    nodes: Mapping[str, Any] = document.get("nodes") or {}
    missing = {str(n) for n in document.get("missing") or []}
    channels = [c for c in document.get("channels") or [] if isinstance(c, Mapping)]
    ids = set(nodes) | missing
    ids |= {str(c.get("from")) for c in channels} | {str(c.get("to")) for c in channels}
    ids.discard("None")
    order = sorted(ids, key=natural_key)
    count = len(order)
    centre = size / 2
    radius = size / 2 - 48 if count > 1 else 0
    node_r = max(12.0, min(26.0, 150.0 / max(count, 1)))
    position = {
        node: (
            centre + radius * math.cos(2 * math.pi * k / count - math.pi / 2),
            centre + radius * math.sin(2 * math.pi * k / count - math.pi / 2),
        )
        for k, node in enumerate(order)
    }
    pairs = {(str(c.get("from")), str(c.get("to"))) for c in channels}
    initiators = {str(i) for i in document.get("initiators") or []}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="topology" width="{size:.0f}" '
        f'height="{size:.0f}" viewBox="0 0 {size:.0f} {size:.0f}">',
        f"<style>{STYLE}</style>",
        '<defs><marker id="tg-head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8c959f"/></marker>'
        '<marker id="tg-head-busy" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#e8590c"/></marker>'
        "</defs>",
        f'<rect class="tg-bg" width="{size:.0f}" height="{size:.0f}"/>',
    ]
    for channel in channels:
        src, dst = str(channel.get("from")), str(channel.get("to"))
        if src not in position or dst not in position:
            continue
        messages = channel.get("messages")
        recorded = messages if isinstance(messages, list) else []
        amount = sum(int(m.get("amount", 0)) for m in recorded if isinstance(m, Mapping))
        (x1, y1), (x2, y2) = position[src], position[dst]
        dx, dy = x2 - x1, y2 - y1
        length = math.hypot(dx, dy) or 1.0
        ux, uy = dx / length, dy / length
        # Both directions present: bend each to its own side.
        bend = 18.0 if (dst, src) in pairs else 0.0
        sx, sy = x1 + ux * node_r, y1 + uy * node_r
        ex, ey = x2 - ux * (node_r + 2), y2 - uy * (node_r + 2)
        mx, my = (sx + ex) / 2 - uy * bend, (sy + ey) / 2 + ux * bend
        busy = bool(recorded)
        label = ""
        if messages is None:
            label = "?"
        elif busy:
            label = f"{amount} ({len(recorded)})"
        out.append(
            f'<g class="channel{" busy" if busy else ""}" data-src={quoteattr(src)} '
            f'data-dst={quoteattr(dst)} data-amount="{amount}" data-count="{len(recorded)}">'
            f'<path d="M{sx:.1f},{sy:.1f} Q{mx:.1f},{my:.1f} {ex:.1f},{ey:.1f}" '
            f'marker-end="url(#{"tg-head-busy" if busy else "tg-head"})"/>'
            f"<title>{escape(f'{src}→{dst}: {len(recorded)} in flight, amount {amount}')}</title>"
        )
        if label:
            lx, ly = (sx + 2 * mx + ex) / 4 - uy * 8, (sy + 2 * my + ey) / 4 + ux * 8
            out.append(
                f'<text x="{lx:.1f}" y="{ly + 4:.1f}" text-anchor="middle">{escape(label)}</text>'
            )
        out.append("</g>")
    for node in order:
        x, y = position[node]
        state = nodes.get(node)
        classes = ["node"]
        if node in missing or not isinstance(state, Mapping):
            classes.append("missing")
        if node in initiators:
            classes.append("initiator")
        balance = state.get("balance") if isinstance(state, Mapping) else None
        out.append(
            f'<g class="{" ".join(classes)}" data-node={quoteattr(node)}>'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{node_r:.1f}"/>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">{escape(node)}</text>'
        )
        caption = "never recorded" if "missing" in classes else f"{balance}"
        below = y + node_r + 13 if y >= centre else y - node_r - 5
        out.append(
            f'<text class="bal" x="{x:.1f}" y="{below:.1f}" text-anchor="middle">'
            f"{escape(caption)}</text></g>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
