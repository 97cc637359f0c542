"""Where each service runs, and the files each host gets: pure, no ssh, no Docker.

A deployment spreads the services of ``compose.yml`` over the inventory's
hosts. Every host runs its own compose project over the *same* compose file
and starts only its own services (``up --no-deps collector n1 n4``):

* the collector runs on the first host (or the host named by
  ``--assign collector=HOST``);
* node ``i`` (in cluster-file order) runs on host ``i mod H`` unless
  ``--assign nID=HOST`` says otherwise.

Each host gets its own rendering of the cluster YAML: a service on the same
host is addressed by its compose service name (``n1:50051``, resolved on the
project network, no hairpin through the host), a service on another host by
that host's private IP and the service's published port (the host's `.env`
publishes every service on the port it listens on). Everything else in the cluster file
(topology, balances, workload) is copied unchanged, so every host agrees on
the cluster and only the addresses differ.

Each compose project is named ``<prefix>-<host name>``: harmless on EC2,
and what keeps the projects apart when several "hosts" share one engine.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from common.config import ConfigError, parse_cluster, port_of
from deploy.errors import DeployError
from deploy.hosts import Host

COLLECTOR = "collector"
DEFAULT_PROJECT_PREFIX = "chandy-lamport"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Service:
    """A long-running compose service: its name (= node id, or "collector") and port."""

    name: str
    port: int


@dataclass(frozen=True)
class HostPlan:
    """What one host runs: a compose project and some of its services."""

    host: Host
    project: str
    services: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.host.name


@dataclass(frozen=True)
class Plan:
    """The whole deployment: every host, and the host of every service."""

    hosts: tuple[HostPlan, ...]
    placement: tuple[tuple[str, str], ...]  # (service, host name), collector first
    ports: tuple[tuple[str, int], ...]  # (service, port)

    def host_of(self, service: str) -> str:
        return dict(self.placement)[service]

    def port_of(self, service: str) -> int:
        return dict(self.ports)[service]

    def host_plan(self, host_name: str) -> HostPlan:
        for host_plan in self.hosts:
            if host_plan.name == host_name:
                return host_plan
        raise KeyError(host_name)

    @property
    def collector_host(self) -> HostPlan:
        return self.host_plan(self.host_of(COLLECTOR))


# ------------------------------------------------------------------ inputs


def parse_assignments(values: Iterable[str]) -> dict[str, str]:
    """``["n1=host-0,n2=host-1", "collector=host-1"]`` -> ``{"n1": "host-0", ...}``."""
    assignments: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            service, sep, host = (part.strip() for part in item.partition("="))
            if not sep or not service or not host:
                raise DeployError(
                    f"--assign {item!r}: expected SERVICE=HOST, e.g. n1=host-0 or collector=host-1"
                )
            if service in assignments and assignments[service] != host:
                raise DeployError(
                    f"--assign: {service} is assigned twice ({assignments[service]} and {host})"
                )
            assignments[service] = host
    return assignments


def services_of_cluster(cluster: Any, source: str = "cluster file") -> list[Service]:
    """The collector, then every node, with the ports they listen on (from their addresses)."""
    try:
        config = parse_cluster(cluster, source, {})
    except ConfigError as error:
        raise DeployError(str(error)) from None
    return [Service(COLLECTOR, port_of(config.collector_address))] + [
        Service(node.id, port_of(node.address)) for node in config.nodes
    ]


def check_compose(compose: Any, services: Sequence[Service], source: str = "compose file") -> None:
    """Refuse a compose file that does not run the cluster's services on their ports."""
    if not isinstance(compose, Mapping) or not isinstance(compose.get("services"), Mapping):
        raise DeployError(f"{source}: no 'services' mapping")
    defined = compose["services"]
    for service in services:
        if service.name not in defined:
            raise DeployError(
                f"{source}: has no service {service.name!r}, which the cluster file lists; "
                "generate both with `python -m common.generate`"
            )
        ports = [str(p) for p in (defined[service.name] or {}).get("ports", []) or []]
        # Either pinned to the same port, or to the PUBLISH_PORT_<SERVICE> that
        # render_env pins it to on the host that runs it.
        suffixes = (
            f":{service.port}:{service.port}",
            f":${{PUBLISH_PORT_{service.name.upper()}:-}}:{service.port}",
        )
        if not any(p.endswith(suffixes) for p in ports):
            raise DeployError(
                f"{source}: service {service.name!r} does not publish port {service.port} "
                f"on the same port (got {ports or 'none'}); peers on other hosts could not "
                "reach it"
            )
    if "initiator" not in defined:
        raise DeployError(f"{source}: has no 'initiator' service (needed by `cl-deploy snapshot`)")
    if "certs" not in defined:
        raise DeployError(
            f"{source}: has no 'certs' service (it installs the hosts' TLS certificates); "
            "generate the file with `python -m common.generate`"
        )


