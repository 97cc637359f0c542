#!/usr/bin/env python3
"""`make up` / `make down` / `make down-v`: the stack on any Docker host.

    python3 scripts/stack.py up [--compose v1|v2] [-p PROJECT] [--timeout S] [--no-build]
    python3 scripts/stack.py down [-v] [--compose v1|v2] [-p PROJECT]

Standard library only, so that it runs on a fresh clone before any venv exists.

`up` does what a new user would otherwise have to piece together:
  1. picks a Compose: the v2 plugin (`docker compose`, or the private one that
     scripts/install-compose-v2.sh puts under build/docker-config), else v1
     (`docker-compose`); `--compose` or CL_COMPOSE=v1|v2 chooses;
  2. builds chandy-lamport:latest: with `compose build` when a container
     registry answers within a few seconds, else with scripts/build-image.sh
     (a Debian-built base image and wheels downloaded on the host), which
     records its choice in build/host.env;
  3. starts the stack (`up -d`) and waits until the one-shot `certs` service
     exited 0 and every other service is healthy (`up --wait` on v2; its own
     polling on v1, which has no --wait); a service that exits or turns
     unhealthy ends the wait at once with its last log lines;
  4. writes build/host/cluster.yaml (the published ports) with the operator
     certificate next to it, for a host-side cl-initiator, and prints the
     next commands.
Exit status: 0 up and healthy, 1 something failed (the message says what), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
PRIVATE_DOCKER_CONFIG = BUILD / "docker-config"
HOST_DIR = Path(os.environ.get("CL_HOST_DIR") or BUILD / "host")  # tests point it elsewhere
IMAGE = os.environ.get("CL_IMAGE", "chandy-lamport:latest")
REGISTRY_HOST = "registry-1.docker.io"
ONE_SHOT = {"certs"}  # services that are done when they exited 0
TOOLS = {"initiator"}  # profile "tools": never started by `up`


class StackError(Exception):
    """Something the user must fix; the message says what."""


@dataclass(frozen=True)
class Compose:
    """One way of running Compose on this host."""

    kind: str  # "v1" | "v2"
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    version: str = ""

    @property
    def shown(self) -> str:
        """The command as a user types it."""
        prefix = " ".join(f"{k}={_relative(v)}" for k, v in self.env.items())
        return f"{prefix} {' '.join(self.argv)}".strip()


def _relative(value: str) -> str:
    try:
        return str(Path(value).relative_to(Path.cwd()))
    except ValueError:
        return value


def _run(
    argv: list[str], *, env: dict[str, str] | None = None, timeout: float | None = 60,
    capture: bool = True, check: bool = False, stdin: bytes | None = None,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full_env = dict(os.environ, **(env or {}))
    try:
        result = subprocess.run(
            argv, cwd=ROOT, env=full_env, timeout=timeout, text=True,
            capture_output=capture, input=stdin.decode() if stdin is not None else None,
        )  # fmt: skip
    except FileNotFoundError:
        raise StackError(f"{argv[0]}: not found") from None
    except subprocess.TimeoutExpired:
        raise StackError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()[-5:] if capture else []
        raise StackError(
            f"`{' '.join(argv)}` exited {result.returncode}" + "".join(f"\n  {d}" for d in detail)
        )
    return result


# --------------------------------------------------------------- which Compose


def _version(argv: list[str], env: dict[str, str]) -> str | None:
    # Generous: docker-compose 1.29 is a Python program, slow to start on a busy host.
    try:
        result = _run([*argv, "version", "--short"], env=env, timeout=120)
    except StackError:
        return None
    return result.stdout.strip().lstrip("v") if result.returncode == 0 else None


def find_composes(wanted: str | None = None) -> list[Compose]:
    """Every Compose usable here (only of kind `wanted`, if given), best first:
    v2 (system, then private), then docker-compose (usually v1)."""
    found: list[Compose] = []
    if wanted in (None, "v2"):
        version = _version(["docker", "compose"], {})
        if version:
            found.append(Compose("v2", ("docker", "compose"), {}, version))
        plugin = PRIVATE_DOCKER_CONFIG / "cli-plugins" / "docker-compose"
        if not found and plugin.exists():
            env = {"DOCKER_CONFIG": str(PRIVATE_DOCKER_CONFIG)}
            version = _version(["docker", "compose"], env)
            if version:
                found.append(Compose("v2", ("docker", "compose"), env, version))
    if (wanted is None or wanted == "v1" or not found) and shutil.which("docker-compose"):
        version = _version(["docker-compose"], {})
        if version:  # a standalone docker-compose may be v2 too
            kind = "v1" if version.startswith("1.") else "v2"
            found.append(Compose(kind, ("docker-compose",), {}, version))
    return found


def choose_compose(wanted: str | None) -> Compose:
    if wanted == "auto":
        wanted = None
    composes = find_composes(wanted)
    if not composes:
        raise StackError(
            "no Compose found: install the Docker Compose plugin (`docker compose`) or "
            "docker-compose, or run `make compose-v2` for a private v2 plugin"
        )
    if not wanted:
        return composes[0]
    for compose in composes:
        if compose.kind == wanted:
            return compose
    have = ", ".join(f"{c.kind} ({c.shown} {c.version})" for c in composes)
    hint = " (`make compose-v2` installs a private one)" if wanted == "v2" else ""
    raise StackError(f"Compose {wanted} is not installed{hint}; found: {have}")


# -------------------------------------------------------------------- the image


def registry_reachable(timeout: float = 3.0) -> bool:
    """Does Docker Hub's registry answer a TCP connection within `timeout`?

    A quick probe only: on a host without a registry, `docker pull` or
    `compose build` would otherwise spend their own timeouts failing."""
    outcome: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((REGISTRY_HOST, 443), timeout=timeout):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])


def build_image(compose: Compose, base: list[str]) -> str:
    """Build IMAGE by whichever path works here; returns how."""
    if registry_reachable():
        say(f"building {IMAGE} with `{compose.shown} build` (a registry is reachable)")
        result = _run([*base, "build"], env=compose.env, timeout=1800, capture=False)
        if result.returncode == 0:
            return "compose build"
        say("compose build failed: trying scripts/build-image.sh instead")
        script = ["bash", "scripts/build-image.sh"]
    else:
        say(f"no registry reachable ({REGISTRY_HOST}): building {IMAGE} with "
            "scripts/build-image.sh (Debian base image, wheels from the host)")  # fmt: skip
        script = ["bash", "scripts/build-image.sh", "--no-pull"]
    result = _run(script, env={"IMAGE": IMAGE}, timeout=3600, capture=False)
    if result.returncode != 0:
        raise StackError(f"scripts/build-image.sh failed (exit {result.returncode}); see above")
    return "scripts/build-image.sh"


# --------------------------------------------------------------------- waiting


@dataclass(frozen=True)
class ServiceState:
    service: str
    container: str
    status: str  # created | running | restarting | exited | dead | ...
    exit_code: int
    health: str  # healthy | unhealthy | starting | "" (no healthcheck)
    restarts: int

    @property
    def done(self) -> bool:
        if self.service in ONE_SHOT:
            return self.status == "exited" and self.exit_code == 0
        return self.status == "running" and self.health in ("healthy", "")

    @property
    def failed(self) -> bool:
        if self.service in ONE_SHOT:
            return self.status in ("exited", "dead") and self.exit_code != 0
        return self.status in ("exited", "dead", "restarting") or self.health == "unhealthy"

    def describe(self) -> str:
        text = f"{self.status} (exit {self.exit_code})" if self.status != "running" else "running"
        if self.health:
            text += f", {self.health}"
        if self.restarts:
            text += f", restarted {self.restarts}x"
        return text


def service_states(project: str) -> dict[str, ServiceState]:
    """The project's service containers (not `run` one-offs), read from Docker."""
    ids = _run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        check=True,
    ).stdout.split()
    if not ids:
        return {}
    states: dict[str, ServiceState] = {}
    for item in json.loads(_run(["docker", "inspect", *ids], check=True).stdout):
        labels = item["Config"].get("Labels") or {}
        if labels.get("com.docker.compose.oneoff", "False") == "True":
            continue
        state = item["State"]
        service = labels.get("com.docker.compose.service", item["Name"])
        states[service] = ServiceState(
            service,
            item["Id"],
            state.get("Status", "?"),
            int(state.get("ExitCode", 0)),
            (state.get("Health") or {}).get("Status", ""),
            int(item.get("RestartCount", 0)),
        )
    return states


