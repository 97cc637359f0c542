"""Running commands on hosts with the system ``ssh``/``scp`` binaries.

Every call is non-interactive (``BatchMode=yes``: a missing key fails at once
instead of asking for a password) and accepts only a known host key
(``StrictHostKeyChecking=yes``): the keys pinned in the hosts file (recorded by
``provision`` from the EC2 console, see :mod:`deploy.host_keys`), else the
operator's known_hosts. Trusting a new host's first key (``accept-new``)
happens only with ``--trust-on-first-use``.
A failure becomes a :class:`~deploy.errors.DeployError` that names the host
and the step, with the tail of the remote command's stderr.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.errors import DeployError
from deploy.host_keys import alias
from deploy.hosts import Host

SSH_CONNECTION_FAILED = 255  # what ssh exits with when it could not run the command
STDERR_TAIL = 2000


@dataclass(frozen=True)
class SshOptions:
    """How to log in: user, key, ports (a default and per-host overrides), known_hosts."""

    user: str
    key: Path | None = None
    port: int = 22
    host_ports: Mapping[str, int] = field(default_factory=dict)
    known_hosts: Path | None = None
    connect_timeout: int = 10
    pinned_known_hosts: Path | None = None  # the hosts file's keys, as a known_hosts file
    trust_on_first_use: bool = False

    def port_for(self, host: Host) -> int:
        return self.host_ports.get(host.name, self.port)

    def common(self) -> list[str]:
        options = [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-o",
            "LogLevel=ERROR",
        ]
        if self.key is not None:
            options += ["-i", str(self.key), "-o", "IdentitiesOnly=yes"]
        return options

    def host_key_options(self, host: Host) -> list[str]:
        """Which host key `host` must show: its pinned ones, else a known one (or, with
        trust_on_first_use, any key the first time)."""
        if host.host_keys and self.pinned_known_hosts is not None:
            return [
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                f"HostKeyAlias={alias(host.name)}",
                "-o",
                f"UserKnownHostsFile={self.pinned_known_hosts}",
            ]
        checking = "accept-new" if self.trust_on_first_use else "yes"
        options = ["-o", f"StrictHostKeyChecking={checking}"]
        if self.known_hosts is not None:
            options += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        return options


def parse_ports(values: Sequence[str]) -> tuple[int, dict[str, int]]:
    """``--ssh-port 2222`` sets the default, ``--ssh-port host-1=2201`` one host's port."""
    default, per_host = 22, {}
    for value in values:
        name, sep, raw = value.rpartition("=")
        if not raw.isdigit() or not 0 < int(raw) < 65536 or (sep and not name):
            raise DeployError(f"--ssh-port {value!r}: expected PORT or HOST=PORT")
        if sep:
            per_host[name] = int(raw)
        else:
            default = int(raw)
    return default, per_host


def _tail(data: bytes | str | None) -> str:
    if not data:
        return ""
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    text = text.strip()
    return text[-STDERR_TAIL:]