def project_name(prefix: str, host_name: str) -> str:
    """A compose project name valid for Compose v1 and v2: ``[a-z0-9][a-z0-9_-]*``."""
    name = re.sub(r"[^a-z0-9_-]+", "-", f"{prefix}-{host_name}".lower()).strip("-_")
    if not name:
        raise DeployError(f"cannot make a compose project name from {prefix!r} and {host_name!r}")
    return name


# -------------------------------------------------------------------- plan


def make_plan(
    hosts: Sequence[Host],
    services: Sequence[Service],
    assignments: Mapping[str, str] | None = None,
    project_prefix: str = DEFAULT_PROJECT_PREFIX,
) -> Plan:
    """Place the collector and the nodes on hosts (see the module doc for the rule)."""
    assignments = dict(assignments or {})
    if not hosts:
        raise DeployError("no hosts to deploy to")
    host_names = [host.name for host in hosts]
    service_names = [service.name for service in services]
    if not service_names or service_names[0] != COLLECTOR:
        raise DeployError("internal: the services must start with the collector")
    for service, host in assignments.items():
        if service not in service_names:
            raise DeployError(
                f"--assign {service}={host}: no service {service!r} "
                f"(known: {', '.join(service_names)})"
            )
        if host not in host_names:
            raise DeployError(
                f"--assign {service}={host}: no host {host!r} in the host file "
                f"(known: {', '.join(host_names)})"
            )
    placement = [(COLLECTOR, assignments.get(COLLECTOR, host_names[0]))]
    for index, name in enumerate(service_names[1:]):
        placement.append((name, assignments.get(name, host_names[index % len(hosts)])))
    projects = [project_name(project_prefix, name) for name in host_names]
    if len(set(projects)) != len(projects):
        raise DeployError(f"host names {host_names} give clashing compose project names {projects}")
    host_plans = tuple(
        HostPlan(
            host=host,
            project=project,
            services=tuple(service for service, on in placement if on == host.name),
        )
        for host, project in zip(hosts, projects, strict=True)
    )
    return Plan(
        hosts=host_plans,
        placement=tuple(placement),
        ports=tuple((service.name, service.port) for service in services),
    )


# ----------------------------------------------------------------- renders


def address_for(plan: Plan, service: str, seen_from: str) -> str:
    """How a container on host ``seen_from`` reaches ``service``."""
    port = plan.port_of(service)
    on = plan.host_of(service)
    if on == seen_from:
        return f"{service}:{port}"
    return f"{plan.host_plan(on).host.private_ip}:{port}"


def render_cluster(cluster: Mapping[str, Any], plan: Plan, host_name: str) -> str:
    """The cluster YAML for one host: the same cluster, addresses as seen from that host."""
    document = copy.deepcopy(dict(cluster))
    document["collector"] = address_for(plan, COLLECTOR, host_name)
    for node in document["nodes"]:
        node["address"] = address_for(plan, str(node["id"]), host_name)
    where = {service: on for service, on in plan.placement}
    header = (
        f"# Rendered by `cl-deploy up` for {host_name}: services on this host are\n"
        "# addressed by compose service name, the others by private IP.\n"
        + "".join(f"#   {service:<10} on {on}\n" for service, on in where.items())
    )
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=None)
    try:  # a rendered file the nodes would refuse must not leave this machine
        parse_cluster(yaml.safe_load(text), f"cluster file for {host_name}", {})
    except ConfigError as error:
        raise DeployError(str(error)) from None
    return text


def render_env(
    plan: Plan, host_plan: HostPlan, image: str, publish_address: str | None = None
) -> str:
    """The ``.env`` next to compose.yml on a host (read by Compose v1 and v2).

    Each service on the host is published at its own port, which is the one
    the other hosts' cluster files dial, on the host's private address only
    (default): the other hosts dial that one, and nothing listens on the
    public interface, whatever the security group says.
    """
    publish_address = publish_address or host_plan.host.private_ip
    ports = "".join(
        f"PUBLISH_PORT_{service.upper()}={plan.port_of(service)}\n"
        for service in host_plan.services
    )
    return (
        "# Written by `cl-deploy up`.\n"
        f"COMPOSE_PROJECT_NAME={host_plan.project}\n"
        f"PUBLISH_ADDRESS={publish_address}\n"
        f"CL_IMAGE={image}\n" + ports
    )


def manifest(plan: Plan, image: str) -> dict[str, Any]:
    """What ``up`` deployed; stored on every host so later commands need no flags repeated."""
    return {
        "schema_version": MANIFEST_VERSION,
        "image": image,
        "collector_host": plan.host_of(COLLECTOR),
        "hosts": [
            {
                "name": host_plan.name,
                "private_ip": host_plan.host.private_ip,
                "project": host_plan.project,
                "services": list(host_plan.services),
            }
            for host_plan in plan.hosts
        ],
        "ports": dict(plan.ports),
    }