def wait_ready(
    project: str, expected: set[str], timeout: float, up: subprocess.Popen[bytes] | None = None
) -> float:
    """Poll until every expected service is done (and `up`, if given, has exited 0).

    Runs beside `up` itself: a service that exits, restarts or turns unhealthy
    ends the wait at once (NotReady naming it), instead of after compose's own
    timeouts. Restarts count from the first look, so a restart left over from
    an earlier run is not held against this one."""
    start = time.monotonic()
    baseline: dict[str, tuple[str, int]] = {}
    while True:
        states = service_states(project)
        for state in states.values():
            baseline.setdefault(state.service, (state.container, state.restarts))
        failed = [
            s for s in states.values()
            if s.failed or s.restarts > _restarts_before(baseline, s)
        ]  # fmt: skip
        if failed:
            raise NotReady(failed, states)
        up_status = None if up is None else up.poll()
        pending = [s for s in states.values() if not s.done]
        if up_status not in (None, 0):
            raise NotReady(pending, states, f"`up` exited {up_status}")
        if not (expected - states.keys()) and not pending and (up is None or up_status == 0):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise NotReady(pending, states, f"not ready after {timeout:.0f} s")
        time.sleep(1)


def _restarts_before(baseline: dict[str, tuple[str, int]], state: ServiceState) -> int:
    container, restarts = baseline[state.service]
    return restarts if container == state.container else 0


