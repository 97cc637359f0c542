"""The restore protocol, a node's side: decisions only. No I/O lives here.

A restore rolls the whole cluster back to a complete snapshot S: every
node's balance becomes the balance S recorded for it, every transfer S
recorded in flight is delivered again, exactly once, and nothing sent after
the cut survives. This module decides what one node does at each step; the
coordinator's decisions are in collector/restore.py; the core
(`NodeCore.install_restore`) installs the state. The runtime stores what
these functions return and performs what they say, nothing more.

Theory of operation
-------------------
**Epochs.** The cluster lives in an *epoch*, an integer (0 until the first
restore). Every frame carries the epoch of its sender; every counter and
sequence number belongs to one epoch. A restore creates the next epoch and
moves every node into it: counters start from 0 again, and a frame of one
epoch is never applied by a node in another (`admit`). This is what makes
"nothing sent after the cut survives" true without chasing frames: the old
epoch's outboxes are dropped at commit, and an old-epoch frame still on the
wire is refused by any node that has committed.

**Coordinator: the collector.** It holds the snapshot documents (the only
complete copy of S: every node's balance and every channel's recorded
messages), it is a long-lived process with an atomic file store, and it is
the one all nodes already talk to; the initiator is a short-lived CLI that
may be killed at any time and would leave a restore nobody finishes. So
`cl-initiator --restore ID` only asks the collector, which runs two-phase
commit, writing `restores/<n>.json` before each decision takes effect:

    coordinator                               every node
    -----------                               ----------
    plan from S, choose epoch e' = max+1
    write restores/<n>.json  phase=preparing
    Prepare(n, e', target_i)  -------------->  validate, store `prepared`
                                               durably; stop the workload,
                                               refuse new transfers and
                                               snapshot starts; vote yes
                              <--------------  Vote(yes) | Vote(no, reason)
    all yes: write phase=committing  (THE COMMIT POINT)
    any no / a node unreachable until the prepare deadline:
             write phase=aborting
    Commit(n, e') | Abort(n)  -------------->  commit: one transaction installs
                                               target_i at e' (balance, zero
                                               counters, empty old outbox, the
                                               resent transfers queued, epoch)
                                               abort: forget `prepared`, resume
                              <--------------  Ack
    all acked: write phase=complete | aborted, completed=<time>

**The in-flight money: senders resend.** S records the transfers in flight
on channel i -> j at the receiver j. The coordinator hands them to the
*sender* i (`target_i.resend[j]`), whose recorded balance was already
debited for them; on commit i queues them as transfers 1..k of epoch e' on
i -> j, and the ordinary channel machinery (durable outbox, per-channel
sequence numbers, acks, duplicate drop) delivers them exactly once and in
order. We chose this over "the receiver credits its recorded channels at
commit" because (1) the restored global state then *is* S, channel contents
included: a snapshot taken right after the restore records the same money
in flight that S recorded, so "the cut is a state the system can be in" is
demonstrated, not asserted; (2) delivery goes through the one path that is
already proven lossless and duplicate-free, instead of a second crediting
path with its own exactly-once rule; (3) the counter rule the collector
verifies (in flight on i -> j == transfers received_j+1 .. sent_i) holds in
the new epoch from its first instant, because the sender's counter starts at
k and the receiver's at 0. The price, a node needs its outgoing channels'
recorded messages, costs nothing: the coordinator has the whole document.

**Why prepare.** Commit replaces a node's whole state, so in principle it
needs no preparation; prepare buys atomicity. Every reason a node could
refuse the new state (older epoch, a channel set that no longer matches S,
another restore in progress, the node unreachable) is found before anyone
commits, so after the commit point every commit succeeds as soon as the node
is reachable: the restore can be finished, never half-done. Stopping the
workload at prepare keeps the old epoch still, so an abort hands it back as
it was (frames already on the wire keep being delivered: within the old
epoch the channels stay FIFO and lossless, so an abort loses nothing).

**Crashes.** Everything a node decides here is stored before it answers
(`prepared`, and at commit the installed state with `last_restore`), and
every message is idempotent: a repeated Prepare with the same target is
voted for again, a repeated Commit of the restore a node last committed is
acked, an Abort of a restore the node is not prepared for is acked.

* a node killed before it stored `prepared`: its vote never comes; at the
  prepare deadline the coordinator decides abort, and every node returns
  to the old epoch (the killed one had never left it).
* a node killed while prepared: it restarts prepared (workload still
  stopped) and waits for the decision, which the coordinator keeps sending.
* a node killed during commit: the install is one transaction; it restarts
  either prepared (Commit is sent again) or committed (the next Commit is
  acked).
* the coordinator killed before the commit point: on restart `recover`
  turns phase=preparing into aborting, so the restore ends aborted and
  every prepared node resumes in the old epoch.
* the coordinator killed after it: on restart it sends Commit again until
  every node has acked. The commit point is a file written atomically, so
  there is no third case.

A prepared node waits for the decision however long the coordinator is away
(two-phase commit blocks; deciding alone could contradict a commit already
written). It is paused, not broken, and money is conserved at every point:
within the old epoch nothing is created (no transfers while prepared, frames
still delivered exactly once); after the commit point the money of epoch e'
is the installed balances, the resent transfers in outboxes, and the targets
of nodes that have not committed yet, which is S's total. A frame of e'
reaching a node still prepared is refused *before* it is applied or acked
(`Admission.NOT_YET`), so it stays in the sender's outbox until the node
commits.

**Rejoin.** A node whose data dir was wiped or replaced by an old copy does
not know it, but its peers do: each end of a channel tells the other its
epoch and counters when a stream opens, and `judge_channel` compares them.
A sender that claims fewer frames than the receiver has applied, or a
receiver that has applied fewer frames than the sender already saw acked,
or a node in an epoch older than its peer's (and not prepared for it) has
lost state. Such a node marks itself stale: NOT_SERVING with a one-line
reason, no workload, no frame applied and none acknowledged, so nothing it
sends is ever dropped as a "duplicate". It comes back only through a
restore (`cl-node --rejoin` asks for one to the latest complete snapshot):
a stale node may prepare and commit, because commit replaces all of its
state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# ------------------------------------------------------------------ values


@dataclass(frozen=True)
class RestoreTarget:
    """What restore number `restore` installs at one node, in epoch `epoch`."""

    restore: int
    epoch: int
    snapshot_id: str
    balance: int
    # outgoing peer -> amounts S recorded in flight on this node -> peer, oldest first
    resend: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "restore": self.restore,
            "epoch": self.epoch,
            "snapshot_id": self.snapshot_id,
            "balance": self.balance,
            "resend": {peer: list(amounts) for peer, amounts in sorted(self.resend.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RestoreTarget:
        return cls(
            restore=int(data["restore"]),
            epoch=int(data["epoch"]),
            snapshot_id=str(data["snapshot_id"]),
            balance=int(data["balance"]),
            resend={
                str(peer): tuple(int(a) for a in amounts)
                for peer, amounts in dict(data.get("resend", {})).items()
            },
        )

    @property
    def resent_amount(self) -> int:
        return sum(sum(amounts) for amounts in self.resend.values())


class Phase(enum.Enum):
    SERVING = "serving"  # normal operation in `epoch`
    PREPARED = "prepared"  # voted yes for a restore, waiting for its decision
    STALE = "stale"  # lost state; serves nothing until a restore


@dataclass(frozen=True)
class Participant:
    """A node's restore state; stored durably with every change."""

    node_id: str
    epoch: int = 0
    last_restore: int = 0  # the newest restore committed here (0: none)
    prepared: RestoreTarget | None = None
    workload_was_running: bool = True  # restored on commit and abort
    stale: str = ""  # why this node must not serve; empty when it may

    @property
    def phase(self) -> Phase:
        if self.prepared is not None:
            return Phase.PREPARED
        if self.stale:
            return Phase.STALE
        return Phase.SERVING

    @property
    def serving(self) -> bool:
        """True when the node may run its workload and start snapshots."""
        return self.phase is Phase.SERVING

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "epoch": self.epoch,
            "last_restore": self.last_restore,
            "prepared": None if self.prepared is None else self.prepared.to_dict(),
            "workload_was_running": self.workload_was_running,
            "stale": self.stale,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Participant:
        prepared = data.get("prepared")
        return cls(
            node_id=str(data["node_id"]),
            epoch=int(data.get("epoch", 0)),
            last_restore=int(data.get("last_restore", 0)),
            prepared=None if prepared is None else RestoreTarget.from_dict(prepared),
            workload_was_running=bool(data.get("workload_was_running", True)),
            stale=str(data.get("stale", "")),
        )


