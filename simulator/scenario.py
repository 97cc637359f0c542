"""Simulation scenarios: a YAML file of nodes, channels and timed events.

    seed: 7                  # drives every delay and interleaving (default 0)
    max_delay: 5             # a message takes 1..max_delay ticks (default 5)
    nodes: {n1: 100, n2: 0}  # id -> initial balance; or the cluster YAML list
                             #   form `- {id: n1, balance: 100}` (address ignored)
    topology: ring           # complete | ring | star | random, or instead:
    channels: [[n1, n2], [n2, n1]]
    events:                  # applied in order, all at the current tick
      - transfer: {from: n1, to: n2, amount: 30}
      - snapshot: {node: n1, id: s1}         # id optional
      - snapshot: {nodes: [n1, n3], id: s2}  # several initiators, one id
      - tick: 3                              # advance the clock 3 ticks
      - restore: n2          # n2's core is saved to JSON and rebuilt from it
      - restore_snapshot: {id: s1}  # roll the cluster back to complete snapshot s1

After the last event the simulation runs until no message is in flight.
Every problem is reported as one `ScenarioError` naming the file, the field
(`events[3].transfer.amount`) and what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, TypeAdapter, ValidationError

from common.config import checked_node_id, read_yaml, resolve_channels
from common.validation import field_and_problem
from node.core import InvalidSnapshotId, NodeCore, validate_snapshot_id
from simulator.engine import CoreFactory, Simulation, SimulationError

DEFAULT_MAX_DELAY = 5
EVENT_KINDS = ("transfer", "snapshot", "tick", "restore", "restore_snapshot")


class ScenarioError(Exception):
    """A scenario that cannot be loaded or run; the message says where and why."""


@dataclass(frozen=True)
class TransferEvent:
    src: str
    dst: str
    amount: int


@dataclass(frozen=True)
class SnapshotEvent:
    nodes: tuple[str, ...]
    snapshot_id: str | None = None


@dataclass(frozen=True)
class TickEvent:
    ticks: int


@dataclass(frozen=True)
class RestoreEvent:
    node: str


@dataclass(frozen=True)
class RestoreSnapshotEvent:
    snapshot_id: str


Event = TransferEvent | SnapshotEvent | TickEvent | RestoreEvent | RestoreSnapshotEvent


@dataclass(frozen=True)
class Scenario:
    nodes: dict[str, int]
    channels: tuple[tuple[str, str], ...]
    events: tuple[Event, ...] = ()
    seed: int = 0
    max_delay: int = DEFAULT_MAX_DELAY
    source: str = "<memory>"
    description: str = ""

    def simulation(
        self, seed: int | None = None, core_factory: CoreFactory = NodeCore
    ) -> Simulation:
        """A fresh simulation of this scenario's nodes and channels (no events yet)."""
        return Simulation(
            self.nodes,
            self.channels,
            seed=self.seed if seed is None else seed,
            max_delay=self.max_delay,
            core_factory=core_factory,
        )

    def run(self, seed: int | None = None, core_factory: CoreFactory = NodeCore) -> Simulation:
        """Apply every event in order, then run until quiet."""
        sim = self.simulation(seed, core_factory)
        for index, event in enumerate(self.events):
            try:
                apply_event(sim, event)
            except SimulationError as error:
                # Engine errors name transfers, snapshots and restores already;
                # a delivery failing during a tick needs the tick event named.
                context = f" ({describe(event)})" if isinstance(event, TickEvent) else ""
                raise ScenarioError(f"{self.source}: events[{index}]{context}: {error}") from error
        try:
            sim.run_until_quiet()
        except SimulationError as error:
            raise ScenarioError(f"{self.source}: after the last event: {error}") from error
        return sim

    def to_dict(self) -> dict[str, Any]:
        """The YAML-ready form; `parse_scenario(s.to_dict(), ...)` gives `s` back."""
        data: dict[str, Any] = {}
        if self.description:
            data["description"] = self.description
        data.update(
            seed=self.seed,
            max_delay=self.max_delay,
            nodes=dict(self.nodes),
            channels=[[src, dst] for src, dst in self.channels],
            events=[event_to_dict(event) for event in self.events],
        )
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def apply_event(sim: Simulation, event: Event) -> None:
    """Perform one scenario event on `sim` (raises SimulationError on failure)."""
    if isinstance(event, TransferEvent):
        sim.transfer(event.src, event.dst, event.amount)
    elif isinstance(event, SnapshotEvent):
        snapshot_id = event.snapshot_id
        for node in event.nodes:
            snapshot_id = sim.snapshot(node, snapshot_id)
    elif isinstance(event, TickEvent):
        sim.tick(event.ticks)
    elif isinstance(event, RestoreSnapshotEvent):
        sim.restore_snapshot(event.snapshot_id)
    else:
        sim.restore(event.node)


