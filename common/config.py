"""Cluster configuration: typed, frozen, validated when loaded.

A cluster YAML names the nodes, the directed channels between them, the
collector and the workload. Every value can be overridden from the
environment (CL_COLLECTOR_ADDRESS, CL_TOPOLOGY, CL_TRANSFER_RATE,
CL_MAX_AMOUNT, CL_SNAPSHOT_TIMEOUT, CL_LINK_DELAY_MS, CL_NODE_<ID>_ADDRESS,
CL_NODE_<ID>_BALANCE; see the README), which is how compose files and the
EC2 deploy tool point one shared file at different addresses.

Anything that cannot work is refused at load time with one `ConfigError`
whose message names the file, the field and the problem.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.topology import TOPOLOGIES, Channel, build_channels, unreachable_pairs

# Balances, their sum and transfer amounts travel as int64 (protobuf) and sit
# in SQLite INTEGER columns: anything larger is refused at load.
INT64_MAX = 2**63 - 1
NODE_ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
ADDRESS_PATTERN = re.compile(r"^[A-Za-z0-9._\[\]:-]+:\d{1,5}$")


class ConfigError(Exception):
    """The cluster configuration cannot work; the message says where and why."""


@dataclass(frozen=True)
class NodeSpec:
    id: str
    address: str
    balance: int


@dataclass(frozen=True)
class Workload:
    transfer_rate: float = 5.0
    max_amount: int = 50


@dataclass(frozen=True)
class ClusterConfig:
    nodes: tuple[NodeSpec, ...]
    channels: tuple[tuple[str, str], ...]
    collector_address: str
    workload: Workload = Workload()
    snapshot_timeout: float = 30.0
    link_delay: float = 0.0  # seconds added to every channel (link_delay_ms in YAML)
    source: str = "<memory>"

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(node.id for node in self.nodes)

    @property
    def expected_total(self) -> int:
        return sum(node.balance for node in self.nodes)

    def node(self, node_id: str) -> NodeSpec:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise ConfigError(
            f"{self.source}: node {node_id!r} is not in the cluster "
            f"(known: {', '.join(self.node_ids)})"
        )

    def incoming(self, node_id: str) -> tuple[str, ...]:
        return tuple(sorted(src for src, dst in self.channels if dst == node_id))

    def outgoing(self, node_id: str) -> tuple[str, ...]:
        return tuple(sorted(dst for src, dst in self.channels if src == node_id))


# Builds the error for (field, problem); each file format names its own file.
Fail = Callable[[str, str], Exception]


def port_of(address: str) -> int:
    """The port of a `host:port` address that passed `is_address`."""
    return int(address.rsplit(":", 1)[1])


def is_address(value: object) -> bool:
    """`value` is host:port with a port a server can listen on (1-65535)."""
    return (
        isinstance(value, str)
        and ADDRESS_PATTERN.fullmatch(value) is not None
        and 0 < port_of(value) < 65536
    )


def env_key(node_id: str, field_name: str) -> str:
    return f"CL_NODE_{node_id.upper().replace('-', '_')}_{field_name}"


def load_cluster(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> ClusterConfig:
    """Read, override from the environment, and validate a cluster YAML."""
    environ = os.environ if environ is None else environ
    return parse_cluster(read_yaml(path, "cluster file", ConfigError), str(path), environ)


def read_yaml(path: str | os.PathLike[str], kind: str, error: type[Exception]) -> Any:
    """The parsed YAML of `path`; unreadable or invalid YAML raises `error` naming the file."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as cause:
        raise error(f"{source}: cannot read {kind}: {cause.strerror}") from cause
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as cause:
        raise error(f"{source}: not valid YAML: {cause}".replace("\n", " ")) from cause