# ---------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Vote:
    """The answer to Prepare: `ok`, or a refusal with the reason."""

    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class Install:
    """Commit: install `target` now (NodeCore.install_restore), in the same
    transaction as the new Participant; then resume the workload if
    `resume_workload`."""

    target: RestoreTarget
    resume_workload: bool


@dataclass(frozen=True)
class Acknowledge:
    """Nothing to change (a repeated Commit or an Abort with nothing to abort)."""

    detail: str


@dataclass(frozen=True)
class Refuse:
    """The request is refused and nothing changed; the reason says why."""

    reason: str


@dataclass(frozen=True)
class Resume:
    """Abort: the prepared restore is forgotten; resume the workload if asked."""

    resume_workload: bool


CommitOutcome = Install | Acknowledge | Refuse
AbortOutcome = Resume | Acknowledge


class Admission(enum.Enum):
    """What a node does with a received frame of some epoch."""

    APPLY = "apply"  # the frame's epoch is the node's: apply it as usual
    OLD_EPOCH = "old_epoch"  # the sender is behind: refuse; its commit discards the frame
    NOT_YET = "not_yet"  # sender committed first: refuse unapplied, unacked; it resends
    BEHIND = "behind"  # the cluster committed a restore this node missed: it is stale
    NOT_SERVING = "not_serving"  # this node is stale: apply nothing until a restore