def describe(event: Event) -> str:
    if isinstance(event, TransferEvent):
        return f"transfer {event.src} -> {event.dst} amount {event.amount}"
    if isinstance(event, SnapshotEvent):
        name = event.snapshot_id or "(new id)"
        return f"snapshot {name} at {', '.join(event.nodes)}"
    if isinstance(event, TickEvent):
        return f"tick {event.ticks}"
    if isinstance(event, RestoreSnapshotEvent):
        return f"restore_snapshot {event.snapshot_id}"
    return f"restore {event.node}"


def event_to_dict(event: Event) -> dict[str, Any]:
    if isinstance(event, TransferEvent):
        return {"transfer": {"from": event.src, "to": event.dst, "amount": event.amount}}
    if isinstance(event, SnapshotEvent):
        body: dict[str, Any] = (
            {"node": event.nodes[0]} if len(event.nodes) == 1 else {"nodes": list(event.nodes)}
        )
        if event.snapshot_id is not None:
            body["id"] = event.snapshot_id
        return {"snapshot": body}
    if isinstance(event, TickEvent):
        return {"tick": event.ticks}
    if isinstance(event, RestoreSnapshotEvent):
        return {"restore_snapshot": {"id": event.snapshot_id}}
    return {"restore": event.node}


# ------------------------------------------------------------------ loading


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and validate a scenario YAML file."""
    return parse_scenario(read_yaml(path, "scenario file", ScenarioError), str(path))


# ------------------------------------------------------------- the schema
#
# The top level and the list form of `nodes` are pydantic models (their
# validators raise ValueError in our words; common/validation.py makes the
# first error one line). `nodes` in its mapping form and the events stay
# plain code: an event is checked against the nodes and channels above it.


def _description(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _seed(value: Any) -> int:
    if not _is_int(value):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def _max_delay(value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"expected an integer >= 1 (ticks), got {value!r}")
    return int(value)


def _events(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("expected a list of events")
    return value


def _balance(value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"expected a non-negative integer balance, got {value!r}")
    return int(value)


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ScenarioDoc(_Doc):
    description: Annotated[str, BeforeValidator(_description)] = ""
    seed: Annotated[int, BeforeValidator(_seed)] = 0
    max_delay: Annotated[int, BeforeValidator(_max_delay)] = DEFAULT_MAX_DELAY
    nodes: Any = None
    topology: Any = None
    channels: Any = None
    events: Annotated[list[Any], BeforeValidator(_events)] = []


class _NodeEntry(_Doc):
    """The cluster file's list form; `address` is allowed and ignored."""

    id: Annotated[str, BeforeValidator(checked_node_id)]
    balance: Annotated[int, BeforeValidator(_balance)]
    address: Any = None


_NODE_LIST = TypeAdapter(list[_NodeEntry])


def parse_scenario(raw: Any, source: str = "<memory>") -> Scenario:
    """Validate an already-parsed scenario document (see `load_scenario`)."""

    def fail(field_name: str, problem: str) -> ScenarioError:
        return ScenarioError(f"{source}: {field_name}: {problem}")

    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: expected a mapping at the top level")
    try:
        doc = _ScenarioDoc.model_validate(raw)
    except ValidationError as error:
        raise fail(*field_and_problem(error, _ScenarioDoc)) from None
    description, seed, max_delay, raw_events = doc.description, doc.seed, doc.max_delay, doc.events

    nodes = _parse_nodes(doc.nodes, fail)
    ids = list(nodes)

    channels = resolve_channels(doc.topology, doc.channels, ids, seed, fail)

    events = tuple(
        _parse_event(entry, f"events[{index}]", nodes, set(channels), fail)
        for index, entry in enumerate(raw_events)
    )
    return Scenario(
        nodes=nodes,
        channels=tuple(channels),
        events=events,
        seed=seed,
        max_delay=max_delay,
        source=source,
        description=description,
    )