class Remote:
    """One host reached over ssh."""

    def __init__(self, host: Host, options: SshOptions) -> None:
        self.host = host
        self.options = options

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def login(self) -> str:
        return f"{self.options.user}@{self.host.public_ip}"

    def describe(self) -> str:
        return f"{self.login} port {self.options.port_for(self.host)}"

    def ssh_argv(self, command: str) -> list[str]:
        port = str(self.options.port_for(self.host))
        return [
            "ssh",
            *self.options.common(),
            *self.options.host_key_options(self.host),
            "-p",
            port,
            self.login,
            "--",
            command,
        ]

    def _failure(self, step: str, returncode: int, stderr: bytes | str | None) -> DeployError:
        tail = _tail(stderr)
        if returncode == SSH_CONNECTION_FAILED and "Host key verification failed" in tail:
            pinned = bool(self.host.host_keys and self.options.pinned_known_hosts)
            why = (
                "its ssh host key is not the one recorded in the hosts file (a different "
                "machine, or it was re-created: run `cl-deploy provision` again to re-read it)"
                if pinned
                else "its ssh host key is unknown: the hosts file records none for it; "
                "`cl-deploy provision` records them, or add them to --known-hosts, or pass "
                "--trust-on-first-use to accept the key it shows now"
            )
            return DeployError(
                f"{self.name}: {step}: refused to connect ({self.describe()}): {why}"
            )
        if returncode == SSH_CONNECTION_FAILED:
            return DeployError(
                f"{self.name}: {step}: cannot reach the host over ssh ({self.describe()}): "
                f"{tail or 'ssh exited 255'}\n(check --ssh-key/--ssh-user, that the host is up "
                "and that its ssh port is open to you)"
            )
        detail = f":\n{tail}" if tail else ""
        return DeployError(f"{self.name}: {step} failed (exit {returncode}){detail}")

    def _call(
        self, argv: list[str], *, step: str, timeout: float | None, **kwargs: Any
    ) -> subprocess.CompletedProcess[bytes]:
        """`subprocess.run`, with a timeout or a missing ssh/scp client as a DeployError."""
        try:
            return subprocess.run(argv, timeout=timeout, **kwargs)
        except subprocess.TimeoutExpired:
            raise DeployError(f"{self.name}: {step} timed out after {timeout:g}s") from None
        except FileNotFoundError:
            raise DeployError(f"the `{argv[0]}` client is not installed on this machine") from None

    def run(
        self,
        command: str,
        *,
        step: str,
        input: bytes | None = None,
        timeout: float = 120,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a shell command on the host, capturing its output."""
        result = self._call(
            self.ssh_argv(command),
            step=step,
            timeout=timeout,
            input=input,
            capture_output=True,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if result.returncode == SSH_CONNECTION_FAILED or (check and result.returncode != 0):
            raise self._failure(step, result.returncode, result.stderr)
        return result

    def run_attached(self, command: str, *, step: str, timeout: float | None = None) -> int:
        """Run a command with its output going straight to ours; return its exit status."""
        result = self._call(
            self.ssh_argv(command), step=step, timeout=timeout, stdin=subprocess.DEVNULL
        )
        if result.returncode == SSH_CONNECTION_FAILED:
            raise self._failure(step, result.returncode, None)
        return result.returncode

    def run_with_file(
        self, command: str, path: Path, *, step: str, timeout: float
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a command on the host with a local file as its stdin (``ssh host cmd < file``)."""
        with path.open("rb") as stdin:
            result = self._call(
                self.ssh_argv(command),
                step=step,
                timeout=timeout,
                stdin=stdin,
                capture_output=True,
            )
        if result.returncode != 0:
            raise self._failure(step, result.returncode, result.stderr or result.stdout)
        return result

    def upload(self, files: Mapping[str, bytes], remote_dir: str, *, step: str) -> None:
        """Copy files into ``remote_dir`` with scp, each replaced atomically (upload, then mv)."""
        incoming = f"{remote_dir.rstrip('/')}/.incoming"
        self.run(f"mkdir -p {shlex.quote(incoming)}", step=step)
        with tempfile.TemporaryDirectory(prefix="cl-deploy-") as local:
            paths = []
            for name, data in files.items():
                path = Path(local) / name
                path.write_bytes(data)
                os.chmod(path, 0o644)
                paths.append(str(path))
            host = self.host.public_ip
            if ":" in host:  # IPv6 in scp's host:path syntax
                host = f"[{host}]"
            argv = [
                "scp",
                "-q",
                *self.options.common(),
                *self.options.host_key_options(self.host),
                "-P",
                str(self.options.port_for(self.host)),
                *paths,
                f"{self.options.user}@{host}:{incoming}/",
            ]
            result = self._call(
                argv,
                step=f"{step} (scp)",
                timeout=300,
                capture_output=True,
                stdin=subprocess.DEVNULL,
            )
            if result.returncode != 0:
                raise self._failure(f"{step} (scp)", result.returncode, result.stderr)
        moves = " && ".join(
            f"mv -f {shlex.quote(f'{incoming}/{name}')} {shlex.quote(f'{remote_dir}/{name}')}"
            for name in files
        )
        self.run(f"{moves} && rmdir {shlex.quote(incoming)}", step=step)
