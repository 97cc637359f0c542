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

import functools
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.topology import TOPOLOGIES, Channel, build_channels, unreachable_pairs

# yaml and pydantic-core are imported where a file is read and validated: a
# process that only imports these types (or `cl-initiator --help`) does not
# load them.
if TYPE_CHECKING:
    import yaml
    from pydantic_core import CoreSchema, SchemaValidator
    from pydantic_core.core_schema import TypedDictField

# Balances, their sum and transfer amounts travel as int64 (protobuf) and sit
# in SQLite INTEGER columns: anything larger is refused at load.
INT64_MAX = 2**63 - 1
NODE_ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
# Any digits after the colon: a port beyond 65535 is then said to be out of range.
ADDRESS_PATTERN = re.compile(r"^[A-Za-z0-9._\[\]:-]+:\d{1,10}$")


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


def address_problem(value: object) -> str | None:
    """Why `value` is not host:port with a port a server can listen on, or None."""
    if not isinstance(value, str) or ADDRESS_PATTERN.fullmatch(value) is None:
        return f"{value!r} is not host:port"
    port = port_of(value)
    if not 0 < port < 65536:
        return f"{value!r}: port {port} is out of range (1-65535)"
    return None


def is_address(value: object) -> bool:
    """`value` is host:port with a port a server can listen on (1-65535)."""
    return address_problem(value) is None


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
    import yaml

    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as cause:
        raise error(f"{source}: cannot read {kind}: {cause.strerror}") from cause
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as cause:
        raise error(f"{yaml_problem(source, cause)}") from cause


def yaml_problem(source: str, cause: yaml.YAMLError) -> str:
    """`file:line:column: not valid YAML: problem`, one line, where the parser stopped
    (PyYAML's own text names `<unicode string>` and spans several lines)."""
    mark = getattr(cause, "problem_mark", None)
    problem = getattr(cause, "problem", None)
    if mark is None or problem is None:
        return f"{source}: not valid YAML: {cause}".replace("\n", " ")
    where = f"{source}:{mark.line + 1}:{mark.column + 1}"
    context = getattr(cause, "context", None)
    context_mark = getattr(cause, "context_mark", None)
    if context and context_mark is not None:
        problem = f"{problem} ({context} at {context_mark.line + 1}:{context_mark.column + 1})"
    return f"{where}: not valid YAML: {problem}".replace("\n", " ")


# --------------------------------------------------------------- the schema
#
# The document's shape and each value's rule are a pydantic-core schema
# (`cluster_schema`, below); what spans several values (duplicate ids and
# addresses, the int64 total, the channels) is checked after, in
# `parse_cluster`. Every validator raises ValueError with the problem in our
# words; common/validation.py makes the first error one line, `field: problem`.
#
# pydantic-core, not pydantic models: every process (and every `cl-initiator`)
# loads this file, and importing pydantic and building its models cost ~50 ms
# of start-up and ~12 MB per process, for a schema pydantic-core compiles in
# well under a millisecond. The schema is what pydantic would build from the
# models (a before-validator wrapping each value's type, extra fields
# forbidden), so the errors are the same.


def checked_node_id(value: Any) -> str:
    """`value` if it is a valid node id, else ValueError saying what one is."""
    if not isinstance(value, str) or not NODE_ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid node id (a letter, then letters, digits, - or _)"
        )
    return value


def _node_address(value: Any) -> str:
    problem = address_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return str(value)


def _balance(value: Any) -> int:
    balance = _integer(value)
    if balance is None or balance < 0:
        raise ValueError(f"expected a non-negative integer, got {value!r}")
    if balance > INT64_MAX:
        raise ValueError(f"{balance} is beyond int64 (at most {INT64_MAX})")
    return balance


def _nodes(value: Any) -> Any:
    if not isinstance(value, list) or not value:
        raise ValueError("missing or empty: list the nodes as `- {id, address, balance}`")
    return value


def _collector(value: Any) -> str:
    problem = address_problem(value)
    if problem is not None:
        raise ValueError(
            f"missing or not host:port: {value!r}" if problem.endswith("is not host:port")
            or value is None else problem
        )
    return str(value)


