"""The restore protocol, the coordinator's side: decisions only. No I/O lives here.

The collector coordinates a restore (why the collector, and the whole
protocol, are in node/restore.py's header). This module decides: which
state every node gets (`plan_restore`), which epoch the cluster moves to
(`choose_epoch`), and, as a two-phase commit, what to send next and what a
vote, an acknowledgement, a deadline or a coordinator restart does to the
restore (`RestoreRecord` and its transitions). The server stores each new
record atomically as `restores/<n>.json` *before* it sends what the record
says to send; that ordering is the whole crash story:

    phase        written when                    sent while in it   on coordinator restart
    preparing    the restore starts              Prepare            -> aborting
    committing   every node voted yes            Commit             stays (resend Commit)
    aborting     a no, or the prepare deadline   Abort              stays (resend Abort)
    complete     every node acked Commit         nothing            stays
    aborted      every node acked Abort          nothing            stays

Writing phase=committing is the commit point: before it every node can
still return to the old epoch, after it every node will reach the new one.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from collector.verify import verify_snapshot
from node.restore import RestoreTarget

RESTORE_SCHEMA_VERSION = 1


class RestoreRefused(ValueError):
    """A restore that must not start; nothing was changed. The message says why."""


# ------------------------------------------------------------------ planning


def plan_restore(
    document: Mapping[str, Any],
    node_ids: Sequence[str],
    channels: Iterable[tuple[str, str]],
    expected_total: int,
    restore: int,
    epoch: int,
) -> dict[str, RestoreTarget]:
    """Every node's target for restoring the snapshot `document` (its JSON).

    Refuses (RestoreRefused) a snapshot that is not complete, whose recorded
    numbers do not verify (checked again here, not read from the document),
    or that does not fit the cluster as configured now: other nodes, other
    channels, or another total.
    """
    sid = str(document.get("snapshot_id", "?"))
    if document.get("status") != "complete":
        raise RestoreRefused(
            f"snapshot {sid} is {document.get('status', 'unknown')}: only a complete "
            "snapshot can be restored"
        )
    nodes: Mapping[str, Mapping[str, Any]] = document.get("nodes", {})
    recorded_channels: list[Mapping[str, Any]] = list(document.get("channels", []))
    if sorted(nodes) != sorted(node_ids):
        raise RestoreRefused(
            f"snapshot {sid} has nodes {', '.join(sorted(nodes))}, but the cluster has "
            f"{', '.join(sorted(node_ids))}"
        )
    wanted = sorted(set(channels))
    found = sorted((str(ch["from"]), str(ch["to"])) for ch in recorded_channels)
    if found != wanted:
        missing = sorted(set(wanted) - set(found))
        extra = sorted(set(found) - set(wanted))
        parts = []
        if missing:
            parts.append("it lacks " + ", ".join(f"{a}->{b}" for a, b in missing))
        if extra:
            parts.append("it has " + ", ".join(f"{a}->{b}" for a, b in extra))
        raise RestoreRefused(
            f"snapshot {sid} was taken with other channels than the cluster has now "
            f"({'; '.join(parts)})"
        )
    if any(ch.get("messages") is None for ch in recorded_channels):
        raise RestoreRefused(f"snapshot {sid} lacks the recorded state of a channel")
    verdict = verify_snapshot(
        expected_total, nodes, recorded_channels, initiators=document.get("initiators", [])
    )
    if not verdict["ok"]:
        conservation = verdict["conservation"]
        problems = [r for r in verdict["channels"] if not r["ok"]]
        if problems:
            detail = f"{problems[0]['from']}->{problems[0]['to']}: {problems[0]['problem']}"
        elif not conservation["ok"]:
            detail = f"recorded total {conservation['recorded_total']} != {expected_total}"
        else:
            detail = str(verdict["initiators"]["problem"])
        raise RestoreRefused(f"snapshot {sid} does not verify against this cluster: {detail}")
    resend: dict[str, dict[str, tuple[int, ...]]] = {node: {} for node in node_ids}
    for ch in recorded_channels:
        amounts = tuple(int(m["amount"]) for m in ch["messages"])
        if amounts:
            resend[str(ch["from"])][str(ch["to"])] = amounts
    return {
        node: RestoreTarget(
            restore=restore,
            epoch=epoch,
            snapshot_id=sid,
            balance=int(nodes[node]["balance"]),
            resend=resend[node],
        )
        for node in node_ids
    }


def expected_balances(targets: Mapping[str, RestoreTarget]) -> dict[str, int]:
    """Each node's balance once the resent transfers have arrived (workload paused):
    its recorded balance plus what the snapshot recorded in flight toward it."""
    balances = {node: target.balance for node, target in targets.items()}
    for target in targets.values():
        for peer, amounts in target.resend.items():
            balances[peer] += sum(amounts)
    return balances


def choose_epoch(last_epoch: int, node_epochs: Iterable[int] = ()) -> int:
    """The epoch a new restore creates: newer than every epoch anyone has seen."""
    return max([last_epoch, *node_epochs]) + 1


# ---------------------------------------------------------------- the record


class RestorePhase(enum.Enum):
    PREPARING = "preparing"
    COMMITTING = "committing"
    ABORTING = "aborting"
    COMPLETE = "complete"
    ABORTED = "aborted"


FINAL = (RestorePhase.COMPLETE, RestorePhase.ABORTED)


@dataclass(frozen=True)
class Prepare:
    target: RestoreTarget


@dataclass(frozen=True)
class Commit:
    restore: int
    epoch: int


@dataclass(frozen=True)
class Abort:
    restore: int


Message = Prepare | Commit | Abort


@dataclass(frozen=True)
class RestoreRecord:
    """One restore, as `restores/<number>.json` holds it. Immutable: every
    transition returns a new record, which the caller writes before acting."""

    number: int
    snapshot_id: str
    epoch: int
    from_epoch: int
    started: str
    targets: Mapping[str, RestoreTarget]
    phase: RestorePhase = RestorePhase.PREPARING
    prepared: frozenset[str] = frozenset()  # voted yes
    acked: frozenset[str] = frozenset()  # acknowledged the decision (commit or abort)
    completed: str = ""
    reason: str = ""  # why it aborted
    events: tuple[tuple[str, str], ...] = field(default=())  # (time, what) for people

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(self.targets)

    @property
    def finished(self) -> bool:
        return self.phase in FINAL

    @property
    def decided(self) -> str:
        """ "commit", "abort" or "" (not decided yet)."""
        if self.phase in (RestorePhase.COMMITTING, RestorePhase.COMPLETE):
            return "commit"
        if self.phase in (RestorePhase.ABORTING, RestorePhase.ABORTED):
            return "abort"
        return ""

    @property
    def outcome(self) -> str:
        """ "complete", "aborted" or "pending"."""
        if self.phase is RestorePhase.COMPLETE:
            return "complete"
        if self.phase is RestorePhase.ABORTED:
            return "aborted"
        return "pending"

    def waiting_for(self) -> tuple[str, ...]:
        """Nodes whose answer the current phase still needs."""
        if self.phase is RestorePhase.PREPARING:
            return tuple(n for n in self.nodes if n not in self.prepared)
        if self.phase in (RestorePhase.COMMITTING, RestorePhase.ABORTING):
            return tuple(n for n in self.nodes if n not in self.acked)
        return ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": RESTORE_SCHEMA_VERSION,
            "restore": self.number,
            "snapshot_id": self.snapshot_id,
            "epoch": self.epoch,
            "from_epoch": self.from_epoch,
            "started": self.started,
            "completed": self.completed or None,
            "phase": self.phase.value,
            "outcome": self.outcome,
            "reason": self.reason,
            "nodes": {
                node: {
                    "balance": target.balance,
                    "resend": {p: list(a) for p, a in sorted(target.resend.items())},
                    "prepared": node in self.prepared,
                    "acked": node in self.acked,
                }
                for node, target in self.targets.items()
            },
            "expected_balances": expected_balances(self.targets),
            "events": [{"at": at, "what": what} for at, what in self.events],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RestoreRecord:
        number = int(data["restore"])
        epoch = int(data["epoch"])
        sid = str(data["snapshot_id"])
        nodes: Mapping[str, Mapping[str, Any]] = data["nodes"]
        targets = {
            str(node): RestoreTarget(
                restore=number,
                epoch=epoch,
                snapshot_id=sid,
                balance=int(info["balance"]),
                resend={
                    str(p): tuple(int(a) for a in amounts) for p, amounts in info["resend"].items()
                },
            )
            for node, info in nodes.items()
        }
        return cls(
            number=number,
            snapshot_id=sid,
            epoch=epoch,
            from_epoch=int(data.get("from_epoch", 0)),
            started=str(data["started"]),
            targets=targets,
            phase=RestorePhase(data["phase"]),
            prepared=frozenset(n for n, info in nodes.items() if info.get("prepared")),
            acked=frozenset(n for n, info in nodes.items() if info.get("acked")),
            completed=str(data.get("completed") or ""),
            reason=str(data.get("reason", "")),
            events=tuple((str(e["at"]), str(e["what"])) for e in data.get("events", [])),
        )


# --------------------------------------------------------------- transitions


def begin(
    number: int,
    snapshot_id: str,
    epoch: int,
    from_epoch: int,
    targets: Mapping[str, RestoreTarget],
    now: str,
) -> RestoreRecord:
    """A new restore in phase preparing (write it, then send `messages`)."""
    return RestoreRecord(
        number=number,
        snapshot_id=snapshot_id,
        epoch=epoch,
        from_epoch=from_epoch,
        started=now,
        targets=dict(targets),
        events=((now, f"preparing: restore snapshot {snapshot_id} into epoch {epoch}"),),
    )


def messages(record: RestoreRecord) -> list[tuple[str, Message]]:
    """What to send now, to whom: the current phase's message to every node
    whose answer is still missing. Sending it again is always safe."""
    if record.phase is RestorePhase.PREPARING:
        return [(n, Prepare(record.targets[n])) for n in record.waiting_for()]
    if record.phase is RestorePhase.COMMITTING:
        return [(n, Commit(record.number, record.epoch)) for n in record.waiting_for()]
    if record.phase is RestorePhase.ABORTING:
        return [(n, Abort(record.number)) for n in record.waiting_for()]
    return []


def _event(record: RestoreRecord, now: str, what: str) -> tuple[tuple[str, str], ...]:
    return (*record.events, (now, what))


def on_vote(record: RestoreRecord, node: str, ok: bool, reason: str, now: str) -> RestoreRecord:
    """A node answered Prepare. Only counts while preparing (a late vote changes nothing)."""
    if record.phase is not RestorePhase.PREPARING or node not in record.targets:
        return record
    if not ok:
        why = f"{node} refused to prepare: {reason}"
        return replace(
            record,
            phase=RestorePhase.ABORTING,
            reason=why,
            events=_event(record, now, f"aborting: {why}"),
        )
    prepared = record.prepared | {node}
    if prepared == frozenset(record.nodes):
        return replace(
            record,
            prepared=prepared,
            phase=RestorePhase.COMMITTING,
            events=_event(record, now, "committing: every node prepared"),
        )
    return replace(record, prepared=prepared)


def on_prepare_deadline(record: RestoreRecord, now: str) -> RestoreRecord:
    """The prepare phase took too long (a node down or unreachable): abort."""
    if record.phase is not RestorePhase.PREPARING:
        return record
    missing = ", ".join(record.waiting_for())
    why = f"no prepare vote in time from {missing}"
    return replace(
        record,
        phase=RestorePhase.ABORTING,
        reason=why,
        events=_event(record, now, f"aborting: {why}"),
    )


def on_ack(record: RestoreRecord, node: str, now: str) -> RestoreRecord:
    """A node acknowledged the decision (Commit or Abort)."""
    if record.phase not in (RestorePhase.COMMITTING, RestorePhase.ABORTING):
        return record
    if node not in record.targets or node in record.acked:
        return record
    acked = record.acked | {node}
    if acked != frozenset(record.nodes):
        return replace(record, acked=acked)
    final = (
        RestorePhase.COMPLETE if record.phase is RestorePhase.COMMITTING else RestorePhase.ABORTED
    )
    return replace(
        record,
        acked=acked,
        phase=final,
        completed=now,
        events=_event(record, now, f"{final.value}: every node acknowledged"),
    )


def recover(record: RestoreRecord, now: str) -> RestoreRecord:
    """The coordinator restarted and read `record`: before the commit point the
    restore aborts (the votes it had are not trusted to still hold a decision
    nobody made); after it, it carries on."""
    if record.phase is not RestorePhase.PREPARING:
        return record
    why = "the coordinator restarted before every node had prepared"
    return replace(
        record,
        phase=RestorePhase.ABORTING,
        reason=why,
        events=_event(record, now, f"aborting: {why}"),
    )