class NotReady(StackError):
    def __init__(
        self, culprits: list[ServiceState], states: dict[str, ServiceState], why: str = ""
    ) -> None:
        self.culprits, self.states = culprits, states
        names = ", ".join(f"{s.service}: {s.describe()}" for s in culprits)
        super().__init__(f"{why + ': ' if why else ''}{names}")


def explain_failure(compose: Compose, base: list[str], error: NotReady | None) -> str:
    """The failed services with their last log lines (a config error's one line)."""
    states = error.states if error else {}
    culprits = error.culprits if error else []
    if not culprits:  # v2's --wait failed: find out who from Docker
        culprits = [s for s in states.values() if s.failed or not s.done]
    lines: list[str] = []
    for state in sorted(culprits, key=lambda s: s.service):
        lines.append(f"{state.service}: {state.describe()}; last log lines:")
        try:
            logs = _run(
                [*base, "logs", "--no-color", "--tail", "4", state.service],
                env=compose.env, timeout=180,
            )  # fmt: skip
            output = logs.stdout
        except StackError as error:  # a slow `logs` must not hide the other services
            output = f"({error})"
        tail = [line.split("|", 1)[-1].strip() for line in output.strip().splitlines()[-4:]]
        lines += [f"    {line}" for line in tail]
        # cl-node's exit 78; a restarted container no longer shows the status itself.
        if state.exit_code == 78 or any("data dir /data" in line for line in tail):
            lines.append(
                "  (cl-node exit 78: its volume holds a data dir of another cluster or "
                "topology; `make down-v` deletes the volumes)"
            )
    return "\n".join(lines)


# ----------------------------------------------------------- host-side access


def published(compose: Compose, base: list[str], service: str, port: int) -> str | None:
    result = _run([*base, "port", service, str(port)], env=compose.env, timeout=30)
    address = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or not address or address.endswith(":0"):
        return None
    return address.replace("0.0.0.0:", "127.0.0.1:")