def _workload(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("expected a mapping with transfer_rate and max_amount")
    return value


def _rate(value: Any) -> float:
    rate = _number(value)
    if rate is None or rate < 0:
        raise ValueError("expected a non-negative number of transfers per second")
    return rate


def _max_amount(value: Any) -> int:
    amount = _integer(value)
    if amount is None or not 1 <= amount <= INT64_MAX:
        raise ValueError(f"expected a positive integer up to {INT64_MAX}")
    return amount


def _timeout(value: Any) -> float:
    timeout = _number(value)
    if timeout is None or timeout <= 0:
        raise ValueError("expected a positive number of seconds")
    return timeout


def _delay_ms(value: Any) -> float:
    delay = _number(value)
    if delay is None or not 0 <= delay <= 10_000:
        raise ValueError("expected a number of milliseconds between 0 and 10000")
    return delay


def _seed(value: Any) -> int:
    seed = _integer(value)
    if seed is None:
        raise ValueError("expected an integer")
    return seed


@functools.cache
def cluster_schema() -> CoreSchema:
    """The cluster document's pydantic-core schema, built on first use."""
    from pydantic_core import core_schema as cs

    def rule(check: Callable[[Any], Any], kind: CoreSchema) -> CoreSchema:
        """`check` (our wording) first, then pydantic-core's own check of `kind`."""
        return cs.no_info_before_validator_function(check, kind)

    def required(schema: CoreSchema) -> TypedDictField:
        return cs.typed_dict_field(schema)

    def optional(
        schema: CoreSchema, default: Any, *, check_default: bool = False
    ) -> TypedDictField:
        """`check_default`: a field left out still goes through its rule (which
        then says what is missing, or fills in defaults)."""
        return cs.typed_dict_field(
            cs.with_default_schema(schema, default=default, validate_default=check_default),
            required=False,
        )

    def mapping(fields: dict[str, TypedDictField]) -> CoreSchema:
        return cs.typed_dict_schema(fields, extra_behavior="forbid")

    node = mapping(
        {
            "id": required(rule(checked_node_id, cs.str_schema())),
            "address": required(rule(_node_address, cs.str_schema())),
            "balance": required(rule(_balance, cs.int_schema())),
        }
    )
    workload = mapping(
        {
            "transfer_rate": optional(rule(_rate, cs.float_schema()), 5.0),
            "max_amount": optional(rule(_max_amount, cs.int_schema()), 50),
        }
    )
    return mapping(
        {
            "nodes": optional(rule(_nodes, cs.list_schema(node)), None, check_default=True),
            "topology": optional(cs.any_schema(), None),
            "channels": optional(cs.any_schema(), None),
            "collector": optional(rule(_collector, cs.str_schema()), None, check_default=True),
            "workload": optional(rule(_workload, workload), None, check_default=True),
            "snapshot_timeout": optional(rule(_timeout, cs.float_schema()), 30.0),
            "link_delay_ms": optional(rule(_delay_ms, cs.float_schema()), 0.0),
            "seed": optional(rule(_seed, cs.int_schema()), 0),
        }
    )


@functools.cache
def _cluster_validator() -> SchemaValidator:
    from pydantic_core import SchemaValidator

    return SchemaValidator(cluster_schema())


SHAPES = {
    "nodes[*]": "expected a mapping with id, address and balance",
}


def with_environment(
    raw: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The document with the environment's overrides in place (a copy), and
    field path -> the variable each overridden value came from."""
    doc = dict(raw)
    origins: dict[str, str] = {}

    def put(target: dict[str, Any], key: str, path: str, variable: str) -> None:
        if variable in environ:
            target[key] = environ[variable]
            origins[path] = variable

    nodes = doc.get("nodes")
    if isinstance(nodes, list):
        doc["nodes"] = nodes = [dict(e) if isinstance(e, dict) else e for e in nodes]
        for index, entry in enumerate(nodes):
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                for name in ("address", "balance"):
                    variable = env_key(entry["id"], name.upper())
                    put(entry, name, f"nodes[{index}].{name}", variable)
    put(doc, "collector", "collector", "CL_COLLECTOR_ADDRESS")
    if "CL_TOPOLOGY" in environ:
        doc.pop("channels", None)
        put(doc, "topology", "topology", "CL_TOPOLOGY")
    workload = doc.get("workload")
    if isinstance(workload, dict) or (workload is None and _WORKLOAD_VARIABLES & set(environ)):
        doc["workload"] = workload = dict(workload or {})
        put(workload, "transfer_rate", "workload.transfer_rate", "CL_TRANSFER_RATE")
        put(workload, "max_amount", "workload.max_amount", "CL_MAX_AMOUNT")
    put(doc, "snapshot_timeout", "snapshot_timeout", "CL_SNAPSHOT_TIMEOUT")
    put(doc, "link_delay_ms", "link_delay_ms", "CL_LINK_DELAY_MS")
    return doc, origins


_WORKLOAD_VARIABLES = {"CL_TRANSFER_RATE", "CL_MAX_AMOUNT"}


def parse_cluster(raw: Any, source: str, environ: Mapping[str, str]) -> ClusterConfig:
    """Validate an already-parsed cluster document (see `load_cluster`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")

    def fail(field_name: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {field_name}: {problem}")

    from pydantic_core import ValidationError

    doc, origins = with_environment(raw, environ)
    try:
        parsed = _cluster_validator().validate_python(doc)
    except ValidationError as error:
        from common.validation import field_and_problem

        raise fail(*field_and_problem(error, cluster_schema(), origins, SHAPES)) from None

    nodes = tuple(
        NodeSpec(node["id"], node["address"], node["balance"]) for node in parsed["nodes"]
    )
    collector: str = parsed["collector"]
    ids: dict[str, int] = {}
    owners: dict[str, str] = {}
    for index, node in enumerate(nodes):
        if node.id in ids:
            raise fail(f"nodes[{index}].id", f"duplicate node id {node.id!r}")
        ids[node.id] = index
        if node.address in owners:
            raise fail(
                f"nodes[{index}].address",
                f"{node.address!r} is already the address of {owners[node.address]}: "
                "two nodes cannot listen on one host:port",
            )
        owners[node.address] = node.id
    if collector in owners:
        raise fail("collector", f"{collector!r} is already the address of {owners[collector]}")
    total = sum(node.balance for node in nodes)
    if total > INT64_MAX:
        raise fail("nodes", f"the balances add up to {total}, beyond int64 (at most {INT64_MAX})")

    channels = resolve_channels(
        parsed["topology"] or None, parsed["channels"], list(ids), parsed["seed"], fail
    )
    workload = parsed["workload"]
    return ClusterConfig(
        nodes=nodes,
        channels=tuple(channels),
        collector_address=collector,
        workload=Workload(
            transfer_rate=workload["transfer_rate"], max_amount=workload["max_amount"]
        ),
        snapshot_timeout=parsed["snapshot_timeout"],
        link_delay=parsed["link_delay_ms"] / 1000,
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