Fail = Callable[[str, str], ScenarioError]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_nodes(raw: Any, fail: Fail) -> dict[str, int]:
    if isinstance(raw, dict) and raw:
        entries = [(f"nodes.{key}", key, balance) for key, balance in raw.items()]
    elif isinstance(raw, list) and raw:
        try:
            listed = _NODE_LIST.validate_python(raw)
        except ValidationError as error:
            where, problem = field_and_problem(
                error, _NodeEntry, expected={"[*]": "expected a mapping with id and balance"}
            )
            raise fail(f"nodes{where}", problem) from None
        entries = [(f"nodes[{i}].id", entry.id, entry.balance) for i, entry in enumerate(listed)]
    else:
        raise fail(
            "nodes",
            "missing or empty: give `{id: balance, ...}` or a list of `{id, balance}`",
        )
    nodes: dict[str, int] = {}
    for where, node_id, balance in entries:
        try:
            checked_node_id(node_id)
        except ValueError as error:
            raise fail(where, str(error)) from None
        if node_id in nodes:
            raise fail(where, f"duplicate node id {node_id!r}")
        if not _is_int(balance) or balance < 0:
            field_name = where if where.startswith("nodes.") else where[: -len(".id")] + ".balance"
            raise fail(field_name, f"expected a non-negative integer balance, got {balance!r}")
        nodes[node_id] = balance
    return nodes


def _parse_event(
    entry: Any, where: str, nodes: dict[str, int], channels: set[tuple[str, str]], fail: Fail
) -> Event:
    if not isinstance(entry, dict) or len(entry) != 1:
        raise fail(
            where,
            f"expected a mapping with exactly one of {', '.join(EVENT_KINDS)}, got {entry!r}",
        )
    ((kind, body),) = entry.items()
    where = f"{where}.{kind}"

    def node(value: Any, field_name: str) -> str:
        if not isinstance(value, str) or value not in nodes:
            raise fail(field_name, f"unknown node {value!r} (known: {', '.join(nodes)})")
        return value

    def fields(allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise fail(where, f"expected a mapping with {', '.join(sorted(allowed))}")
        for name in sorted(required):
            if name not in body:
                raise fail(f"{where}.{name}", "missing")
        for name in body:
            if name not in allowed:
                raise fail(f"{where}.{name}", "unknown field")
        return body

    if kind == "transfer":
        body = fields({"from", "to", "amount"}, {"from", "to", "amount"})
        src = node(body["from"], f"{where}.from")
        dst = node(body["to"], f"{where}.to")
        amount = body["amount"]
        if not _is_int(amount) or amount <= 0:
            raise fail(f"{where}.amount", f"expected a positive integer, got {amount!r}")
        if (src, dst) not in channels:
            raise fail(where, f"there is no channel {src} -> {dst}")
        return TransferEvent(src, dst, amount)
    if kind == "snapshot":
        if isinstance(body, str):
            return SnapshotEvent((node(body, where),))
        body = fields({"node", "nodes", "id"}, set())
        if ("node" in body) == ("nodes" in body):
            raise fail(where, "give exactly one of `node` or `nodes`")
        if "node" in body:
            initiators: tuple[str, ...] = (node(body["node"], f"{where}.node"),)
        else:
            raw_nodes = body["nodes"]
            if not isinstance(raw_nodes, list) or not raw_nodes:
                raise fail(f"{where}.nodes", "expected a non-empty list of node ids")
            initiators = tuple(
                node(value, f"{where}.nodes[{i}]") for i, value in enumerate(raw_nodes)
            )
            if len(set(initiators)) != len(initiators):
                raise fail(f"{where}.nodes", "a node is listed twice")
        snapshot_id = body.get("id")
        if snapshot_id is not None:
            if not isinstance(snapshot_id, str):
                raise fail(f"{where}.id", f"expected a string, got {snapshot_id!r}")
            try:
                validate_snapshot_id(snapshot_id)
            except InvalidSnapshotId as error:
                raise fail(f"{where}.id", str(error)) from error
        return SnapshotEvent(initiators, snapshot_id)
    if kind == "tick":
        if not _is_int(body) or body < 0:
            raise fail(where, f"expected a number of ticks >= 0, got {body!r}")
        return TickEvent(body)
    if kind == "restore":
        return RestoreEvent(node(body, where))
    if kind == "restore_snapshot":
        body = fields({"id"}, {"id"})
        snapshot_id = body["id"]
        if not isinstance(snapshot_id, str):
            raise fail(f"{where}.id", f"expected a snapshot id, got {snapshot_id!r}")
        try:
            validate_snapshot_id(snapshot_id)
        except InvalidSnapshotId as error:
            raise fail(f"{where}.id", str(error)) from error
        return RestoreSnapshotEvent(snapshot_id)
    raise fail(where, f"unknown event (expected one of: {', '.join(EVENT_KINDS)})")
