"""HTML of the dashboard and the snapshot pages. Pure: data in, text out.

Every value that came from a document or a node is escaped here. The live
part of the dashboard is one fragment (`dashboard_fragment`) that the page's
script fetches again every few seconds and swaps in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from collector.web.cluster import NodeLive
from collector.web.index import Counts, DurationStats, Restores, Summary
from diagram.layout import natural_key

PAGE_SIZE = 20
STATUS_FILTERS = ("complete", "aborted", "failed")


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


escape_text = _e


def _page(title: str, body: str, page: str, scripts: Sequence[str] = ()) -> str:
    tags = "".join(f'<script src="/static/{_e(s)}"></script>' for s in scripts)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/style.css"></head>'
        f'<body data-page="{_e(page)}"><header><a class="home" href="/">chandy-lamport</a>'
        f'<span class="title">{_e(title)}</span>'
        '<span id="updated" class="muted"></span></header>'
        f"<main>{body}</main>{tags}</body></html>\n"
    )


def _duration(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _short_time(iso: str) -> str:
    """'2026-12-01 10:10:33.284' from '2026-12-01T10:10:33.284+00:00' (UTC throughout)."""
    return iso.replace("T", " ").removesuffix("+00:00")


def _status_badge(status: str, verified: bool | None = None) -> str:
    cls = status
    if status == "complete" and verified is False:
        cls = "failed"
    return f'<span class="badge {_e(cls)}">{_e(status)}</span>'


def _verified(summary: Summary) -> str:
    if summary.verified is None:
        return '<span class="muted">not checked</span>'
    return '<span class="ok">yes</span>' if summary.verified else '<span class="bad">FAILED</span>'


def _link(snapshot_id: str) -> str:
    return f'<a href="/snapshots/{_e(snapshot_id)}">{_e(snapshot_id)}</a>'


# ------------------------------------------------------------- dashboard


def dashboard_page(fragment: str, refresh_url: str) -> str:
    body = f'<div id="live" data-refresh="{_e(refresh_url)}">{fragment}</div>'
    return _page("snapshots", body, "dashboard", ["dashboard.js"])


def history_url(page: int, status: str | None, base: str = "/") -> str:
    query: dict[str, str | int] = {"page": page}
    if status:
        query["status"] = status
    return f"{base}?{urlencode(query)}"


def dashboard_fragment(
    *,
    counts: Counts,
    restores: Restores,
    latest_complete: Summary | None,
    latest_aborted: Summary | None,
    stats: DurationStats | None,
    cluster: Sequence[NodeLive],
    rows: Sequence[Summary],
    total: int,
    page: int,
    status: str | None,
    pending: Sequence[str],
    page_size: int = PAGE_SIZE,
) -> str:
    parts = [
        _counts(counts, restores),
        '<div class="row">',
        _latest(latest_complete, latest_aborted),
    ]
    parts.append(_stats(stats))
    parts.append("</div>")
    parts.append(_cluster(cluster))
    parts.append(_history(rows, total, page, status, pending, page_size))
    return "".join(parts)


def _counts(counts: Counts, restores: Restores) -> str:
    tiles = [
        ("begun", "begun", counts.begun),
        ("in-progress", "in progress", counts.in_progress),
        ("complete", "complete", counts.complete),
        ("aborted", "aborted", counts.aborted),
        ("failures", "verification failures", counts.verification_failures),
    ]
    if restores.count:
        latest = f"restores (latest: {restores.latest_snapshot} {restores.latest_phase})"
        tiles.append(
            ("restores", latest if restores.latest_snapshot else "restores", restores.count)
        )
    cells = "".join(
        f'<div class="tile {key}" data-count="{key}"><div class="n">{value}</div>'
        f'<div class="label">{_e(label)}</div></div>'
        for key, label, value in tiles
    )
    return f'<section id="counts" class="tiles">{cells}</section>'


def _latest(complete: Summary | None, aborted: Summary | None) -> str:
    def one(label: str, summary: Summary | None, key: str) -> str:
        if summary is None:
            return (
                f'<div class="latest" data-latest="{key}"><h3>{label}</h3>'
                '<p class="muted">none yet</p></div>'
            )
        detail = (
            f"{_duration(summary.duration_seconds)}, {summary.messages_in_flight} messages "
            f"({summary.money_in_flight}) in flight"
            if summary.status == "complete"
            else "missing " + (", ".join(summary.missing) or "–")
        )
        return (
            f'<div class="latest" data-latest="{key}" data-snapshot="{_e(summary.snapshot_id)}">'
            f"<h3>{label}</h3><p>{_link(summary.snapshot_id)} "
            f"{_status_badge(summary.status, summary.verified)}</p>"
            f'<p class="muted">{_e(summary.completed_at)}<br>{_e(detail)}</p></div>'
        )

    return (
        '<section id="latest" class="card">'
        + one("Latest complete", complete, "complete")
        + one("Latest aborted", aborted, "aborted")
        + "</section>"
    )


def _stats(stats: DurationStats | None) -> str:
    if stats is None:
        body = '<p class="muted">no complete snapshot yet</p>'
    else:
        cells = "".join(
            f'<td data-stat="{k}">{_duration(v)}</td>'
            for k, v in (
                ("min", stats.min),
                ("avg", stats.avg),
                ("max", stats.max),
                ("p50", stats.p50),
                ("p95", stats.p95),
            )
        )
        body = (
            "<table><tr><th>min</th><th>avg</th><th>max</th><th>p50</th><th>p95</th></tr>"
            f"<tr>{cells}</tr></table>"
            f'<p class="muted">over {stats.count} complete snapshots</p>'
        )
    return f'<section id="durations" class="card"><h3>Durations</h3>{body}</section>'


def _cluster(nodes: Sequence[NodeLive]) -> str:
    rows = []
    channel_rows = []
    for node in nodes:
        health = (
            '<span class="ok">up</span>'
            if node.healthy
            else f'<span class="bad" title="{_e(node.error)}">down</span>'
        )
        workload = (
            "–"
            if node.workload_running is None or not node.healthy
            else ("running" if node.workload_running else "paused")
        )
        rows.append(
            f'<tr data-node="{_e(node.node_id)}" class="{"" if node.healthy else "down"}">'
            f"<td>{_e(node.node_id)}</td><td>{health}</td>"
            f'<td class="num">{_e(node.balance if node.balance is not None else "–")}</td>'
            f'<td class="num">{_e(node.unacked if node.unacked is not None else "–")}</td>'
            f"<td>{_e(', '.join(node.active_snapshots) or '–')}</td><td>{workload}</td></tr>"
        )
        for channel in node.channels:
            if channel.direction != "out":
                continue
            channel_rows.append(
                f'<tr data-channel="{_e(node.node_id)}-{_e(channel.peer)}">'
                f"<td>{_e(node.node_id)}→{_e(channel.peer)}</td>"
                f"<td>{'yes' if channel.connected else '<span class=bad>no</span>'}</td>"
                f'<td class="num">{channel.count}</td>'
                f'<td class="num{" warn" if channel.unacked else ""}">{channel.unacked}</td></tr>'
            )
    total = sum(n.balance or 0 for n in nodes if n.healthy)
    table = (
        "<table><tr><th>node</th><th>health</th><th>balance</th><th>unacked frames</th>"
        "<th>active snapshots</th><th>workload</th></tr>"
        + "".join(rows)
        + f'<tr class="total"><td>total</td><td></td><td class="num">{total}</td>'
        "<td></td><td></td><td></td></tr></table>"
    )
    if channel_rows:
        channels = (
            "<table><tr><th>channel</th><th>connected</th><th>sent</th>"
            "<th>unacknowledged</th></tr>" + "".join(channel_rows) + "</table>"
        )
    else:
        channels = '<p class="muted">the nodes do not report per-channel backlog</p>'
    return (
        '<section id="cluster" class="card"><h3>The cluster now</h3>'
        f'<div class="row"><div>{table}<p class="muted">total of live balances excludes money '
        f"in flight</p></div><div>{channels}</div></div></section>"
    )


def _history(
    rows: Sequence[Summary],
    total: int,
    page: int,
    status: str | None,
    pending: Sequence[str],
    page_size: int,
) -> str:
    filters = ['<nav class="filters">']
    for value, label in ((None, "all"), *((s, s) for s in STATUS_FILTERS)):
        cls = "on" if value == status else ""
        filters.append(f'<a class="{cls}" href="{_e(history_url(1, value))}">{label}</a>')
    filters.append("</nav>")
    head = (
        "<tr><th>id</th><th>status</th><th>initiators</th><th>start</th><th>duration</th>"
        "<th>money in flight</th><th>messages in flight</th><th>verified</th></tr>"
    )
    body = []
    if page == 1 and status is None:
        for snapshot_id in pending:
            body.append(
                f'<tr data-snapshot="{_e(snapshot_id)}" data-status="pending">'
                f'<td>{_link(snapshot_id)}</td><td><span class="badge pending">in progress</span>'
                '</td><td colspan="6"></td></tr>'
            )
    for s in rows:
        body.append(
            f'<tr data-snapshot="{_e(s.snapshot_id)}" data-status="{_e(s.status)}">'
            f"<td>{_link(s.snapshot_id)}</td><td>{_status_badge(s.status, s.verified)}</td>"
            f"<td>{_e(', '.join(s.initiators))}</td>"
            f'<td title="{_e(s.started_at)}">{_e(_short_time(s.started_at))}</td>'
            f'<td class="num">{_duration(s.duration_seconds)}</td>'
            f'<td class="num">{s.money_in_flight}</td><td class="num">{s.messages_in_flight}</td>'
            f"<td>{_verified(s)}</td></tr>"
        )
    pages = max(1, -(-total // page_size))
    pager = ['<nav class="pager">']
    if page > 1:
        pager.append(f'<a rel="prev" href="{_e(history_url(page - 1, status))}">← newer</a>')
    pager.append(f"<span>page {page} of {pages} ({total} snapshots)</span>")
    if page < pages:
        pager.append(f'<a rel="next" href="{_e(history_url(page + 1, status))}">older →</a>')
    pager.append("</nav>")
    empty = "" if body else '<p class="muted">no snapshot yet: take one with cl-initiator</p>'
    return (
        '<section id="history" class="card"><h3>History</h3>'
        + "".join(filters)
        + f'<table id="history-table">{head}{"".join(body)}</table>{empty}'
        + "".join(pager)
        + "</section>"
    )


# -------------------------------------------------------------- snapshot


def pending_page(snapshot_id: str) -> str:
    body = (
        f'<h1>{_e(snapshot_id)} <span class="badge pending">in progress</span></h1>'
        "<p>The collector is still waiting for node reports. This page reloads by itself.</p>"
    )
    return _page(snapshot_id, body, "pending", ["pending.js"])


def snapshot_page(
    document: Mapping[str, Any], diagram_svg: str, topology_svg: str, axis: str
) -> str:
    sid = str(document.get("snapshot_id"))
    status = str(document.get("status"))
    verification: Mapping[str, Any] = document.get("verification") or {}
    ok = verification.get("ok")
    verdict = (
        '<span class="ok">verified</span>'
        if ok
        else (
            '<span class="bad">verification FAILED</span>'
            if verification.get("checked", True)
            else '<span class="muted">not verified</span>'
        )
    )
    reason = verification.get("reason")
    other_axis = "lamport" if axis == "wall" else "wall"
    links = (
        f'<a href="/snapshots/{_e(sid)}.svg">SVG</a> · <a href="/snapshots/{_e(sid)}.png">PNG</a>'
        f' · <a href="/api/snapshots/{_e(sid)}">JSON</a> · '
        f'<a href="/snapshots/{_e(sid)}?axis={other_axis}">'
        f"{'Lamport clocks' if other_axis == 'lamport' else 'wall clock'} as time</a>"
    )
    facts = [
        ("initiators", ", ".join(document.get("initiators") or []) or "–"),
        ("started", document.get("started_at")),
        ("finished", document.get("completed_at")),
        ("duration", _duration(document.get("duration_seconds"))),
        ("expected total", document.get("expected_total")),
    ]
    missing = document.get("missing") or []
    if missing:
        facts.append(("never recorded", ", ".join(missing)))
    waiting = document.get("waiting") or {}
    if waiting:
        facts.append(
            (
                "still waiting",
                "; ".join(f"{n} for {', '.join(s)}" for n, s in sorted(waiting.items())),
            )
        )
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    body = [
        f'<h1 data-snapshot="{_e(sid)}">{_e(sid)} {_status_badge(status, ok)} {verdict}</h1>',
        f'<p class="muted">{links}</p>',
        f'<p class="reason">{_e(reason)}</p>' if reason else "",
        '<section id="diagram" class="card"><h3>Space-time diagram</h3>'
        '<p class="muted">Hover a message for its seq and amount; click a node to follow it.</p>'
        f'<div id="spacetime">{diagram_svg}</div><div id="info" class="info muted">'
        "hover a message</div></section>",
        '<div class="row">',
        f'<section class="card"><h3>Snapshot</h3><dl>{dl}</dl></section>',
        f'<section id="topology" class="card"><h3>Topology: recorded balances, money in flight'
        f"</h3>{topology_svg}</section>",
        "</div>",
        _nodes_table(document),
        _checks(verification),
    ]
    return _page(sid, "".join(body), "snapshot", ["spacetime.js"])


def _nodes_table(document: Mapping[str, Any]) -> str:
    nodes: Mapping[str, Any] = document.get("nodes") or {}
    missing = [str(n) for n in document.get("missing") or []]
    rows = []
    for node_id in sorted(set(nodes) | set(missing), key=natural_key):
        state = nodes.get(node_id)
        if not isinstance(state, Mapping):
            rows.append(
                f'<tr data-node="{_e(node_id)}" class="down"><td>{_e(node_id)}</td>'
                '<td colspan="6" class="bad">never recorded its state</td></tr>'
            )
            continue
        sent = ", ".join(f"{p}:{c}" for p, c in (state.get("sent") or {}).items())
        received = ", ".join(f"{p}:{c}" for p, c in (state.get("received") or {}).items())
        rows.append(
            f'<tr data-node="{_e(node_id)}"><td>{_e(node_id)}</td>'
            f"<td>{_e(state.get('recorded_at'))}</td>"
            f"<td>{_e(state.get('completed_at') or '–')}</td>"
            f"<td>{'yes' if state.get('initiated') else ''}</td>"
            f'<td class="num">{_e(state.get("balance"))}</td><td>{_e(sent)}</td>'
            f"<td>{_e(received)}</td></tr>"
        )
    return (
        '<section id="nodes" class="card"><h3>Nodes</h3><table><tr><th>node</th>'
        "<th>recorded_at</th><th>completed_at</th><th>initiated</th><th>balance</th>"
        "<th>sent (to:count)</th><th>received (from:count)</th></tr>"
        + "".join(rows)
        + "</table></section>"
    )


def _checks(verification: Mapping[str, Any]) -> str:
    if not verification.get("checked", True):
        return (
            '<section id="checks" class="card"><h3>Verification</h3>'
            f'<p class="muted">not checked: {_e(verification.get("reason"))}</p></section>'
        )
    conservation: Mapping[str, Any] = verification.get("conservation") or {}
    rows = [
        f'<tr data-check="conservation"><td>conservation</td><td>{_ok(conservation.get("ok"))}</td>'
        f"<td>balances {_e(conservation.get('recorded_balances'))} + in flight "
        f"{_e(conservation.get('in_flight'))} = {_e(conservation.get('recorded_total'))}, "
        f"expected {_e(conservation.get('expected_total'))}</td></tr>"
    ]
    for check in verification.get("channels") or []:
        detail = (
            f"sent {check.get('sent')} − received {check.get('received')} = recorded "
            f"{check.get('recorded')}"
        )
        if check.get("problem"):
            detail += f": {check.get('problem')}"
        rows.append(
            f'<tr data-check="channel"><td>{_e(check.get("from"))}→{_e(check.get("to"))}</td>'
            f"<td>{_ok(check.get('ok'))}</td><td>{_e(detail)}</td></tr>"
        )
    return (
        '<section id="checks" class="card"><h3>Verification</h3><table><tr><th>check</th>'
        "<th>result</th><th>detail</th></tr>" + "".join(rows) + "</table></section>"
    )


def _ok(value: Any) -> str:
    return '<span class="ok">ok</span>' if value else '<span class="bad">FAILED</span>'


def error_page(status: int, message: str) -> str:
    return _page(f"{status}", f'<p class="bad">{_e(message)}</p>', "error")