def write_host_cluster(compose: Compose, base: list[str]) -> Path | None:
    """build/host/cluster.yaml: cluster.yaml with the published addresses, plus the
    operator certificate in build/host/tls/operator-admin/ (where cl-initiator looks)."""
    text = (ROOT / "cluster.yaml").read_text()
    replacements: dict[str, str] = {}
    for match in re.finditer(r'(?m)^\s*-\s*\{id:\s*([\w.-]+),\s*address:\s*"?([^",}]+)"?', text):
        node, address = match.group(1), match.group(2)
        host_address = published(compose, base, node, int(address.rsplit(":", 1)[1]))
        if host_address is None:
            return None
        replacements[address] = host_address
    collector = re.search(r"(?m)^collector:\s*(\S+)", text)
    if not replacements or collector is None:
        return None
    collector_port = int(collector.group(1).rsplit(":", 1)[1])
    host_collector = published(compose, base, "collector", collector_port)
    if host_collector is None:
        return None
    text = text.replace(f"collector: {collector.group(1)}", f"collector: {host_collector}", 1)
    for old, new in replacements.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    bundle = _run(
        [*base, "run", "--rm", "-T", "certs", "cl-certs", "export",
         "--dir", "/var/lib/chandy-lamport/certs", "operator-admin"],
        env=compose.env, timeout=120,
    )  # fmt: skip
    if bundle.returncode != 0:
        return None
    HOST_DIR.mkdir(parents=True, exist_ok=True)
    header = "# Written by `make up`: cluster.yaml with the ports compose published on this host.\n"
    (HOST_DIR / "cluster.yaml").write_text(header + text)
    install_bundle(HOST_DIR / "tls", bundle.stdout)
    return HOST_DIR / "cluster.yaml"


def install_bundle(root: Path, data: str) -> None:
    """A `cl-certs export` bundle (JSON of identity-dir/file -> PEM text), keys 0600."""
    files = json.loads(data)["files"]
    for relative, content in files.items():
        directory, _, name = relative.partition("/")
        if not re.fullmatch(r"[a-z]+(-[\w.-]+)?", directory) or "/" in name or name.startswith("."):
            raise StackError(f"certificate bundle: unexpected file {relative!r}")
        target = root / directory / name
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(target.parent, 0o700)
        tmp = target.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.replace(tmp, target)


# ---------------------------------------------------------------------- commands


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def default_project() -> str:
    """Compose's own default: COMPOSE_PROJECT_NAME, else the directory's name."""
    name = os.environ.get("COMPOSE_PROJECT_NAME") or ROOT.name
    return re.sub(r"[^-_a-z0-9]", "", name.lower()).lstrip("-_")


def compose_base(compose: Compose, project: str, extra_files: list[str] | None = None) -> list[str]:
    files = [str(ROOT / "compose.yml"), *(extra_files or [])]
    return [*compose.argv, "-p", project, *(arg for f in files for arg in ("-f", f))]