def parse_cluster(raw: Any, source: str, environ: Mapping[str, str]) -> ClusterConfig:
    """Validate an already-parsed cluster document (see `load_cluster`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")

    def fail(field_name: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {field_name}: {problem}")

    known = {
        "nodes",
        "topology",
        "channels",
        "collector",
        "workload",
        "snapshot_timeout",
        "link_delay_ms",
        "seed",
    }
    for key in raw:
        if key not in known:
            raise fail(str(key), f"unknown field (expected one of: {', '.join(sorted(known))})")

    raw_nodes = raw.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise fail("nodes", "missing or empty: list the nodes as `- {id, address, balance}`")
    nodes: list[NodeSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw_nodes):
        where = f"nodes[{index}]"
        if not isinstance(entry, dict):
            raise fail(where, "expected a mapping with id, address and balance")
        for required in ("id", "address", "balance"):
            if required not in entry:
                raise fail(f"{where}.{required}", "missing")
        extra = set(entry) - {"id", "address", "balance"}
        if extra:
            raise fail(f"{where}.{sorted(extra)[0]}", "unknown field")
        node_id = entry["id"]
        if not isinstance(node_id, str) or not NODE_ID_PATTERN.fullmatch(node_id):
            raise fail(
                f"{where}.id",
                f"{node_id!r} is not a valid node id (a letter, then letters, digits, - or _)",
            )
        if node_id in seen:
            raise fail(f"{where}.id", f"duplicate node id {node_id!r}")
        seen.add(node_id)
        address_key = env_key(node_id, "ADDRESS")
        address = environ.get(address_key, entry["address"])
        if not is_address(address):
            origin = f" (from {address_key})" if address_key in environ else ""
            raise fail(f"{where}.address", f"{address!r} is not host:port{origin}")
        balance_key = env_key(node_id, "BALANCE")
        raw_balance = environ.get(balance_key, entry["balance"])
        balance = _integer(raw_balance)
        if balance is None or balance < 0:
            origin = f" (from {balance_key})" if balance_key in environ else ""
            raise fail(
                f"{where}.balance",
                f"expected a non-negative integer, got {raw_balance!r}{origin}",
            )
        if balance > INT64_MAX:
            raise fail(f"{where}.balance", f"{balance} is beyond int64 (at most {INT64_MAX})")
        nodes.append(NodeSpec(node_id, address, balance))
    ids = [node.id for node in nodes]
    total = sum(node.balance for node in nodes)
    if total > INT64_MAX:
        raise fail("nodes", f"the balances add up to {total}, beyond int64 (at most {INT64_MAX})")

    topology = environ.get("CL_TOPOLOGY", raw.get("topology"))
    raw_channels = None if "CL_TOPOLOGY" in environ else raw.get("channels")
    seed = _integer(raw.get("seed", 0))
    if seed is None:
        raise fail("seed", "expected an integer")
    channels = resolve_channels(topology or None, raw_channels, ids, seed, fail)

    collector = environ.get("CL_COLLECTOR_ADDRESS", raw.get("collector"))
    if not is_address(collector):
        raise fail("collector", f"missing or not host:port: {collector!r}")

    raw_workload = raw.get("workload", {}) or {}
    if not isinstance(raw_workload, dict):
        raise fail("workload", "expected a mapping with transfer_rate and max_amount")
    extra = set(raw_workload) - {"transfer_rate", "max_amount"}
    if extra:
        raise fail(f"workload.{sorted(extra)[0]}", "unknown field")
    rate = _number(environ.get("CL_TRANSFER_RATE", raw_workload.get("transfer_rate", 5.0)))
    if rate is None or rate < 0:
        raise fail(
            "workload.transfer_rate", "expected a non-negative number of transfers per second"
        )
    max_amount = _integer(environ.get("CL_MAX_AMOUNT", raw_workload.get("max_amount", 50)))
    if max_amount is None or not 1 <= max_amount <= INT64_MAX:
        raise fail("workload.max_amount", f"expected a positive integer up to {INT64_MAX}")

    timeout = _number(environ.get("CL_SNAPSHOT_TIMEOUT", raw.get("snapshot_timeout", 30.0)))
    if timeout is None or timeout <= 0:
        raise fail("snapshot_timeout", "expected a positive number of seconds")

    delay_ms = _number(environ.get("CL_LINK_DELAY_MS", raw.get("link_delay_ms", 0)))
    if delay_ms is None or not 0 <= delay_ms <= 10_000:
        raise fail("link_delay_ms", "expected a number of milliseconds between 0 and 10000")

    return ClusterConfig(
        nodes=tuple(nodes),
        channels=tuple(channels),
        collector_address=collector,
        workload=Workload(transfer_rate=rate, max_amount=max_amount),
        snapshot_timeout=timeout,
        link_delay=delay_ms / 1000,
        source=source,
    )


def resolve_channels(
    topology: Any, raw_channels: Any, ids: Sequence[str], seed: int, fail: Fail
) -> list[Channel]:
    """The channels of a named `topology` (default complete) or of an explicit
    `[from, to]` list, refused unless every node can reach every other one.
    """
    if topology is not None and raw_channels is not None:
        raise fail("channels", "give either `topology` or `channels`, not both")
    if raw_channels is None:
        topology = "complete" if topology is None else topology
        if topology not in TOPOLOGIES:
            raise fail("topology", f"{topology!r} is not one of {', '.join(TOPOLOGIES)}")
        channels = build_channels(topology, ids, seed=seed)
    else:
        channels = parse_channels(raw_channels, ids, fail)
    missing = unreachable_pairs(ids, channels)
    if missing:
        src, dst = missing[0]
        raise fail(
            "channels",
            f"markers cannot reach {dst} from {src}: every node must reach every other "
            "node along directed channels (the graph must be strongly connected)",
        )
    return channels


def parse_channels(raw: Any, ids: Sequence[str], fail: Fail) -> list[Channel]:
    if not isinstance(raw, list) or not raw:
        raise fail("channels", "expected a non-empty list of [from, to] pairs")
    channels: list[Channel] = []
    for index, pair in enumerate(raw):
        where = f"channels[{index}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise fail(where, f"expected [from, to], got {pair!r}")
        src, dst = pair
        for end in (src, dst):
            if end not in ids:
                raise fail(where, f"unknown node {end!r} (known: {', '.join(ids)})")
        if src == dst:
            raise fail(where, f"channel from {src} to itself")
        if (src, dst) in channels:
            raise fail(where, f"duplicate channel {src} -> {dst}")
        channels.append((src, dst))
    return channels


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def _number(value: Any) -> float | None:
    """A finite number: "nan" or "inf" would pass every range check below."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
