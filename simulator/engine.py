"""A deterministic simulator: the real NodeCore machines over simulated channels.

This is our fake network and clock (after trio.testing). It drives the same
`node.core.NodeCore` instances the gRPC nodes run, so anything found here is
a property of the algorithm, not of the simulator.

Model
-----
* Time is an integer number of ticks; nothing reads a wall clock. A tick is
  rendered as one millisecond after `EPOCH` in the snapshot documents, so the
  same run always produces byte-identical JSON.
* Every directed channel is a FIFO queue. Each `Send` gets a seeded random
  delay of 1..max_delay ticks, but never overtakes an earlier message on the
  same channel: delivery time = max(now + delay, delivery time of the message
  ahead of it). Channels are lossless and deliver exactly once.
* When several channels have a message due in the same tick, the one to
  deliver next is chosen by the same seeded generator, one message at a time,
  so interleavings across channels vary with the seed.
* One `random.Random(seed)` makes every choice. Same seed + same calls ==
  same run, same documents. No threads, no I/O.
* `restore_snapshot(id)` rolls every node back to a complete snapshot through
  the restore protocol's real decision functions (collector/restore.py plans
  and coordinates, node/restore.py prepares and commits, NodeCore installs):
  all prepares, then all commits, at the current tick. Every message carries
  its sender's epoch; one of an older epoch still on a channel is refused on
  arrival (counted in `discarded`), exactly as a node refuses such a frame.

The schedule (`Simulation.schedule`)
------------------------------------
Everything the simulator did, in the order it did it, as a tuple of frozen
`Step`s: the delivery schedule the seed chose, plus what caused it. Steps are
numbered 0, 1, 2, ... (`step`) and carry the tick they happened at (`tick`);
several steps share a tick, and their order within it is the order of
`step`. The kinds (stable: fields are only ever added):

    SendStep      a core put `payload` on channel src -> dst; it is due at
                  `deliver_at`. `index` numbers the payloads (transfers and
                  markers together) on that channel from 1.
    DeliverStep   the payload number `index` of channel src -> dst was handed
                  to dst's core (before the core reacts; the steps that follow
                  with the same tick and a higher `step` are its reaction).
    InitiateStep  the operator asked `node` to start `snapshot_id` (also when
                  the node had already recorded it: the request still happened).
    RestoreStep   `node`'s core was saved and rebuilt from its durable state.
    RecordStep    `node` recorded its local state for `snapshot_id`.
    FinishStep    `node` finished its local snapshot of `snapshot_id`.
    RestoreSnapshotStep  the cluster was rolled back to `snapshot_id`, into
                  `epoch` (the resent transfers follow as SendSteps).
    RefuseStep    payload `index` of src -> dst arrived from an older `epoch`
                  and was refused (never handed to the core).

A send and its delivery share (src, dst, index). `step_to_dict` gives each
step's JSON form (a `kind` key plus the fields; payloads as
`{"type": "transfer", "seq", "amount"}` or `{"type": "marker",
"snapshot_id"}`), for tools that draw or replay runs: the space-time
diagrams of `cl-simulate --svg` and the reference oracle in tests/oracle/.
`initial_balances` and `channels` complete the picture.

Errors are `SimulationError`s whose message names the event that failed.
"""

from __future__ import annotations

import bisect
import heapq
import json
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from collector import restore as coordinator
from collector.document import NodeReport, build_document
from common.topology import unreachable_pairs
from node import restore as participant
from node.core import (
    Action,
    CoreError,
    InvalidSnapshotId,
    LocalSnapshot,
    LocalSnapshotDone,
    Marker,
    MessageRecorded,
    NodeCore,
    Payload,
    RecordedMessage,
    RecordingAbandoned,
    Send,
    SnapshotRecorded,
    Transfer,
    validate_snapshot_id,
)

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

Channel = tuple[str, str]
CoreFactory = Callable[[str, int, Sequence[str], Sequence[str]], NodeCore]


class SimulationError(Exception):
    """The simulation cannot do what was asked; the message names the event."""


class UnknownNode(SimulationError):
    """An event names a node that is not in the simulation."""


