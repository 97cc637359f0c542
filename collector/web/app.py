"""The collector's HTTP application (Starlette): a route table over plain functions.

    /                          dashboard (counts, latest, durations, cluster now, history)
    /fragments/dashboard       its live part, fetched again by the page every 2 s
    /snapshots/<id>            one snapshot: topology, nodes, checks, space-time diagram
    /snapshots/<id>.svg|.png   the diagram alone, for slides and papers
    /api/snapshots             paged history (JSON): ?page=1&limit=20&status=complete
    /api/snapshots/<id>        the snapshot JSON document
    /api/summary               counts, latest, duration statistics, cluster now (JSON)
    /metrics                   Prometheus text format
    /healthz                   200 "ok"

Why Starlette: small, typed, ASGI (uvicorn runs it in its own thread next to
the gRPC server), a route table and a test client without a server. No
template engine: pages.py builds the HTML with escaping in plain functions.

Data comes through `DashboardSource`, so the app is the same over the live
collector and over a test's fixture.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from collector.web import pages
from collector.web.cluster import NodeLive
from collector.web.index import Restores, SnapshotIndex, duration_stats
from collector.web.png import PngUnavailable, svg_to_png
from diagram import DiagramError, document_svg
from diagram.from_document import Axis
from diagram.topology import topology_svg
from node.core import InvalidSnapshotId, validate_snapshot_id

STATIC = Path(__file__).parent / "static"
MAX_LIMIT = 200


class DashboardSource(Protocol):
    @property
    def index(self) -> SnapshotIndex: ...

    def pending(self) -> list[str]: ...

    def read_text(self, snapshot_id: str) -> str | None: ...

    def cluster(self) -> list[NodeLive]: ...

    def restores(self) -> Restores: ...


class BadRequest(Exception):
    pass


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def _status(request: Request) -> str | None:
    status = request.query_params.get("status") or None
    if status is not None and status not in pages.STATUS_FILTERS:
        raise BadRequest(f"status must be one of {', '.join(pages.STATUS_FILTERS)}, got {status!r}")
    return status


def _snapshot_id(raw: str) -> str:
    try:
        return validate_snapshot_id(raw)
    except InvalidSnapshotId as error:
        raise BadRequest(str(error)) from None


def _axis(request: Request) -> Axis:
    axis = request.query_params.get("axis", "wall")
    if axis == "wall":
        return "wall"
    if axis == "lamport":
        return "lamport"
    raise BadRequest(f"axis must be wall or lamport, got {axis!r}")


def create_app(source: DashboardSource, registry: CollectorRegistry | None = None) -> Starlette:
    def fragment(request: Request) -> str:
        page = _int(request, "page", 1, 1, 1_000_000)
        status = _status(request)
        index = source.index
        rows, total = index.page((page - 1) * pages.PAGE_SIZE, pages.PAGE_SIZE, status)
        pending = source.pending()
        return pages.dashboard_fragment(
            counts=index.counts(len(pending)),
            restores=source.restores(),
            latest_complete=index.latest("complete"),
            latest_aborted=index.latest("aborted"),
            stats=duration_stats(index.durations()),
            cluster=source.cluster(),
            rows=rows,
            total=total,
            page=page,
            status=status,
            pending=pending,
        )

    async def dashboard(request: Request) -> Response:
        body = fragment(request)
        refresh = pages.history_url(
            _int(request, "page", 1, 1, 1_000_000), _status(request), "/fragments/dashboard"
        )
        return HTMLResponse(pages.dashboard_page(body, refresh))

    async def dashboard_fragment(request: Request) -> Response:
        return HTMLResponse(fragment(request))

    def document_text(snapshot_id: str) -> tuple[str | None, bool]:
        """(the document's text, False); (None, True) while the snapshot is
        pending; (None, False) if it is unknown. A snapshot that finishes
        between the first read and `pending()` is neither on disk then nor
        pending now: its document is written under the collector's lock, which
        `pending()` waits for, so it is read once more."""
        text = source.read_text(snapshot_id)
        if text is not None:
            return text, False
        if snapshot_id in source.pending():
            return None, True
        return source.read_text(snapshot_id), False

    def load(snapshot_id: str) -> tuple[dict[str, Any] | None, bool]:
        text, pending = document_text(snapshot_id)
        return (None if text is None else dict(json.loads(text))), pending

    async def snapshot(request: Request) -> Response:
        name = str(request.path_params["name"])
        for suffix, render in ((".svg", _svg_response), (".png", _png_response)):
            if name.endswith(suffix):
                snapshot_id = _snapshot_id(name[: -len(suffix)])
                document, _ = load(snapshot_id)
                if document is None:
                    return _not_found(snapshot_id, source, html=False)
                return render(document, _axis(request))
        snapshot_id = _snapshot_id(name)
        document, pending = load(snapshot_id)
        if document is None:
            if pending:
                return HTMLResponse(pages.pending_page(snapshot_id))
            return _not_found(snapshot_id, source, html=True)
        axis = _axis(request)
        try:
            diagram = document_svg(document, axis=axis)
        except DiagramError as error:
            diagram = f'<p class="bad">cannot draw this snapshot: {pages.escape_text(error)}</p>'
        return HTMLResponse(pages.snapshot_page(document, diagram, topology_svg(document), axis))

    async def api_list(request: Request) -> Response:
        limit = _int(request, "limit", pages.PAGE_SIZE, 1, MAX_LIMIT)
        page = _int(request, "page", 1, 1, 1_000_000)
        status = _status(request)
        rows, total = source.index.page((page - 1) * limit, limit, status)
        return JSONResponse(
            {
                "total": total,
                "page": page,
                "limit": limit,
                "status": status,
                "pending": source.pending() if status is None else [],
                "snapshots": [row.as_json() for row in rows],
            }
        )

    async def api_snapshot(request: Request) -> Response:
        snapshot_id = _snapshot_id(str(request.path_params["snapshot_id"]))
        text, pending = document_text(snapshot_id)
        if text is None:
            if pending:
                return JSONResponse({"snapshot_id": snapshot_id, "status": "pending"})
            return _not_found(snapshot_id, source, html=False)
        return Response(text, media_type="application/json")

    async def api_summary(request: Request) -> Response:
        index = source.index
        pending = source.pending()
        stats = duration_stats(index.durations())
        latest = {s: index.latest(s) for s in ("complete", "aborted")}
        return JSONResponse(
            {
                "counts": index.counts(len(pending)).as_json(),
                "restores": source.restores().as_json(),
                "pending": pending,
                "latest": {k: (v.as_json() if v else None) for k, v in latest.items()},
                "durations": stats.as_json() if stats else None,
                "cluster": [node.as_json() for node in source.cluster()],
            }
        )

    async def metrics(request: Request) -> Response:
        if registry is None:
            return PlainTextResponse("no metrics registry", status_code=404)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def bad_request(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/") or request.url.path.endswith((".svg", ".png")):
            return JSONResponse({"error": str(exc)}, status_code=400)
        return HTMLResponse(pages.error_page(400, str(exc)), status_code=400)

    routes: Sequence[Route | Mount] = [
        Route("/", dashboard),
        Route("/fragments/dashboard", dashboard_fragment),
        Route("/snapshots/{name}", snapshot),
        Route("/api/snapshots", api_list),
        Route("/api/snapshots/{snapshot_id}", api_snapshot),
        Route("/api/summary", api_summary),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=list(routes), exception_handlers={BadRequest: bad_request})


def _not_found(snapshot_id: str, source: DashboardSource, html: bool) -> Response:
    message = f"unknown snapshot {snapshot_id}"
    if html:
        return HTMLResponse(pages.error_page(404, message), status_code=404)
    return JSONResponse({"error": message}, status_code=404)


def _svg_response(document: dict[str, Any], axis: Axis) -> Response:
    try:
        svg = document_svg(document, axis=axis)
    except DiagramError as error:
        return JSONResponse({"error": f"cannot draw this snapshot: {error}"}, status_code=422)
    return Response(svg, media_type="image/svg+xml")


def _png_response(document: dict[str, Any], axis: Axis) -> Response:
    try:
        svg = document_svg(document, axis=axis)
        png = svg_to_png(svg)
    except DiagramError as error:
        return JSONResponse({"error": f"cannot draw this snapshot: {error}"}, status_code=422)
    except PngUnavailable as error:
        return JSONResponse({"error": str(error)}, status_code=503)
    return Response(png, media_type="image/png")
