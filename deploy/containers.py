"""State and health of a host's compose containers, read with ``docker inspect``.

:func:`wait_healthy` polls every host until each listed service is running
and healthy, and fails early (with the container's last log lines) when one
exits, turns unhealthy or keeps restarting.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

from deploy.errors import DeployError
from deploy.progress import Log
from deploy.targets import Target

POLL_SECONDS = 2.0


@dataclass(frozen=True)
class ContainerState:
    service: str
    name: str
    state: str  # running, exited, restarting, created, ...
    health: str  # healthy, starting, unhealthy, or "-" without a healthcheck
    restarts: int

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in ("healthy", "-")


def container_states(target: Target, *, step: str) -> dict[str, ContainerState]:
    """The project's service containers on a host (one-off `run` containers left out)."""
    label = shlex.quote(f"com.docker.compose.project={target.project}")
    result = target.remote.run(
        f"ids=$(docker ps -aq --filter label={label}); "
        'if [ -n "$ids" ]; then docker inspect $ids; else echo "[]"; fi',
        step=step,
    )
    try:
        inspected = json.loads(result.stdout or b"[]")
    except json.JSONDecodeError as error:
        raise DeployError(
            f"{target.name}: {step}: unreadable `docker inspect` output: {error}"
        ) from None
    states: dict[str, ContainerState] = {}
    for container in inspected:
        labels = container.get("Config", {}).get("Labels") or {}
        if labels.get("com.docker.compose.oneoff", "False") == "True":
            continue
        state = container.get("State", {})
        health = (state.get("Health") or {}).get("Status", "-")
        service = labels.get("com.docker.compose.service", "?")
        states[service] = ContainerState(
            service=service,
            name=str(container.get("Name", "")).lstrip("/"),
            state=str(state.get("Status", "?")),
            health=str(health),
            restarts=int(container.get("RestartCount", 0)),
        )
    return states


def container_logs(target: Target, container: str, lines: int = 25) -> str:
    try:
        result = target.remote.run(
            f"docker logs --tail {lines} {shlex.quote(container)} 2>&1",
            step="reading logs",
            check=False,
        )
    except DeployError as error:
        return f"(no logs: {error})"
    return result.stdout.decode(errors="replace").rstrip()


def wait_healthy(
    targets: Sequence[tuple[Target, Sequence[str]]], timeout: float, log: Log
) -> float:
    """Poll every host until each listed service is running and healthy; return seconds."""
    start = time.monotonic()
    next_report = 0.0
    while True:
        pending: list[str] = []
        for target, services in targets:
            if not services:
                continue
            states = container_states(target, step="checking health")
            for service in services:
                current = states.get(service)
                if current is None:
                    pending.append(f"{service}@{target.name} (no container)")
                    continue
                if current.ready:
                    continue
                broken = current.state in ("exited", "dead") or current.health == "unhealthy"
                if broken or current.restarts >= 3:
                    raise DeployError(
                        f"{target.name}: waiting for health: {service} is {current.state}"
                        f"/{current.health} after {current.restarts} restarts; its last log "
                        f"lines:\n{container_logs(target, current.name)}"
                    )
                pending.append(f"{service}@{target.name} ({current.state}/{current.health})")
        elapsed = time.monotonic() - start
        if not pending:
            return elapsed
        if elapsed > timeout:
            raise DeployError(
                f"waiting for health: not healthy after {timeout:g}s: {', '.join(pending)} "
                "(`cl-deploy status` shows the state; raise --health-timeout if hosts are slow)"
            )
        if elapsed >= next_report:
            log(f"waiting for {len(pending)} service(s): {', '.join(pending)}")
            next_report = elapsed + 10
        time.sleep(POLL_SECONDS)