# ---------------------------------------------------------------- decisions


def prepare(
    state: Participant,
    target: RestoreTarget,
    outgoing: Iterable[str],
    workload_running: bool,
) -> tuple[Participant, Vote]:
    """Prepare for `target`: the new state (store it before answering) and the vote."""
    if state.prepared is not None:
        if state.prepared == target:
            return state, Vote(True, f"already prepared for restore {target.restore}")
        return state, Vote(
            False,
            f"{state.node_id} is prepared for restore {state.prepared.restore}, which must be "
            "committed or aborted first",
        )
    if target.restore <= state.last_restore:
        return state, Vote(
            False,
            f"{state.node_id} has already committed restore {state.last_restore}; "
            f"restore {target.restore} is not newer",
        )
    if target.epoch <= state.epoch:
        return state, Vote(
            False,
            f"{state.node_id} is at epoch {state.epoch}; cannot restore into epoch {target.epoch}",
        )
    if target.balance < 0:
        return state, Vote(False, f"restored balance of {state.node_id} is negative")
    unknown = sorted(set(target.resend) - set(outgoing))
    if unknown:
        return state, Vote(
            False,
            f"snapshot {target.snapshot_id} has in-flight transfers on "
            f"{', '.join(f'{state.node_id}->{p}' for p in unknown)}, a channel this node "
            "does not have",
        )
    if any(a <= 0 for amounts in target.resend.values() for a in amounts):
        return state, Vote(False, f"a non-positive in-flight amount for {state.node_id}")
    # A stale node keeps its workload stopped after the restore only if it had
    # stopped it itself: being stale is not a choice the restore must preserve.
    running = workload_running or bool(state.stale and state.workload_was_running)
    return replace(state, prepared=target, workload_was_running=running), Vote(True)


def commit(state: Participant, restore: int, epoch: int) -> tuple[Participant, CommitOutcome]:
    """Commit restore `restore` into `epoch`."""
    prepared = state.prepared
    if prepared is not None and prepared.restore == restore and prepared.epoch == epoch:
        new = replace(state, epoch=epoch, last_restore=restore, prepared=None, stale="")
        return new, Install(prepared, resume_workload=state.workload_was_running)
    if prepared is None and state.last_restore == restore and state.epoch == epoch:
        return state, Acknowledge(f"restore {restore} is already committed")
    what = (
        f"prepared for restore {prepared.restore} (epoch {prepared.epoch})"
        if prepared is not None
        else "not prepared for any restore"
    )
    return state, Refuse(f"{state.node_id} cannot commit restore {restore}: it is {what}")


