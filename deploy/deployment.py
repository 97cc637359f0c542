"""What ``up`` left on the hosts: ``deployment.json`` (the plan), read back.

Every host gets the same file, so the commands after ``up`` need only the
hosts file and ssh options: :func:`load_deployment` reads it from the first
host that answers. Before a new ``up``, :func:`refuse_moves` compares the
previous file with the new plan.
"""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass
from typing import Any

from deploy.errors import DeployError
from deploy.hosts import load_hosts
from deploy.images import DEFAULT_IMAGE
from deploy.plan import COLLECTOR, Plan, project_name
from deploy.ssh import Remote
from deploy.targets import Target, in_parallel, ssh_options

MANIFEST = "deployment.json"


def read_manifest(remote: Remote, remote_dir: str, step: str) -> dict[str, Any] | None:
    """A host's deployment.json, or None when it has none (or an unreadable one)."""
    path = shlex.quote(f"{remote_dir}/{MANIFEST}")
    result = remote.run(f"cat {path} 2>/dev/null", step=step, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return None
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


@dataclass(frozen=True)
class Deployed:
    """What ``up`` deployed, as read back from a host's deployment.json."""

    document: dict[str, Any]
    targets: dict[str, Target]

    @property
    def collector(self) -> Target:
        return self.targets[str(self.document["collector_host"])]

    @property
    def image(self) -> str:
        return str(self.document.get("image", DEFAULT_IMAGE))

    def services(self, host_name: str) -> list[str]:
        for entry in self.document.get("hosts", []):
            if entry.get("name") == host_name:
                return [str(s) for s in entry.get("services", [])]
        return []


def load_deployment(args: argparse.Namespace, step: str) -> Deployed:
    """Read deployment.json from the first host that has it."""
    inventory = load_hosts(args.state_file)
    options = ssh_options(args, inventory)
    document: dict[str, Any] | None = None
    unreachable: list[str] = []
    for host in inventory.hosts:  # every host has the same file; the first that answers
        try:
            document = read_manifest(
                Remote(host, options), args.remote_dir, f"{step}: reading {MANIFEST}"
            )
        except DeployError as error:
            unreachable.append(str(error))
            continue
        if document is not None:
            break
    if document is None:
        if unreachable:
            raise DeployError("\n".join(unreachable))
        raise DeployError(
            f"no deployment found in {args.remote_dir}/ on any host: run `cl-deploy up` first "
            "(with the same --remote-dir)"
        )
    projects = {str(e["name"]): str(e["project"]) for e in document.get("hosts", [])}
    targets = {
        host.name: Target(
            Remote(host, options),
            projects.get(host.name) or project_name(args.project_prefix, host.name),
            args.remote_dir,
        )
        for host in inventory.hosts
    }
    if str(document.get("collector_host")) not in targets:
        raise DeployError(
            f"{MANIFEST} puts the collector on {document.get('collector_host')!r}, which is not "
            "in the hosts file: was it re-provisioned? run `cl-deploy up` again"
        )
    return Deployed(document, targets)


def state_volume(service: str) -> str:
    """The compose volume (in compose.yml) that holds a service's state."""
    return "snapshots" if service == COLLECTOR else f"{service}-data"


def refuse_moves(plan: Plan, targets: dict[str, Target], remote_dir: str) -> None:
    """Refuse to move a service away from a host that still holds its state.

    A node's volume holds its balance and channel sequence numbers; started
    elsewhere with a fresh volume it would create money and confuse its
    peers' channels. The collector's volume holds the snapshot files.
    """
    previous = in_parallel(
        list(targets.values()),
        lambda t: read_manifest(t.remote, remote_dir, "reading the previous deployment"),
    )
    moves: dict[str, set[str]] = {}  # old host -> services that would move away
    for document in previous:
        for entry in (document or {}).get("hosts", []):
            old_host = str(entry.get("name"))
            for service in entry.get("services", []):
                if (
                    old_host in targets
                    and service in dict(plan.placement)
                    and plan.host_of(service) != old_host
                ):
                    moves.setdefault(old_host, set()).add(str(service))
    problems = []
    for old_host, services in sorted(moves.items()):
        target = targets[old_host]
        label = shlex.quote(f"com.docker.compose.project={target.project}")
        result = target.remote.run(
            f"docker volume ls -q --filter label={label}", step="looking for state volumes"
        )
        volumes = set(result.stdout.decode().split())
        for service in sorted(services):
            if f"{target.project}_{state_volume(service)}" in volumes:
                problems.append(f"{service} from {old_host} to {plan.host_of(service)}")
    if problems:
        raise DeployError(
            f"moving {', '.join(problems)} would lose its state (volume on the old host): "
            "keep the previous --assign, or fetch the snapshots and run "
            "`cl-deploy down --volumes` first"
        )
