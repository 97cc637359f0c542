"""Space-time diagrams of Chandy-Lamport snapshots: pure data in, SVG text out.

    from diagram import document_svg
    svg_text = document_svg(snapshot_document)

`model` is the neutral input (`SpaceTime`), `layout` places it, `svg` draws
it; `from_document` and `from_schedule` adapt the collector's snapshot JSON and
the simulator's schedule to the model. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diagram.from_document import Axis, from_document
from diagram.layout import Layout, LayoutOptions, layout
from diagram.model import DiagramError, Message, Process, SpaceTime
from diagram.svg import render_svg

__all__ = [
    "DiagramError",
    "Layout",
    "LayoutOptions",
    "Message",
    "Process",
    "SpaceTime",
    "document_svg",
    "from_document",
    "layout",
    "render_svg",
    "space_time_svg",
]


def space_time_svg(space: SpaceTime, options: LayoutOptions | None = None) -> str:
    return render_svg(layout(space, options))


def document_svg(
    document: Mapping[str, Any], options: LayoutOptions | None = None, axis: Axis = "wall"
) -> str:
    """The SVG diagram of one snapshot JSON document."""
    return space_time_svg(from_document(document, axis), options)