def abort(state: Participant, restore: int) -> tuple[Participant, AbortOutcome]:
    """Abort restore `restore`: back to serving the old epoch as before the prepare."""
    prepared = state.prepared
    if prepared is not None and prepared.restore == restore:
        return replace(state, prepared=None), Resume(state.workload_was_running)
    return state, Acknowledge(f"not prepared for restore {restore}: nothing to abort")


def mark_stale(state: Participant, reason: str) -> Participant:
    """The node lost state (`judge_channel` said so): serve nothing until a restore.

    A prepared node stays prepared: the pending restore replaces its state anyway.
    """
    if state.stale:
        return state
    return replace(state, stale=reason or "data dir is stale")


def admit(state: Participant, frame_epoch: int) -> Admission:
    """What to do with a received frame stamped `frame_epoch`."""
    if state.stale:
        return Admission.NOT_SERVING
    if frame_epoch == state.epoch:
        return Admission.APPLY
    if frame_epoch < state.epoch:
        return Admission.OLD_EPOCH
    if state.prepared is not None and state.prepared.epoch == frame_epoch:
        return Admission.NOT_YET
    return Admission.BEHIND


def may_originate(state: Participant) -> str | None:
    """None if the node may send a new transfer or start a snapshot, else why not."""
    if state.prepared is not None:
        return f"{state.node_id} is prepared for restore {state.prepared.restore}"
    if state.stale:
        return f"{state.node_id} is not serving: {state.stale}"
    return None


# ------------------------------------------------------- channel handshakes


@dataclass(frozen=True)
class SenderEnd:
    """What the sending end of a channel tells the receiver when a stream opens."""

    epoch: int
    prepared_epoch: int | None  # the epoch it is prepared to move to, if any
    last_sent: int  # highest frame seq it ever assigned on the channel (next_seq - 1)
    first_unacked: int  # oldest frame seq still in its outbox (last_sent + 1 if none)


@dataclass(frozen=True)
class ReceiverEnd:
    """What the receiving end tells the sender (its first ack) when a stream opens."""

    epoch: int
    prepared_epoch: int | None
    last_applied: int


class Stale(enum.Enum):
    NOBODY = "nobody"
    SENDER = "sender"
    RECEIVER = "receiver"


@dataclass(frozen=True)
class ChannelVerdict:
    """The comparison of both ends of one channel: who lost state, and may frames flow."""

    stale: Stale
    flow: bool  # frames may be applied on this stream now
    reason: str = ""


def judge_channel(src: str, dst: str, sender: SenderEnd, receiver: ReceiverEnd) -> ChannelVerdict:
    """Compare the two ends of channel src -> dst; both ends run this same function.

    The counters obey, within one epoch, receiver.last_applied <= sender.last_sent
    (nothing is applied that was not sent) and sender.first_unacked - 1 <=
    receiver.last_applied (a frame leaves the outbox only once the receiver
    durably applied it). An end that breaks either has lost state.
    """
    channel = f"{src}->{dst}"
    if sender.epoch != receiver.epoch:
        older, older_name, who = (
            (sender, src, Stale.SENDER)
            if sender.epoch < receiver.epoch
            else (receiver, dst, Stale.RECEIVER)
        )
        newer_epoch = max(sender.epoch, receiver.epoch)
        if older.prepared_epoch == newer_epoch:
            # one end committed first; the other will once its Commit arrives
            return ChannelVerdict(Stale.NOBODY, False, f"{channel}: waiting for a commit")
        return ChannelVerdict(
            who,
            False,
            f"{older_name} is at epoch {older.epoch} but its peer on {channel} is at epoch "
            f"{newer_epoch}: it missed a restore (data dir stale or an old copy)",
        )
    if receiver.last_applied > sender.last_sent:
        return ChannelVerdict(
            Stale.SENDER,
            False,
            f"{dst} has applied {receiver.last_applied} frames on {channel} but {src} has sent "
            f"only {sender.last_sent}: {src}'s data dir is stale (empty or an old copy)",
        )
    if receiver.last_applied < sender.first_unacked - 1:
        return ChannelVerdict(
            Stale.RECEIVER,
            False,
            f"{src} saw frames up to {sender.first_unacked - 1} on {channel} acknowledged but "
            f"{dst} has applied only {receiver.last_applied}: {dst}'s data dir is stale "
            "(empty or an old copy)",
        )
    return ChannelVerdict(Stale.NOBODY, True)