class InvalidTopology(SimulationError):
    """The node/channel set cannot work (bad channel, not strongly connected)."""


class TransferRejected(SimulationError):
    """A transfer has no channel, a bad amount, or exceeds the sender's balance."""


class SnapshotRejected(SimulationError):
    """A snapshot request with a bad id or for an id that has already completed."""


class DeliveryFailed(SimulationError):
    """A node core refused a delivered message (a protocol violation)."""


class RestoreRejected(SimulationError):
    """A restore of a snapshot that is unknown, not complete, or while one runs."""


def tick_timestamp(tick: int) -> str:
    """The ISO 8601 time that simulated `tick` stands for (1 tick = 1 ms)."""
    return (EPOCH + timedelta(milliseconds=tick)).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class InFlight:
    """A payload on a channel, due for delivery at tick `deliver_at`.

    `index` is its position among everything sent on the channel (from 1)."""

    deliver_at: int
    payload: Payload
    index: int = 0
    epoch: int = 0  # the sender's epoch when it sent the payload


# ---------------------------------------------------------------- schedule


@dataclass(frozen=True)
class SendStep:
    """`src`'s core put `payload` on src -> dst at `tick`; due at `deliver_at`."""

    kind: ClassVar[str] = "send"
    step: int
    tick: int
    src: str
    dst: str
    index: int
    payload: Payload
    deliver_at: int


@dataclass(frozen=True)
class DeliverStep:
    """Payload number `index` of src -> dst was handed to `dst`'s core at `tick`."""

    kind: ClassVar[str] = "deliver"
    step: int
    tick: int
    src: str
    dst: str
    index: int
    payload: Payload


@dataclass(frozen=True)
class InitiateStep:
    """The operator asked `node` to start snapshot `snapshot_id` at `tick`."""

    kind: ClassVar[str] = "initiate"
    step: int
    tick: int
    node: str
    snapshot_id: str


@dataclass(frozen=True)
class RestoreStep:
    """`node`'s core was saved and rebuilt from its durable state at `tick`."""

    kind: ClassVar[str] = "restore"
    step: int
    tick: int
    node: str


@dataclass(frozen=True)
class RecordStep:
    """`node` recorded its local state for `snapshot_id` at `tick`."""

    kind: ClassVar[str] = "record"
    step: int
    tick: int
    node: str
    snapshot_id: str


@dataclass(frozen=True)
class FinishStep:
    """`node` finished its local snapshot of `snapshot_id` (last marker in) at `tick`."""

    kind: ClassVar[str] = "finish"
    step: int
    tick: int
    node: str
    snapshot_id: str


@dataclass(frozen=True)
class RestoreSnapshotStep:
    """The cluster was rolled back to `snapshot_id` at `tick`, into `epoch`."""

    kind: ClassVar[str] = "restore_snapshot"
    step: int
    tick: int
    snapshot_id: str
    epoch: int


@dataclass(frozen=True)
class RefuseStep:
    """Payload `index` of src -> dst, sent in older `epoch`, was refused by `dst`."""

    kind: ClassVar[str] = "refuse"
    step: int
    tick: int
    src: str
    dst: str
    index: int
    payload: Payload
    epoch: int


Step = (
    SendStep
    | DeliverStep
    | InitiateStep
    | RestoreStep
    | RecordStep
    | FinishStep
    | RestoreSnapshotStep
    | RefuseStep
)


def payload_to_dict(payload: Payload) -> dict[str, Any]:
    """The JSON form of a payload in a schedule step."""
    if isinstance(payload, Marker):
        return {"type": "marker", "snapshot_id": payload.snapshot_id}
    return {"type": "transfer", "seq": payload.transfer_seq, "amount": payload.amount}


def step_to_dict(step: Step) -> dict[str, Any]:
    """The JSON form of one schedule step: `kind`, `step`, `tick` and its fields.

    Channel ends are named `from` and `to`, the payload `message`."""
    data: dict[str, Any] = {"kind": step.kind, "step": step.step, "tick": step.tick}
    if isinstance(step, SendStep | DeliverStep | RefuseStep):
        data.update({"from": step.src, "to": step.dst, "index": step.index})
        data["message"] = payload_to_dict(step.payload)
        if isinstance(step, SendStep):
            data["deliver_at"] = step.deliver_at
        if isinstance(step, RefuseStep):
            data["epoch"] = step.epoch
    elif isinstance(step, RestoreSnapshotStep):
        data.update({"snapshot_id": step.snapshot_id, "epoch": step.epoch})
    elif isinstance(step, RestoreStep):
        data["node"] = step.node
    else:
        data.update({"node": step.node, "snapshot_id": step.snapshot_id})
    return data


