"""A deliberately naive Chandy-Lamport, written from the paper, for checking the real one.

Chandy and Lamport, "Distributed Snapshots: Determining Global States of
Distributed Systems" (ACM TOCS 3(1), 1985), section 3.2:

    Marker-Sending Rule for a process p. For each channel c, incident on,
    and directed away from p: p sends one marker along c after p records
    its state and before p sends further messages along c.

    Marker-Receiving Rule for a process q. On receiving a marker along a
    channel c: if q has not recorded its state then q records its state;
    q records the state of c as the empty sequence. Else q records the state
    of c as the sequence of messages received along c after q's state was
    recorded and before q received the marker along c.

This module shares no code with node/core.py and imports nothing from the
project: its input is the JSON form of a simulator schedule (a list of
dicts, see "The schedule" in simulator/engine.py), its output plain
dataclasses. It is written to be obviously right, not fast or small in
memory, and differently from the core on purpose:

* every process keeps the *whole* history of what it received on each
  channel; a channel's state is cut out of that history afterwards
  (`history[start:end]`), where the core appends while a channel is open;
* a process's balance is not kept but recomputed from the start balance and
  the histories of what it sent and received;
* each snapshot id is an independent run of the paper's algorithm: the
  paper takes one snapshot, and several ids running at once never interact;
* the FIFO channels are the oracle's own queues: a delivery step names only
  the channel, and the oracle delivers the head of *its* queue for it. The
  content of each delivery (and of each send the core made on its own, the
  markers) is compared with what the paper says it must be.

The application's own actions are inputs taken from the schedule: a
transfer `send` step is the application moving money; an `initiate` step is
an operator asking a process to record. A `restore` step (the node process
restarted from its durable state) changes nothing in the paper's model: a
correct restore is invisible, so anything it changed shows up as a
difference. `record` and `finish` steps are the core's claims; the oracle
checks each against its own.

A `restore_snapshot` step (the whole cluster rolled back to a complete
snapshot, into a new epoch; beyond the paper, see node/core.py "Epochs and
restores") is modelled just as plainly: every process takes the balance the
oracle recorded for that snapshot, starts counting again from 0, and
re-sends, as transfers 1..k of the new epoch, what the oracle recorded in
flight on each of its outgoing channels. Everything still on a channel is of
the old epoch and must be refused on arrival (`refuse` steps), never
delivered.

Whatever the schedule shows that the paper does not allow is a
`divergence`: a string naming the step. The oracle goes on after one when it
can (with its own view), so the first divergence is the informative one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Channel = tuple[str, str]
# A message as the schedule's JSON spells it:
#   {"type": "transfer", "seq": k, "amount": a} | {"type": "marker", "snapshot_id": s}
Message = dict[str, Any]


@dataclass
class RecordedState:
    """What one process recorded for one snapshot, by the paper."""

    balance: int
    sent: dict[str, int]
    received: dict[str, int]
    initiated: bool
    recorded_tick: int
    recorded_step: int
    epoch: int
    # incoming channel -> where its recording starts in the process's history
    start: dict[str, int]
    # incoming channel -> the recorded channel state, once its marker arrived
    channels: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    finished_tick: int | None = None


@dataclass
class OracleSnapshot:
    """One snapshot id as the paper records it over the replayed schedule."""

    snapshot_id: str
    initiators: set[str]
    started_tick: int
    states: dict[str, RecordedState]  # process -> what it recorded (absent: not yet)
    complete: bool  # every process recorded and received every marker

    @property
    def epoch(self) -> int:
        return max((s.epoch for s in self.states.values()), default=0)

    @property
    def completed_tick(self) -> int | None:
        if not self.complete:
            return None
        return max(s.finished_tick for s in self.states.values() if s.finished_tick is not None)


@dataclass
class OracleRun:
    """The result of replaying one schedule."""

    snapshots: dict[str, OracleSnapshot]
    balances: dict[str, int]  # live balance of every process at the end
    sent: dict[Channel, int]  # transfers sent per channel at the end
    received: dict[Channel, int]  # transfers received per channel at the end
    in_flight: dict[Channel, list[Message]]  # still on the channels at the end
    divergences: list[str]


class _Process:
    def __init__(self, name: str, balance: int, incoming: list[str], outgoing: list[str]):
        self.name = name
        self.start_balance = balance
        self.incoming = incoming
        self.outgoing = outgoing
        # every transfer ever sent / received on each channel, as (seq, amount)
        self.sent_log: dict[str, list[tuple[int, int]]] = {p: [] for p in outgoing}
        self.received_log: dict[str, list[tuple[int, int]]] = {p: [] for p in incoming}

    def balance(self) -> int:
        came_in = sum(amount for log in self.received_log.values() for _, amount in log)
        went_out = sum(amount for log in self.sent_log.values() for _, amount in log)
        return self.start_balance + came_in - went_out


class ReferenceOracle:
    """Replays a schedule through the paper's rules; see the module docstring."""

    def __init__(self, balances: Mapping[str, int], channels: Iterable[Sequence[str]]):
        self.channels: list[Channel] = [(str(c[0]), str(c[1])) for c in channels]
        self.processes = {
            name: _Process(
                name,
                int(balance),
                [src for src, dst in self.channels if dst == name],
                [dst for src, dst in self.channels if src == name],
            )
            for name, balance in balances.items()
        }
        # the oracle's own channels: what the paper says is on each, in order,
        # with the epoch it was sent in
        self.queues: dict[Channel, deque[tuple[int, Message]]] = {
            c: deque() for c in self.channels
        }
        self.epoch = 0
        # transfers a restore re-sends: (index, message) the core must send next, per channel
        self.resends: dict[Channel, deque[tuple[int, Message]]] = {}
        # everything the paper says was put on each channel, in order (index = position + 1)
        self.sent_on: dict[Channel, list[Message]] = {c: [] for c in self.channels}
        self.snapshots: dict[str, dict[str, RecordedState]] = {}
        self.initiators: dict[str, set[str]] = {}
        self.started: dict[str, int] = {}
        self.claimed_records: set[tuple[str, str]] = set()
        self.claimed_finishes: set[tuple[str, str]] = set()
        self.divergences: list[str] = []
        self.where = ""

    # ------------------------------------------------------------ the rules

    def _put(self, channel: Channel, message: Message) -> None:
        self.queues[channel].append((self.epoch, message))
        self.sent_on[channel].append(message)

    def _record(self, process: _Process, sid: str, initiated: bool, tick: int, step: int) -> None:
        """p records its state, then sends a marker on every outgoing channel (before
        anything else is sent on it: nothing else happens until this returns)."""
        self.snapshots.setdefault(sid, {})[process.name] = RecordedState(
            balance=process.balance(),
            sent={peer: len(log) for peer, log in process.sent_log.items()},
            received={peer: len(log) for peer, log in process.received_log.items()},
            initiated=initiated,
            recorded_tick=tick,
            recorded_step=step,
            epoch=self.epoch,
            start={peer: len(log) for peer, log in process.received_log.items()},
        )
        for peer in process.outgoing:
            self._put((process.name, peer), {"type": "marker", "snapshot_id": sid})

    def _finish_if_done(self, process: _Process, sid: str, tick: int) -> None:
        state = self.snapshots[sid][process.name]
        if state.finished_tick is None and all(p in state.channels for p in process.incoming):
            state.finished_tick = tick

    def _initiate(self, name: str, sid: str, tick: int, step: int) -> None:
        self.initiators.setdefault(sid, set()).add(name)
        self.started.setdefault(sid, tick)
        process = self.processes[name]
        if name not in self.snapshots.get(sid, {}):
            self._record(process, sid, initiated=True, tick=tick, step=step)
            self._finish_if_done(process, sid, tick)

    def _receive_marker(self, q: _Process, c: str, sid: str, tick: int, step: int) -> None:
        states = self.snapshots.get(sid, {})
        if q.name not in states:
            self._record(q, sid, initiated=False, tick=tick, step=step)
            self.snapshots[sid][q.name].channels[c] = []  # the state of c: empty
        else:
            state = states[q.name]
            if c in state.channels:
                self._diverge(f"a second marker {sid} on {c} -> {q.name}")
                return
            # received along c after q's state was recorded, before this marker
            state.channels[c] = list(q.received_log[c][state.start[c] :])
        self._finish_if_done(q, sid, tick)

    # ------------------------------------------------------------ the replay

    def _diverge(self, problem: str) -> None:
        self.divergences.append(f"{self.where}: {problem}")

    def replay(self, schedule: Iterable[Mapping[str, Any]]) -> OracleRun:
        for raw in schedule:
            step = dict(raw)
            kind, tick, number = step["kind"], int(step["tick"]), int(step["step"])
            self.where = f"step {number} (tick {tick}, {kind})"
            if kind != "send":
                self._check_resent()
            if kind == "send":
                self._on_send(step)
            elif kind == "deliver":
                self._on_deliver(step, tick, number)
            elif kind == "initiate":
                self._initiate(step["node"], step["snapshot_id"], tick, number)
            elif kind == "restore":
                pass  # a restart from durable state is invisible in the paper's model
            elif kind == "record":
                self._on_claim(step, "record", self.claimed_records)
            elif kind == "finish":
                self._on_claim(step, "finish", self.claimed_finishes)
            elif kind == "restore_snapshot":
                self._restore_snapshot(step["snapshot_id"], int(step["epoch"]))
            elif kind == "refuse":
                self._on_refuse(step)
            else:
                self._diverge(f"unknown step kind {kind!r}")
        self.where = "end of the run"
        self._check_resent()
        for sid, states in self.snapshots.items():
            for name, state in states.items():
                if (sid, name) not in self.claimed_records:
                    self._diverge(f"{name} recorded {sid} by the paper, but the core never did")
                if state.finished_tick is not None and (sid, name) not in self.claimed_finishes:
                    self._diverge(f"{name} finished {sid} by the paper, but the core never did")
        return self._result()

    def _on_send(self, step: Mapping[str, Any]) -> None:
        channel = (step["from"], step["to"])
        message, index = dict(step["message"]), int(step["index"])
        if channel not in self.queues:
            self._diverge(f"a send on {channel[0]} -> {channel[1]}, which is not a channel")
            return
        log = self.sent_on[channel]
        resend = self.resends.get(channel)
        if resend:  # a transfer a restore re-sends: the core's doing, like a marker
            expected_index, expected = resend.popleft()
            if (index, message) != (expected_index, expected):
                self._diverge(
                    f"{_name(channel)}: the core sent {_show(message)} as message #{index}; "
                    f"by the restore it re-sends {_show(expected)} as #{expected_index}"
                )
            return
        if message["type"] == "transfer":
            # the application moves money: an input. By the paper it goes on the
            # channel after everything the process sent before (markers included).
            process = self.processes[channel[0]]
            amount = int(message["amount"])
            if amount <= 0 or amount > process.balance():
                self._diverge(
                    f"{channel[0]} sent {amount} holding {process.balance()} by the paper"
                )
            sent = process.sent_log[channel[1]]
            sent.append((len(sent) + 1, amount))
            expected = {"type": "transfer", "seq": len(sent), "amount": amount}
            self._put(channel, expected)
            if message != expected or index != len(log):
                self._diverge(
                    f"{_name(channel)}: the core sent {_show(message)} as message #{index}; "
                    f"by the paper message #{len(log)} is {_show(expected)}"
                )
            return
        # a marker the core sent on its own: the paper must have sent the same, there
        if index > len(log) or log[index - 1] != message:
            paper = _show(log[index - 1]) if index <= len(log) else "not sent yet"
            self._diverge(
                f"{_name(channel)}: the core sent {_show(message)} as message #{index}; "
                f"by the paper message #{index} is {paper}"
            )

    def _on_deliver(self, step: Mapping[str, Any], tick: int, number: int) -> None:
        channel = (step["from"], step["to"])
        if channel not in self.queues:
            self._diverge(f"a delivery on {channel[0]} -> {channel[1]}, which is not a channel")
            return
        queue = self.queues[channel]
        if not queue:
            self._diverge(f"{_name(channel)} delivered, but by the paper nothing is on it")
            return
        epoch, message = queue.popleft()
        if epoch < self.epoch:
            self._diverge(
                f"{_name(channel)} delivered {_show(message)} of epoch {epoch} in epoch "
                f"{self.epoch}: it must be refused"
            )
            return
        if dict(step["message"]) != message:
            self._diverge(
                f"{_name(channel)} delivered {_show(step['message'])}; "
                f"by the paper the next message on it is {_show(message)}"
            )
        src, dst = channel
        q = self.processes[dst]
        if message["type"] == "transfer":
            q.received_log[src].append((int(message["seq"]), int(message["amount"])))
        else:
            self._receive_marker(q, src, message["snapshot_id"], tick, number)

    def _on_refuse(self, step: Mapping[str, Any]) -> None:
        channel = (step["from"], step["to"])
        queue = self.queues.get(channel)
        if not queue:
            self._diverge(f"{_name(channel)} refused a message, but by the paper none is on it")
            return
        epoch, message = queue.popleft()
        if epoch >= self.epoch:
            self._diverge(f"{_name(channel)} refused {_show(message)} of the current epoch")
        elif dict(step["message"]) != message or int(step["epoch"]) != epoch:
            self._diverge(
                f"{_name(channel)} refused {_show(step['message'])} of epoch {step['epoch']}; "
                f"by the paper the next message on it is {_show(message)} of epoch {epoch}"
            )

    def _restore_snapshot(self, sid: str, epoch: int) -> None:
        """Roll every process back to what it recorded for `sid`, into `epoch`."""
        states = self.snapshots.get(sid, {})
        if len(states) != len(self.processes) or any(
            s.finished_tick is None for s in states.values()
        ):
            self._diverge(f"restored snapshot {sid}, which by the paper is not complete")
            return
        if epoch <= self.epoch:
            self._diverge(f"restored into epoch {epoch}, not newer than {self.epoch}")
        self.epoch = epoch
        for name, process in self.processes.items():
            resent = {peer: [a for _, a in self.snapshots[sid][peer].channels[name]]
                      for peer in process.outgoing}
            # The resent transfers count as sent in the new epoch; the recorded
            # balance already excludes them (they left before the cut).
            process.start_balance = states[name].balance + sum(map(sum, resent.values()))
            process.sent_log = {peer: [] for peer in process.outgoing}
            process.received_log = {peer: [] for peer in process.incoming}
            for peer, amounts in resent.items():
                channel = (name, peer)
                for amount in amounts:
                    sent = process.sent_log[peer]
                    sent.append((len(sent) + 1, amount))
                    message = {"type": "transfer", "seq": len(sent), "amount": amount}
                    self._put(channel, message)
                    self.resends.setdefault(channel, deque()).append(
                        (len(self.sent_on[channel]), message)
                    )

    def _check_resent(self) -> None:
        for channel, missing in self.resends.items():
            if missing:
                self._diverge(
                    f"{_name(channel)}: the core did not re-send "
                    + ", ".join(f"{_show(m)} (#{i})" for i, m in missing)
                )
                missing.clear()

    def _on_claim(self, step: Mapping[str, Any], what: str, claimed: set[tuple[str, str]]) -> None:
        sid, name = step["snapshot_id"], step["node"]
        state = self.snapshots.get(sid, {}).get(name)
        done = state is not None and (what == "record" or state.finished_tick is not None)
        if (sid, name) in claimed:
            self._diverge(f"the core claims a second {what} of {sid} at {name}")
        elif not done:
            self._diverge(f"the core claims {name} did {what} {sid}; by the paper it has not")
        claimed.add((sid, name))

    def _result(self) -> OracleRun:
        snapshots = {}
        for sid, states in self.snapshots.items():
            complete = len(states) == len(self.processes) and all(
                s.finished_tick is not None for s in states.values()
            )
            snapshots[sid] = OracleSnapshot(
                snapshot_id=sid,
                initiators=set(self.initiators.get(sid, set())),
                started_tick=self.started.get(sid, 0),
                states=states,
                complete=complete,
            )
        return OracleRun(
            snapshots=snapshots,
            balances={name: p.balance() for name, p in self.processes.items()},
            sent={(n, peer): len(log) for n, p in self.processes.items()
                  for peer, log in p.sent_log.items()},
            received={(peer, n): len(log) for n, p in self.processes.items()
                      for peer, log in p.received_log.items()},
            in_flight={c: [m for _, m in q] for c, q in self.queues.items() if q},
            divergences=list(self.divergences),
        )


def replay(
    balances: Mapping[str, int],
    channels: Iterable[Sequence[str]],
    schedule: Iterable[Mapping[str, Any]],
) -> OracleRun:
    """Replay `schedule` (JSON steps) over processes with `balances` and `channels`."""
    return ReferenceOracle(balances, channels).replay(schedule)


def _name(channel: Channel) -> str:
    return f"{channel[0]} -> {channel[1]}"


def _show(message: Mapping[str, Any]) -> str:
    if message.get("type") == "marker":
        return f"marker {message.get('snapshot_id')}"
    return f"transfer #{message.get('seq')} of {message.get('amount')}"