def up(args: argparse.Namespace) -> int:
    compose = choose_compose(args.compose)
    project = args.project or default_project()
    base = compose_base(compose, project, args.file)
    say(f"Compose {compose.kind}: {compose.shown} ({compose.version}); project {project}")
    started = time.monotonic()
    if args.no_build and _run(["docker", "image", "inspect", IMAGE]).returncode == 0:
        say(f"using the existing {IMAGE} (--no-build)")
    else:
        build_image(compose, base)

    expected = {"certs", "collector"} | set(
        re.findall(r"(?m)^\s*-\s*\{id:\s*([\w.-]+),", (ROOT / "cluster.yaml").read_text())
    )
    up_argv = [*base, "up", "-d", "--no-build", "--remove-orphans"]
    if compose.kind == "v2":
        up_argv.append("--wait")
    say(f"starting: {' '.join(up_argv[len(compose.argv):])}")
    # v2's --wait and our own polling side by side; v1 has no --wait, so there
    # the polling is the wait. Whichever sees a failure first ends it.
    up_process = subprocess.Popen(up_argv, cwd=ROOT, env=dict(os.environ, **compose.env))
    try:
        waited = wait_ready(project, expected, args.timeout, up_process)
    except NotReady as error:
        if up_process.poll() is None:
            up_process.terminate()
        up_process.wait()
        print(f"make up: the stack did not come up ({error})", file=sys.stderr)
        print(explain_failure(compose, base, error), file=sys.stderr)
        print("Fix it, then `make up` again; `make down` stops what started.", file=sys.stderr)
        return 1
    total = time.monotonic() - started
    host_cluster = write_host_cluster(compose, base)
    dashboard = published(compose, base, "collector", 8080)
    say(f"healthy {waited:.0f} s after `up` began")
    print_next_steps(compose, project, total, dashboard, host_cluster)
    return 0


def print_next_steps(
    compose: Compose, project: str, total: float, dashboard: str | None, host_cluster: Path | None,
) -> None:  # fmt: skip
    c = compose.shown
    if project != default_project():
        c += f" -p {shlex.quote(project)}"
    exec_t = "exec -T" if compose.kind == "v1" else "exec"
    lines = [
        "",
        f"chandy-lamport is up: collector + nodes healthy ({total:.0f} s in all; "
        f"Compose {compose.kind} {compose.version}, project {project}).",
        "",
        f"  take a snapshot:   {c} run --rm initiator",
        f"  read its JSON:     {c} {exec_t} collector cat /snapshots/latest.json",
    ]
    if dashboard:
        lines.append(f"  dashboard:         http://{dashboard}/")
    if host_cluster:
        lines.append(
            f"  from the host:     cl-initiator --cluster {_relative(str(host_cluster))}"
            "   (after `make cli`: .venv-cli/bin/cl-initiator)"
        )
    lines += [
        "  stop:              make down    (make down-v also deletes the volumes)",
        "",
    ]
    print("\n".join(lines), flush=True)


def down(args: argparse.Namespace) -> int:
    compose = choose_compose(args.compose)
    project = args.project or default_project()
    argv = [*compose_base(compose, project, args.file), "--profile", "tools", "down"]
    argv.append("--remove-orphans")
    if args.volumes:
        argv.append("-v")
    say(f"{' '.join(argv[len(compose.argv):])} ({compose.shown})")
    result = _run(argv, env=compose.env, timeout=300, capture=False)
    if result.returncode == 0 and args.volumes:
        for path in (HOST_DIR / "tls", HOST_DIR / "cluster.yaml"):
            _remove(path)  # its certificates belonged to the CA in the deleted volume
    return 0 if result.returncode == 0 else 1


def _remove(path: Path) -> None:
    if path.is_dir():
        for child in sorted(path.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        path.rmdir()
    elif path.exists():
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/stack.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down"):
        command = sub.add_parser(name)
        command.add_argument(
            "--compose", choices=("v1", "v2", "auto"), default=os.environ.get("CL_COMPOSE") or None,
            help="which Compose (env CL_COMPOSE; default: v2 if installed, else v1)",
        )  # fmt: skip
        command.add_argument("-p", "--project", help="compose project name (default: compose's)")
        command.add_argument(
            "-f", "--file", action="append", default=[], help="an override file after compose.yml"
        )
    sub.choices["up"].add_argument("--timeout", type=float, default=180, help="seconds to wait")
    sub.choices["up"].add_argument("--no-build", action="store_true", help="reuse the image")
    sub.choices["down"].add_argument("-v", "--volumes", action="store_true", help="delete volumes")
    args = parser.parse_args(argv)
    try:
        if _run(["docker", "info"], timeout=30).returncode != 0:
            raise StackError("cannot talk to the Docker engine (`docker info` fails)")
        return up(args) if args.command == "up" else down(args)
    except StackError as error:
        print(f"make {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
