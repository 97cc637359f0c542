"""The hosts to act on over ssh: connection targets, compose, fan-out.

A :class:`Target` is one host's ssh connection with its compose project and
remote directory; it finds ``docker compose`` or ``docker-compose`` there
once. :func:`ssh_options` turns the command line and the hosts file into
:class:`SshOptions`; :func:`in_parallel` runs a step on every host at once
and reports every failure, not only the first.
"""

from __future__ import annotations

import argparse
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from common.files import atomic_write_bytes
from deploy.errors import DeployError
from deploy.host_keys import known_hosts
from deploy.hosts import Inventory
from deploy.progress import Log, reporter
from deploy.ssh import Remote, SshOptions, parse_ports

T = TypeVar("T")
R = TypeVar("R")


def progress(step: str) -> Log:
    """:func:`deploy.progress.reporter`, safe to call from the per-host threads."""
    log = reporter(step)
    lock = threading.Lock()

    def locked(message: str) -> None:
        with lock:
            log(message)

    return locked


@dataclass
class Target:
    """A host to act on: its ssh connection, compose project, and compose command."""

    remote: Remote
    project: str
    remote_dir: str
    compose: str | None = None  # "docker compose" or "docker-compose", once detected

    @property
    def name(self) -> str:
        return self.remote.name

    def compose_command(self, args: str) -> str:
        if self.compose is None:
            self.compose = detect_compose(self.remote)
        return (
            f"cd {shlex.quote(self.remote_dir)} && "
            f"{self.compose} -p {shlex.quote(self.project)} -f compose.yml {args}"
        )


def detect_compose(remote: Remote) -> str:
    result = remote.run(
        "if docker compose version >/dev/null 2>&1; then echo 'docker compose'; "
        "elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi",
        step="finding docker compose",
    )
    found = result.stdout.decode().strip()
    if not found:
        raise DeployError(
            f"{remote.name}: neither `docker compose` nor `docker-compose` is installed "
            "(the hosts' cloud-init installs the Compose plugin; is it finished?)"
        )
    return found


def wait_docker_ready(target: Target, timeout: float, log: Log) -> None:
    """Wait until ssh answers and Docker runs (fresh EC2 hosts are still in cloud-init)."""
    start = time.monotonic()
    said = False
    while True:
        try:
            target.remote.run(
                "docker info --format '{{.ServerVersion}}'", step="checking Docker", timeout=60
            )
            target.compose = detect_compose(target.remote)
            return
        except DeployError as error:
            if time.monotonic() - start > timeout:
                raise DeployError(
                    f"{error}\n({target.name}: still not ready after {timeout:g}s)"
                ) from None
            if not said:
                log(
                    f"{target.name}: waiting for ssh and Docker (cloud-init may still be "
                    "installing it)..."
                )
                said = True
            time.sleep(5)


def ssh_options(args: argparse.Namespace, inventory: Inventory) -> SshOptions:
    default_port, host_ports = parse_ports(args.ssh_port or [])
    unknown = sorted(set(host_ports) - {host.name for host in inventory.hosts})
    if unknown:
        raise DeployError(f"--ssh-port names unknown host(s): {', '.join(unknown)}")
    key = args.ssh_key or inventory.key_path
    if key is not None and not Path(key).expanduser().is_file():
        raise DeployError(f"ssh key {key} does not exist (pass --ssh-key PATH)")
    pinned = {host.name: host.host_keys for host in inventory.hosts if host.host_keys}
    pinned_file = None
    if pinned:
        state = Path(args.state_file)
        pinned_file = state.parent / f".{state.name}.known_hosts"
        pinned_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(pinned_file, known_hosts(pinned).encode())
    return SshOptions(
        user=args.ssh_user or inventory.ssh_user,
        key=Path(key).expanduser() if key is not None else None,
        port=default_port,
        host_ports=host_ports,
        known_hosts=args.known_hosts,
        connect_timeout=args.connect_timeout,
        pinned_known_hosts=pinned_file,
        trust_on_first_use=bool(getattr(args, "trust_on_first_use", False)),
    )


def in_parallel(items: Sequence[T], work: Callable[[T], R]) -> list[R]:
    """``work`` on every item at once; every failure is reported, not only the first."""
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
        results: list[R] = []
        errors: list[str] = []
        for future in futures:
            try:
                results.append(future.result())
            except DeployError as error:
                errors.append(str(error))
    if errors:
        raise DeployError("\n".join(errors))
    return results
