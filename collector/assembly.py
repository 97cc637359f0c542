"""Assembly of node reports into global snapshots. Pure: no I/O, no clock, no threads.

Theory of operation
-------------------
The collector learns about a snapshot id either from `begin` (the initiator
announces it, naming the initiating nodes) or from the first node report that
carries it, whichever comes first. That moment starts the snapshot's clock:
if not every node of the cluster has completed its local snapshot `timeout`
seconds later, the snapshot is finished as "aborted". When the last node's
complete report arrives, the snapshot is finished as "complete" and the
document (built and verified by `collector.document.build_document`) is final.

A node reports its progress (complete=False) when it records its state and
again whenever a marker closes one of its channels, naming the incoming
channels still open, then sends its final report (complete=True) when every
marker has arrived. Progress reports
are what make an aborted snapshot name its culprit: in a complete graph every
node waits for the marker of a node that is down, so without them nobody
would report and every node would look missing. With them the document says
who never recorded (`missing`) and who was still waiting for whom (`waiting`).

Every snapshot id is in exactly one of three states:

    unknown --(begin | first report)--> pending --(all reported)--> finished (complete)
                                         pending --(deadline)-------> finished (aborted)

A finished snapshot never changes again: a report arriving later (a node that
was slow, or retried after the timeout) is acknowledged and ignored, so the
stored file is never rewritten. For a pending snapshot, a node's reports obey
(previous report of the node -> new report: outcome)

    none     -> any                                        ACCEPTED
    progress -> final, same recorded state                 ACCEPTED (replaces it)
    progress -> progress, same recorded state, fewer open  ACCEPTED (replaces it)
    progress -> progress, same recorded state, same open   DUPLICATE (a retry)
    progress -> progress, same recorded state, more open   DUPLICATE (older, late)
    final    -> final, same state and channels             DUPLICATE (a retry)
    final    -> progress, same recorded state              DUPLICATE (late, stale)
    anything else                                          CONFLICT (refused)

where the recorded state is balance, sent, received and initiated: what the
node copied when it recorded, which no later report may contradict. A node
renews its progress report whenever a marker closes one of its channels, so
`open_channels` only ever shrinks.

The caller supplies the time (`now`, seconds since the epoch) with every
event, so the same event sequence always gives the same documents; the
gRPC servicer passes `time.time()` and the tests pass whatever they like.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.document import NodeReport, build_document
from common.config import ClusterConfig
from common.timeutil import iso_utc
from node.core import InvalidSnapshotId, validate_snapshot_id

# What a node's timeline may hold (see node/timeline.py): at most 50 transfers
# per channel, and the markers of the snapshot (one per channel, each way).
TIMELINE_TRANSFERS_PER_CHANNEL = 50
TIMELINE_KINDS = frozenset({"marker_sent", "marker_received", "transfer_sent", "transfer_received"})


class InvalidReport(ValueError):
    """A report or request the collector refuses (the sender's fault); never applied."""


class ReportOutcome(enum.Enum):
    ACCEPTED = "accepted"  # new information; the caller persists it
    DUPLICATE = "duplicate"  # the same report again (a retry): nothing to do
    CONFLICT = "conflict"  # the same node reported something else before: refused
    ALREADY_FINISHED = "already_finished"  # too late: acknowledged and ignored
    NOT_BEGUN = "not_begun"  # nobody began this snapshot (require_begin): refused


@dataclass
class PendingSnapshot:
    """A snapshot that is not finished yet (also what is persisted across restarts)."""

    snapshot_id: str
    started: float  # seconds since the epoch, when the collector first heard of it
    initiators: set[str] = field(default_factory=set)
    reports: dict[str, NodeReport] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    snapshot_id: str
    status: str  # "pending", "complete" or "aborted"
    reported: tuple[str, ...]  # nodes whose local snapshot is complete
    missing: tuple[str, ...]  # the other nodes (including those in `recorded`)
    recorded: tuple[str, ...] = ()  # recorded their state, still waiting for markers


def check_snapshot_id(snapshot_id: str) -> str:
    """`snapshot_id` if safe as a file name in the snapshot directory, else InvalidReport."""
    try:
        validate_snapshot_id(snapshot_id)
    except InvalidSnapshotId as error:  # also refuses reserved names such as "latest"
        raise InvalidReport(str(error)) from error
    return snapshot_id


def validate_report(config: ClusterConfig, report: NodeReport) -> None:
    """Raise InvalidReport unless `report` fits the cluster's nodes and channels.

    The recorded numbers themselves are not judged here (that is verification,
    which keeps a wrong cut visible in the document); only what cannot be a
    well-formed report of this cluster is refused.
    """
    snap = report.snapshot
    check_snapshot_id(snap.snapshot_id)
    node = snap.node_id
    if node not in config.node_ids:
        raise InvalidReport(f"unknown node {node!r} (known: {', '.join(config.node_ids)})")
    if snap.balance < 0:
        raise InvalidReport(f"{node}: negative balance {snap.balance}")
    outgoing, incoming = set(config.outgoing(node)), set(config.incoming(node))
    for peer, count in snap.sent.items():
        if peer not in outgoing:
            raise InvalidReport(
                f"{node}: 'sent' names {peer!r}, but there is no channel {node} -> {peer}"
            )
        if count < 0:
            raise InvalidReport(f"{node}: negative sent count {count} for {peer}")
    for peer, count in snap.received.items():
        if peer not in incoming:
            raise InvalidReport(
                f"{node}: 'received' names {peer!r}, but there is no channel {peer} -> {node}"
            )
        if count < 0:
            raise InvalidReport(f"{node}: negative received count {count} for {peer}")
    open_channels = set(report.open_channels)
    if len(open_channels) != len(report.open_channels):
        raise InvalidReport(f"{node}: an open channel is named twice")
    if open_channels - incoming:
        raise InvalidReport(
            f"{node}: open channel from {', '.join(sorted(open_channels - incoming))}, "
            f"but there is no such channel to {node}"
        )
    if report.complete and open_channels:
        raise InvalidReport(f"{node}: a complete report cannot have open channels")
    if not report.complete and not open_channels:
        raise InvalidReport(f"{node}: a progress report must name its open channels")
    senders = set(snap.channels)
    if senders != incoming:
        extra, absent = sorted(senders - incoming), sorted(incoming - senders)
        problems = []
        if extra:
            problems.append(f"no such incoming channel from {', '.join(extra)}")
        if absent:
            problems.append(f"missing the state of the channel from {', '.join(absent)}")
        raise InvalidReport(
            f"{node}: channel states do not match the topology: {'; '.join(problems)}"
        )
    neighbours = outgoing | incoming
    limit = TIMELINE_TRANSFERS_PER_CHANNEL * (len(outgoing) + len(incoming)) + 2 * len(neighbours)
    if len(report.timeline) > limit:
        raise InvalidReport(
            f"{node}: timeline has {len(report.timeline)} events, more than the {limit} "
            "a node of this topology can record"
        )
    for event in report.timeline:
        if event.get("kind") not in TIMELINE_KINDS:
            raise InvalidReport(f"{node}: unknown timeline event kind {event.get('kind')!r}")
        if event.get("peer") not in neighbours:
            raise InvalidReport(
                f"{node}: timeline event with {event.get('peer')!r}, which is not a neighbour"
            )
    for sender, messages in sorted(snap.channels.items()):
        previous = 0
        for message in messages:
            if message.amount <= 0:
                raise InvalidReport(
                    f"{node}: non-positive amount {message.amount} recorded on {sender} -> {node}"
                )
            if message.transfer_seq <= previous:
                raise InvalidReport(
                    f"{node}: recorded transfer numbers on {sender} -> {node} are not increasing"
                )
            previous = message.transfer_seq


def _same_recording(a: NodeReport, b: NodeReport) -> bool:
    """Equal state as recorded (before any channel state); wall-clock fields aside."""
    x, y = a.snapshot, b.snapshot
    return (
        x.balance == y.balance
        and dict(x.sent) == dict(y.sent)
        and dict(x.received) == dict(y.received)
        and x.initiated == y.initiated
    )


def _same_state(a: NodeReport, b: NodeReport) -> bool:
    """Equal recorded state and channel states; the wall-clock fields may differ."""
    return _same_recording(a, b) and {k: tuple(v) for k, v in a.snapshot.channels.items()} == {
        k: tuple(v) for k, v in b.snapshot.channels.items()
    }


class Assembly:
    """The collector's state: pending snapshots and the ids of finished ones."""

    def __init__(
        self,
        config: ClusterConfig,
        finished: Mapping[str, tuple[str, str]] | None = None,
        require_begin: bool = False,
    ) -> None:
        """`finished` maps the ids already stored (after a restart) to their
        (status, completed_at). With `require_begin`, a report for a snapshot
        nobody began is NOT_BEGUN instead of starting it (the collector's
        rule: an initiator always begins first)."""
        self.config = config
        self.require_begin = require_begin
        self.timeout = config.snapshot_timeout
        self._pending: dict[str, PendingSnapshot] = {}
        self._finished: dict[str, tuple[str, str]] = dict(finished or {})

    # ------------------------------------------------------------ queries

    def is_finished(self, snapshot_id: str) -> bool:
        return snapshot_id in self._finished

    def pending(self, snapshot_id: str) -> PendingSnapshot | None:
        return self._pending.get(snapshot_id)

    @property
    def finished_ids(self) -> tuple[tuple[str, str], ...]:
        """(id, status) of every finished snapshot, in order of completion."""
        order = sorted(self._finished.items(), key=lambda item: (item[1][1], item[0]))
        return tuple((sid, status) for sid, (status, _) in order)

    @property
    def pending_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._pending, key=lambda sid: (self._pending[sid].started, sid)))

    @property
    def pending_snapshots(self) -> list[PendingSnapshot]:
        return [self._pending[sid] for sid in self.pending_ids]

    def deadline(self, snapshot_id: str) -> float | None:
        pending = self._pending.get(snapshot_id)
        return None if pending is None else pending.started + self.timeout

    def progress(self, snapshot_id: str) -> Progress | None:
        """Where `snapshot_id` stands; None if never heard of."""
        pending = self._pending.get(snapshot_id)
        if pending is None:
            if snapshot_id in self._finished:
                return Progress(snapshot_id, self._finished[snapshot_id][0], (), ())
            return None
        reports = pending.reports
        reported = tuple(n for n in self.config.node_ids if n in reports and reports[n].complete)
        missing = tuple(n for n in self.config.node_ids if n not in reported)
        recorded = tuple(n for n in missing if n in reports)
        return Progress(snapshot_id, "pending", reported, missing, recorded)

    # ------------------------------------------------------------- events

    def forget_finished(self, snapshot_ids: Iterable[str]) -> None:
        """Drop finished snapshots from the index (their files were pruned by retention)."""
        for snapshot_id in snapshot_ids:
            self._finished.pop(snapshot_id, None)

    def restore(self, pending: PendingSnapshot) -> None:
        """Reload a pending snapshot saved before a restart (already validated)."""
        if pending.snapshot_id not in self._finished:
            # As in add_report: a node that initiated says so in its report.
            pending.initiators |= {
                node for node, report in pending.reports.items() if report.snapshot.initiated
            }
            self._pending[pending.snapshot_id] = pending

    def begin(self, snapshot_id: str, initiators: Iterable[str], now: float) -> bool:
        """Announce a snapshot. Returns True if the pending state changed (persist it).

        Raises InvalidReport for a bad id or an unknown initiator.
        """
        check_snapshot_id(snapshot_id)
        initiators = set(initiators)
        unknown = sorted(initiators - set(self.config.node_ids))
        if unknown:
            raise InvalidReport(
                f"unknown initiator node {', '.join(unknown)} "
                f"(known: {', '.join(self.config.node_ids)})"
            )
        if snapshot_id in self._finished:
            return False
        pending = self._pending.get(snapshot_id)
        if pending is None:
            self._pending[snapshot_id] = PendingSnapshot(snapshot_id, now, initiators)
            return True
        if initiators <= pending.initiators:
            return False
        pending.initiators |= initiators
        return True

    def classify(self, report: NodeReport) -> ReportOutcome:
        """What `add_report` would do with `report`, without changing anything."""
        snapshot_id, node = report.snapshot.snapshot_id, report.snapshot.node_id
        if snapshot_id in self._finished:
            return ReportOutcome.ALREADY_FINISHED
        pending = self._pending.get(snapshot_id)
        if pending is None and self.require_begin:
            return ReportOutcome.NOT_BEGUN
        if pending is None or node not in pending.reports:
            return ReportOutcome.ACCEPTED
        before = pending.reports[node]
        if not _same_recording(before, report):
            return ReportOutcome.CONFLICT
        if not before.complete:
            if report.complete:
                return ReportOutcome.ACCEPTED  # the final report supersedes the progress one
            # Open channels only ever close: fewer is news, the same is a retry,
            # more is an older report arriving late; anything else is impossible.
            was, now = set(before.open_channels), set(report.open_channels)
            if now < was:
                return ReportOutcome.ACCEPTED
            return ReportOutcome.DUPLICATE if now >= was else ReportOutcome.CONFLICT
        if not report.complete:
            return ReportOutcome.DUPLICATE  # a stale progress report after the final one
        return ReportOutcome.DUPLICATE if _same_state(before, report) else ReportOutcome.CONFLICT

    def add_report(
        self, report: NodeReport, now: float
    ) -> tuple[ReportOutcome, dict[str, Any] | None]:
        """Apply a validated report; returns the outcome and the document if it finished."""
        outcome = self.classify(report)
        if outcome is not ReportOutcome.ACCEPTED:
            return outcome, None
        snapshot_id = report.snapshot.snapshot_id
        pending = self._pending.setdefault(snapshot_id, PendingSnapshot(snapshot_id, now))
        pending.reports[report.snapshot.node_id] = report
        if report.snapshot.initiated:
            pending.initiators.add(report.snapshot.node_id)
        if self._all_complete(pending):
            return outcome, self._finish(pending, now, timed_out=False)
        return outcome, None

    def would_finish(self, report: NodeReport) -> bool:
        """True if `add_report(report)` would finish its snapshot: it is accepted,
        complete, and the only complete report still missing."""
        pending = self._pending.get(report.snapshot.snapshot_id)
        if pending is None or not report.complete:
            return False
        if self.classify(report) is not ReportOutcome.ACCEPTED:
            return False
        node = report.snapshot.node_id
        reports = pending.reports
        return node in self.config.node_ids and all(
            n == node or (n in reports and reports[n].complete) for n in self.config.node_ids
        )

    def complete_ready(self, now: float) -> list[dict[str, Any]]:
        """Finish every pending snapshot that already has all reports (after `restore`)."""
        return [
            self._finish(self._pending[sid], now, timed_out=False)
            for sid in self.pending_ids
            if self._all_complete(self._pending[sid])
        ]

    def expire(self, now: float) -> list[dict[str, Any]]:
        """Finish, as aborted, every pending snapshot whose deadline has passed."""
        documents = []
        for snapshot_id in self.pending_ids:
            pending = self._pending[snapshot_id]
            if now >= pending.started + self.timeout:
                documents.append(self._finish(pending, now, timed_out=True))
        return documents

    def _all_complete(self, pending: PendingSnapshot) -> bool:
        reports = pending.reports
        return all(n in reports and reports[n].complete for n in self.config.node_ids)

    def _finish(self, pending: PendingSnapshot, now: float, timed_out: bool) -> dict[str, Any]:
        del self._pending[pending.snapshot_id]
        document = build_document(
            snapshot_id=pending.snapshot_id,
            initiators=sorted(pending.initiators),
            started_at=iso_utc(pending.started),
            completed_at=iso_utc(now),
            expected_total=self.config.expected_total,
            node_ids=self.config.node_ids,
            channels=self.config.channels,
            reports=dict(pending.reports),
            timed_out=timed_out,
        )
        self._finished[pending.snapshot_id] = (document["status"], document["completed_at"])
        return document