@dataclass(frozen=True)
class Statistics:
    tick: int
    delivered: int
    in_flight_messages: int
    in_flight_money: int
    snapshots_completed: int
    snapshots_pending: int


@dataclass
class _Progress:
    started_tick: int
    initiators: list[str] = field(default_factory=list)
    recorded_tick: dict[str, int] = field(default_factory=dict)
    reports: dict[str, tuple[LocalSnapshot, int]] = field(default_factory=dict)
    document: dict[str, Any] | None = None


class Simulation:
    """Nodes, channels and a clock; events are applied in the order called."""

    def __init__(
        self,
        nodes: Mapping[str, int],
        channels: Iterable[Channel],
        seed: int = 0,
        max_delay: int = 5,
        core_factory: CoreFactory = NodeCore,
    ) -> None:
        if not nodes:
            raise InvalidTopology("a simulation needs at least one node")
        if isinstance(max_delay, bool) or not isinstance(max_delay, int) or max_delay < 1:
            raise SimulationError(f"max_delay must be an integer >= 1, got {max_delay!r}")
        self._ids: tuple[str, ...] = tuple(nodes)
        self._channels: tuple[Channel, ...] = tuple(_checked_channels(self._ids, channels))
        missing = unreachable_pairs(self._ids, self._channels)
        if missing:
            src, dst = missing[0]
            raise InvalidTopology(
                f"markers cannot reach {dst} from {src}: the channels must form a "
                "strongly connected graph"
            )
        for node_id, balance in nodes.items():
            if isinstance(balance, bool) or not isinstance(balance, int) or balance < 0:
                raise SimulationError(
                    f"initial balance of {node_id} must be an integer >= 0, got {balance!r}"
                )
        self.seed = seed
        self.max_delay = max_delay
        self.expected_total = sum(nodes.values())
        self._initial = {node_id: nodes[node_id] for node_id in self._ids}
        self._rng = random.Random(seed)
        self._now = 0
        self._delivered = 0
        self._queues: dict[Channel, deque[InFlight]] = {ch: deque() for ch in self._channels}
        # Which channels have a message due, without scanning every channel:
        # `_due` holds (sorted) the positions in `_channels` of the channels
        # whose first message is due now, `_later` a heap of (due tick,
        # position) of the other non-empty ones. Every non-empty channel is in
        # exactly one of them. The order of `_due` is the order of `_channels`,
        # so the seeded choice among due channels is the one a scan would make.
        self._position = {ch: pos for pos, ch in enumerate(self._channels)}
        self._due: list[int] = []
        self._later: list[tuple[int, int]] = []
        self._sent_on: dict[Channel, int] = dict.fromkeys(self._channels, 0)
        self._in_flight_count = 0
        self._in_flight_money = 0
        self._schedule: list[Step] = []
        self._cores: dict[str, NodeCore] = {
            node_id: core_factory(
                node_id,
                nodes[node_id],
                tuple(src for src, dst in self._channels if dst == node_id),
                tuple(dst for src, dst in self._channels if src == node_id),
            )
            for node_id in self._ids
        }
        # What a node's store would hold besides the core's JSON: the messages
        # each active snapshot recorded (MessageRecorded), node -> id -> sender,
        # and the ids of the snapshots it finished (LocalSnapshotDone), in order.
        self._recorded: dict[str, dict[str, dict[str, list[RecordedMessage]]]] = {
            node_id: {} for node_id in self._ids
        }
        self._finished: dict[str, list[str]] = {node_id: [] for node_id in self._ids}
        self._snapshots: dict[str, _Progress] = {}
        self._completed: list[str] = []
        self._auto_id = 0
        # The restore protocol's state: each node's participant, the coordinator's records.
        self._participants = {node_id: participant.Participant(node_id) for node_id in self._ids}
        self._restores: list[coordinator.RestoreRecord] = []
        self.discarded = 0  # messages of an older epoch refused on arrival

    # ------------------------------------------------------------ queries

    @property
    def now(self) -> int:
        """The current tick."""
        return self._now

    @property
    def node_ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    def channels(self) -> tuple[Channel, ...]:
        return self._channels

    @property
    def initial_balances(self) -> dict[str, int]:
        """Node id -> the balance it started with."""
        return dict(self._initial)

    @property
    def schedule(self) -> tuple[Step, ...]:
        """Every step so far, in order (see "The schedule" in the module doc)."""
        return tuple(self._schedule)

    @property
    def epoch(self) -> int:
        """The cluster epoch: 0, then one more with every restore."""
        return self._restores[-1].epoch if self._restores else 0

    @property
    def restores(self) -> list[dict[str, Any]]:
        """The records of the restores so far, as the collector writes them."""
        return [record.to_dict() for record in self._restores]

    def core(self, node_id: str) -> NodeCore:
        """The live state machine of `node_id` (for inspection in tests)."""
        self._check_node(node_id, "core")
        return self._cores[node_id]

    def in_flight(self, src: str, dst: str) -> tuple[Payload, ...]:
        """Payloads on channel src -> dst, oldest first."""
        queue = self._queues.get((src, dst))
        if queue is None:
            raise SimulationError(f"no channel {src} -> {dst}")
        return tuple(item.payload for item in queue)

    @property
    def quiet(self) -> bool:
        """True when no message is in flight on any channel."""
        return self._in_flight_count == 0

    def total_money(self) -> int:
        """Balances of all nodes plus the amounts of transfers in flight."""
        balances = sum(core.balance for core in self._cores.values())
        return balances + self._money_in_flight()

    @property
    def completed_snapshots(self) -> list[dict[str, Any]]:
        """Global snapshot documents, in the order the snapshots completed."""
        documents = []
        for snapshot_id in self._completed:
            document = self._snapshots[snapshot_id].document
            assert document is not None
            documents.append(document)
        return documents

    @property
    def pending_snapshots(self) -> tuple[str, ...]:
        """Ids of started snapshots that some node has not finished yet."""
        return tuple(sid for sid, p in self._snapshots.items() if p.document is None)

    def document(self, snapshot_id: str) -> dict[str, Any]:
        """The document of a snapshot: final if complete, else aborted as of now."""
        progress = self._snapshots.get(snapshot_id)
        if progress is None:
            raise SimulationError(f"no snapshot {snapshot_id!r} was started")
        if progress.document is not None:
            return progress.document
        return self._build_document(snapshot_id, progress, self._now)

    def statistics(self) -> Statistics:
        return Statistics(
            tick=self._now,
            delivered=self._delivered,
            in_flight_messages=self._in_flight_count,
            in_flight_money=self._money_in_flight(),
            snapshots_completed=len(self._completed),
            snapshots_pending=len(self.pending_snapshots),
        )

    # ------------------------------------------------------------- events

    def transfer(self, src: str, dst: str, amount: int) -> None:
        """Node `src` sends `amount` to `dst` now."""
        event = f"transfer {src} -> {dst} of {amount} at tick {self._now}"
        self._check_node(src, event)
        self._check_node(dst, event)
        if (src, dst) not in self._queues:
            raise TransferRejected(f"{event}: there is no channel {src} -> {dst}")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise TransferRejected(f"{event}: the amount must be a positive integer")
        try:
            actions = self._cores[src].send_transfer(dst, amount)
        except (CoreError, ValueError) as error:
            raise TransferRejected(f"{event}: {error}") from error
        self._perform(src, actions)

    def snapshot(self, node: str, snapshot_id: str | None = None) -> str:
        """Ask `node` to initiate snapshot `snapshot_id` (a fresh id if None).

        Several nodes may initiate the same id while it runs; a node that has
        already recorded it (from a marker) does nothing. Returns the id.
        """
        if snapshot_id is None:
            snapshot_id = self._fresh_id()
        event = f"snapshot {snapshot_id} at {node} at tick {self._now}"
        self._check_node(node, event)
        try:
            validate_snapshot_id(snapshot_id)
        except InvalidSnapshotId as error:
            raise SnapshotRejected(f"{event}: {error}") from error
        progress = self._snapshots.get(snapshot_id)
        if progress is not None and progress.document is not None:
            raise SnapshotRejected(
                f"{event}: snapshot {snapshot_id} already completed at tick "
                f"{max(tick for _, tick in progress.reports.values())}; use a new id"
            )
        if progress is None:
            progress = self._snapshots[snapshot_id] = _Progress(started_tick=self._now)
        if node not in progress.initiators:
            progress.initiators.append(node)
        self._schedule.append(InitiateStep(self._next_step, self._now, node, snapshot_id))
        self._perform(node, self._cores[node].initiate_snapshot(snapshot_id))
        return snapshot_id

    def restore(self, node: str) -> None:
        """Save `node`'s core as JSON and replace it by one rebuilt from that.

        Models a node process restarting from its durable state, as the node
        stores it: the core's JSON plus the messages its active snapshots
        recorded and the ids it finished, collected from its MessageRecorded
        and LocalSnapshotDone actions (not read from the old core). Nothing
        in flight is lost (the transport resends unacknowledged messages).
        """
        event = f"restore {node} at tick {self._now}"
        self._check_node(node, event)
        core = self._cores[node]
        saved = json.loads(json.dumps(core.to_dict()))
        try:
            self._cores[node] = type(core).from_dict(
                saved, self._recorded[node], self._finished[node]
            )
        except CoreError as error:
            raise SimulationError(f"{event}: {error}") from error
        self._schedule.append(RestoreStep(self._next_step, self._now, node))

    def restore_snapshot(self, snapshot_id: str) -> int:
        """Roll the whole cluster back to complete snapshot `snapshot_id`; returns the new epoch.

        Afterwards every balance is the recorded one and the transfers the
        snapshot recorded in flight are on their channels again (in the new
        epoch); what was in flight before is refused on arrival. Refused
        (RestoreRejected, nothing changed) for an unknown or unfinished
        snapshot, or while another snapshot is still running.
        """
        event = f"restore_snapshot {snapshot_id} at tick {self._now}"
        progress = self._snapshots.get(snapshot_id)
        if progress is None or progress.document is None:
            why = "was never started" if progress is None else "has not completed"
            raise RestoreRejected(f"{event}: snapshot {snapshot_id} {why}")
        if self.pending_snapshots:
            raise RestoreRejected(
                f"{event}: snapshot {', '.join(self.pending_snapshots)} is still running; "
                "a restore waits until no snapshot runs"
            )
        number = len(self._restores) + 1
        epoch = coordinator.choose_epoch(self.epoch, (p.epoch for p in self._participants.values()))
        try:
            targets = coordinator.plan_restore(
                progress.document, self._ids, self._channels, self.expected_total, number, epoch
            )
        except coordinator.RestoreRefused as error:
            raise RestoreRejected(f"{event}: {error}") from error
        now = tick_timestamp(self._now)
        record = coordinator.begin(number, snapshot_id, epoch, self.epoch, targets, now)
        for node_id, message in coordinator.messages(record):
            assert isinstance(message, coordinator.Prepare)
            state, vote = participant.prepare(
                self._participants[node_id],
                message.target,
                self._cores[node_id].outgoing,
                workload_running=True,
            )
            self._participants[node_id] = state
            record = coordinator.on_vote(record, node_id, vote.ok, vote.reason, now)
        if record.phase is not coordinator.RestorePhase.COMMITTING:
            raise RestoreRejected(f"{event}: {record.reason}")
        self._schedule.append(RestoreSnapshotStep(self._next_step, self._now, snapshot_id, epoch))
        # Everything on the wire now belongs to the old epoch: not money any more.
        self._in_flight_money = 0
        for node_id, message in coordinator.messages(record):
            assert isinstance(message, coordinator.Commit)
            state, outcome = participant.commit(
                self._participants[node_id], message.restore, message.epoch
            )
            if not isinstance(outcome, participant.Install):
                raise SimulationError(f"{event}: {node_id} did not install: {outcome}")
            core = self._cores[node_id]
            try:
                actions = core.install_restore(
                    outcome.target.epoch, outcome.target.balance, outcome.target.resend
                )
            except CoreError as error:
                raise SimulationError(f"{event}: {node_id}: {error}") from error
            self._participants[node_id] = state
            self._perform(node_id, actions)
            record = coordinator.on_ack(record, node_id, now)
        assert record.phase is coordinator.RestorePhase.COMPLETE, record
        self._restores.append(record)
        return epoch

    def tick(self, n: int = 1) -> None:
        """Advance the clock by `n` ticks, delivering every message that falls due."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SimulationError(f"tick count must be an integer >= 0, got {n!r}")
        for _ in range(n):
            self._now += 1
            self._deliver_due()

    def run_until_quiet(self, max_ticks: int = 10_000_000) -> int:
        """Deliver everything in flight (and what that causes); returns ticks used.

        Jumps straight to the next tick at which something is due.
        """
        start = self._now
        while not self.quiet:
            next_due = self._now if self._due else self._later[0][0]
            if next_due - start > max_ticks:
                raise SimulationError(f"not quiet after {max_ticks} ticks")
            self._now = max(self._now + 1, next_due)
            self._deliver_due()
        return self._now - start

    # ----------------------------------------------------------- internals

    def _check_node(self, node_id: str, event: str) -> None:
        if node_id not in self._cores:
            raise UnknownNode(f"{event}: unknown node {node_id!r} (known: {', '.join(self._ids)})")

    def _fresh_id(self) -> str:
        while True:
            self._auto_id += 1
            candidate = f"snap-{self._auto_id}"
            if candidate not in self._snapshots:
                return candidate

    def _money_in_flight(self) -> int:
        return self._in_flight_money

    @property
    def _next_step(self) -> int:
        """The number of the next schedule step."""
        return len(self._schedule)

    def _deliver_due(self) -> None:
        due, later = self._due, self._later
        while True:
            while later and later[0][0] <= self._now:
                bisect.insort(due, heapq.heappop(later)[1])
            if not due:
                return
            choice = self._rng.randrange(len(due)) if len(due) > 1 else 0
            position = due[choice]
            channel = self._channels[position]
            src, dst = channel
            queue = self._queues[channel]
            item = queue.popleft()
            if not queue or queue[0].deliver_at > self._now:
                del due[choice]
                if queue:
                    heapq.heappush(later, (queue[0].deliver_at, position))
            self._in_flight_count -= 1
            admission = participant.admit(self._participants[dst], item.epoch)
            if admission is participant.Admission.OLD_EPOCH:
                self.discarded += 1
                self._schedule.append(
                    RefuseStep(
                        self._next_step, self._now, src, dst, item.index, item.payload, item.epoch
                    )
                )
                continue
            if admission is not participant.Admission.APPLY:
                raise DeliveryFailed(
                    f"tick {self._now}: {dst} cannot take {_describe(item.payload)} of epoch "
                    f"{item.epoch} on {src} -> {dst}: {admission.value}"
                )
            if isinstance(item.payload, Transfer):
                self._in_flight_money -= item.payload.amount
            self._delivered += 1
            self._schedule.append(
                DeliverStep(self._next_step, self._now, src, dst, item.index, item.payload)
            )
            try:
                actions = self._cores[dst].receive(src, item.payload)
            except CoreError as error:
                raise DeliveryFailed(
                    f"tick {self._now}: {dst} refused {_describe(item.payload)} "
                    f"on {src} -> {dst}: {error}"
                ) from error
            self._perform(dst, actions)

    def _perform(self, node_id: str, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                queue = self._queues.get((node_id, action.to))
                if queue is None:
                    raise DeliveryFailed(
                        f"tick {self._now}: {node_id} sent {_describe(action.payload)} "
                        f"to {action.to}, but there is no channel {node_id} -> {action.to}"
                    )
                channel = (node_id, action.to)
                deliver_at = self._now + self._rng.randint(1, self.max_delay)
                if queue:
                    deliver_at = max(deliver_at, queue[-1].deliver_at)
                else:  # due later than now: it joins the waiting heap
                    heapq.heappush(self._later, (deliver_at, self._position[channel]))
                self._sent_on[channel] += 1
                index = self._sent_on[channel]
                queue.append(
                    InFlight(deliver_at, action.payload, index, self._cores[node_id].epoch)
                )
                self._in_flight_count += 1
                if isinstance(action.payload, Transfer):
                    self._in_flight_money += action.payload.amount
                self._schedule.append(
                    SendStep(
                        step=self._next_step,
                        tick=self._now,
                        src=node_id,
                        dst=action.to,
                        index=index,
                        payload=action.payload,
                        deliver_at=deliver_at,
                    )
                )
            elif isinstance(action, SnapshotRecorded):
                progress = self._progress(action.snapshot_id)
                progress.recorded_tick.setdefault(node_id, self._now)
                self._schedule.append(
                    RecordStep(self._next_step, self._now, node_id, action.snapshot_id)
                )
            elif isinstance(action, MessageRecorded):
                by_sender = self._recorded[node_id].setdefault(action.snapshot_id, {})
                by_sender.setdefault(action.sender, []).append(action.message)
            elif isinstance(action, RecordingAbandoned):
                self._recorded[node_id].pop(action.snapshot_id, None)
            elif isinstance(action, LocalSnapshotDone):
                snapshot_id = action.snapshot.snapshot_id
                self._schedule.append(FinishStep(self._next_step, self._now, node_id, snapshot_id))
                self._recorded[node_id].pop(snapshot_id, None)
                self._finished[node_id].append(snapshot_id)
                progress = self._progress(snapshot_id)
                progress.reports[node_id] = (action.snapshot, self._now)
                if progress.document is None and len(progress.reports) == len(self._ids):
                    progress.document = self._build_document(snapshot_id, progress, self._now)
                    self._completed.append(snapshot_id)

    def _progress(self, snapshot_id: str) -> _Progress:
        progress = self._snapshots.get(snapshot_id)
        if progress is None:  # only a broken core invents snapshot ids
            progress = self._snapshots[snapshot_id] = _Progress(started_tick=self._now)
        return progress

    def _build_document(
        self, snapshot_id: str, progress: _Progress, completed_tick: int
    ) -> dict[str, Any]:
        reports = {
            node_id: NodeReport(
                snapshot=snapshot,
                recorded_at=tick_timestamp(progress.recorded_tick.get(node_id, done_tick)),
                completed_at=tick_timestamp(done_tick),
            )
            for node_id, (snapshot, done_tick) in progress.reports.items()
        }
        # Nodes still recording: what their progress reports would say.
        for node_id in self._ids:
            so_far = None if node_id in reports else self._cores[node_id].progress(snapshot_id)
            if so_far is not None:
                reports[node_id] = NodeReport(
                    snapshot=so_far[0],
                    recorded_at=tick_timestamp(progress.recorded_tick.get(node_id, 0)),
                    complete=False,
                    open_channels=so_far[1],
                )
        return build_document(
            snapshot_id=snapshot_id,
            initiators=progress.initiators,
            started_at=tick_timestamp(progress.started_tick),
            completed_at=tick_timestamp(completed_tick),
            expected_total=self.expected_total,
            node_ids=self._ids,
            channels=self._channels,
            reports=reports,
        )


def _checked_channels(ids: Sequence[str], channels: Iterable[Channel]) -> list[Channel]:
    known = set(ids)
    result: list[Channel] = []
    for src, dst in channels:
        for end in (src, dst):
            if end not in known:
                raise InvalidTopology(
                    f"channel {src} -> {dst}: unknown node {end!r} (known: {', '.join(ids)})"
                )
        if src == dst:
            raise InvalidTopology(f"channel {src} -> {dst}: a channel from a node to itself")
        if (src, dst) in result:
            raise InvalidTopology(f"channel {src} -> {dst}: duplicate channel")
        result.append((src, dst))
    return result


def _describe(payload: Payload) -> str:
    if isinstance(payload, Marker):
        return f"marker {payload.snapshot_id}"
    return f"transfer #{payload.transfer_seq} of {payload.amount}"
