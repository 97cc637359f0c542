"""``cl-deploy up | snapshot | fetch | status | down``: compose on the hosts over ssh.

``up`` places the services on the hosts (:mod:`deploy.plan`), then, on every
host in parallel: waits for ssh and Docker (cloud-init may still be
installing it), finds ``docker compose`` or ``docker-compose``, ships
``compose.yml``, the host's ``cluster.yaml``, a ``.env`` and
``deployment.json`` into ``--remote-dir``, ships the image (``docker save``
once, gzip, ``docker load`` on each host that lacks it; or ``docker build``
there), installs each host's certificates (mutual TLS: the cluster CA lives
here, in ``--certs-dir``, created by ``cl-certs ensure`` if missing; a host
gets only the keys of the services it runs, into its ``certs`` volume), starts
the collector, then every host's nodes (``up -d --no-deps n1 n4``), and waits
until every service is healthy.

``deployment.json`` (the plan, on every host) is what the other commands
read, so they need only the hosts file and ssh options: ``snapshot`` runs the
initiator container on the collector's host, ``fetch`` copies the snapshot
files out of the collector's volume, ``status`` lists every service's
state, ``down`` removes every host's compose project.

Every failure is a :class:`DeployError` naming the host and the step.

Ssh targets and fan-out are :mod:`deploy.targets`, container health
:mod:`deploy.containers`, image shipping :mod:`deploy.images`, and
``deployment.json`` :mod:`deploy.deployment`; this module is the commands and
their arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import shlex
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from certs import identity
from certs.__main__ import default_certs_dir
from certs.store import CertDir, CertStoreError, bundle, cluster_identities
from common.files import atomic_write_bytes
from deploy.cli import SubParsers, add_state_file_option
from deploy.containers import ContainerState, container_states, wait_healthy
from deploy.deployment import MANIFEST, load_deployment, refuse_moves
from deploy.errors import DeployError
from deploy.hosts import load_hosts
from deploy.images import DEFAULT_IMAGE, ship_image_build, ship_image_save
from deploy.plan import (
    COLLECTOR,
    DEFAULT_PROJECT_PREFIX,
    check_compose,
    make_plan,
    manifest,
    parse_assignments,
    project_name,
    render_cluster,
    render_env,
    services_of_cluster,
)
from deploy.ssh import Remote
from deploy.targets import Target, in_parallel, progress, ssh_options, wait_docker_ready

DEFAULT_REMOTE_DIR = "chandy-lamport"


# ------------------------------------------------------------------- up


def read_yaml_file(path: Path, what: str) -> tuple[str, Any]:
    """The text of a local YAML file and what it parses to, or a DeployError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DeployError(f"cannot read {what} {path}: {error.strerror}") from None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise DeployError(f"{what} {path} is not valid YAML: {error}".replace("\n", " ")) from None


def run_up(args: argparse.Namespace) -> int:
    log = progress("up")
    started = time.monotonic()
    inventory = load_hosts(args.state_file)
    options = ssh_options(args, inventory)
    compose_text, compose = read_yaml_file(args.compose, "compose file")
    _, cluster = read_yaml_file(args.cluster, "cluster file")
    services = services_of_cluster(cluster, str(args.cluster))
    check_compose(compose, services, str(args.compose))
    plan = make_plan(
        inventory.hosts, services, parse_assignments(args.assign or []), args.project_prefix
    )
    for host_plan in plan.hosts:
        log(
            f"plan: {host_plan.name} ({host_plan.host.private_ip}) runs "
            f"{' '.join(host_plan.services) or 'nothing'} as project {host_plan.project}"
        )
    targets = {
        hp.name: Target(Remote(hp.host, options), hp.project, args.remote_dir) for hp in plan.hosts
    }
    everyone = list(targets.values())
    document = json.dumps(manifest(plan, args.image), indent=2) + "\n"

    # 1. ssh + Docker + compose on every host.
    in_parallel(everyone, lambda t: wait_docker_ready(t, args.ready_timeout, log))
    refuse_moves(plan, targets, args.remote_dir)

    # 2. configuration files.
    def ship_files(target: Target) -> bool:
        host_plan = plan.host_plan(target.name)
        log(f"{target.name}: shipping compose.yml, cluster.yaml, .env ({target.compose})...")
        cluster_file = f"{target.remote_dir}/cluster.yaml"
        old = target.remote.run(
            f"cat {shlex.quote(cluster_file)} 2>/dev/null",
            step="reading the old cluster.yaml",
            check=False,
        ).stdout
        new = render_cluster(cluster, plan, target.name).encode()
        target.remote.upload(
            {
                "compose.yml": compose_text.encode(),
                "cluster.yaml": new,
                ".env": render_env(plan, host_plan, args.image).encode(),
                MANIFEST: document.encode(),
            },
            target.remote_dir,
            step="shipping files",
        )
        return bool(old) and old != new  # running containers read the old file

    changed = dict(zip(targets, in_parallel(everyone, ship_files), strict=True))

    # 3. the image.
    if args.image_transfer == "save":
        ship_image_save(everyone, args.image, args.always_ship_image, log)
    elif args.image_transfer == "build":
        ship_image_build(everyone, args.image, args.base_image, args.compose.resolve().parent, log)
    else:
        log("image transfer skipped (--image-transfer none)")

    # 3b. certificates: each host gets the keys of its own services only.
    certs = ensure_certs(args.certs_dir or default_certs_dir(args.cluster), services, log)

    def ship_certs(target: Target) -> None:
        own = plan.host_plan(target.name).services
        if not own:
            return
        identities = [identity.collector() if s == COLLECTOR else identity.node(s) for s in own]
        if COLLECTOR in own:  # `cl-deploy snapshot` runs the initiator there
            identities.append(identity.operator())
        log(f"{target.name}: installing certificates of {' '.join(own)}...")
        target.remote.run(
            target.compose_command(f"run --rm --no-deps -T certs cl-certs install --dir {CERTS}"),
            step="installing certificates",
            input=bundle(certs, identities),
            timeout=300,
        )

    in_parallel(everyone, ship_certs)

    # 4. collector first (the nodes report to it), then every host's nodes.
    def start(target: Target, services: Sequence[str]) -> None:
        if not services:
            return
        recreate = " --force-recreate" if changed[target.name] else ""
        why = " (its cluster.yaml changed: recreating)" if recreate else ""
        log(f"{target.name}: starting {' '.join(services)}{why}...")
        target.remote.run(
            target.compose_command(
                f"up -d --no-deps{recreate} {' '.join(shlex.quote(s) for s in services)}"
            ),
            step=f"starting {' '.join(services)}",
            timeout=600,
        )

    collector = targets[plan.collector_host.name]
    start(collector, [COLLECTOR])
    wait_healthy([(collector, [COLLECTOR])], args.health_timeout, log)
    log(f"{collector.name}: collector healthy")

    def start_nodes(target: Target) -> None:
        nodes = [s for s in plan.host_plan(target.name).services if s != COLLECTOR]
        start(target, nodes)

    in_parallel(everyone, start_nodes)
    waited = wait_healthy(
        [(t, plan.host_plan(t.name).services) for t in everyone], args.health_timeout, log
    )
    log(
        f"all {len(plan.placement)} services healthy (health wait {waited:.1f}s, "
        f"total {time.monotonic() - started:.1f}s)"
    )
    print(
        f"deployed {len(plan.placement)} services on {len(plan.hosts)} hosts; "
        f"collector on {collector.name} ({plan.collector_host.host.public_ip})"
    )
    print("next: cl-deploy snapshot   (then: cl-deploy fetch, cl-deploy status, cl-deploy down)")
    return 0


# Where the compose file's `certs` volume is mounted in its `certs` service.
CERTS = "/var/lib/chandy-lamport/certs"


def ensure_certs(directory: Path, services: Sequence[Any], log: Any) -> CertDir:
    """The local certificate directory, with everything the cluster needs (cl-certs ensure)."""
    store = CertDir(directory)
    nodes = [s.name for s in services if s.name != COLLECTOR]
    try:
        actions = store.ensure(cluster_identities(nodes), dt.datetime.now(dt.UTC))
    except CertStoreError as error:
        raise DeployError(f"certificates: {error}") from None
    changed = [a for a in actions if a.what != "kept"]
    for action in changed:
        log(f"certificates: {action}")
    if not changed:
        log(f"certificates: all present in {directory}")
    return store


# ---------------------------------------------- commands after `up`


def run_snapshot(args: argparse.Namespace) -> int:
    log = progress("snapshot")
    deployed = load_deployment(args, "snapshot")
    options = list(args.initiator_args)
    target = deployed.collector
    log(f"{target.name}: running the initiator ({shlex.join(options) or 'defaults'})...")
    code = target.remote.run_attached(
        target.compose_command(
            "run --rm --no-deps -T initiator " + " ".join(shlex.quote(o) for o in options)
        ),
        step="running the initiator",
    )
    log(f"initiator exited {code}")
    return code


SNAPSHOT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.json$")


def snapshot_files(archive: bytes) -> dict[str, bytes]:
    """The top-level ``*.json`` regular files of a tar stream (nothing else is trusted)."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not member.isfile() or "/" in name or not SNAPSHOT_FILE.match(name):
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                files[name] = handle.read()
    return files


def run_fetch(args: argparse.Namespace) -> int:
    log = progress("fetch")
    deployed = load_deployment(args, "fetch")
    target = deployed.collector
    volume = f"{target.project}_snapshots"
    log(f"{target.name}: reading volume {volume}...")
    result = target.remote.run(
        f"docker volume inspect {shlex.quote(volume)} >/dev/null && "
        f"docker run --rm --network none --entrypoint tar "
        f"-v {shlex.quote(volume)}:/snapshots:ro {shlex.quote(deployed.image)} "
        "-C /snapshots -cf - --exclude=./.pending .",
        step=f"reading the snapshot volume {volume}",
        timeout=600,
    )
    files = snapshot_files(result.stdout)
    out: Path = args.out
    latest = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in sorted(files.items()):
            try:
                document = json.loads(data)
            except json.JSONDecodeError:
                log(f"skipping {name}: not JSON")
                continue
            atomic_write_bytes(out / name, data)
            if name == "latest.json":
                latest = document
    except OSError as error:
        raise DeployError(f"cannot write the snapshot files into {out}: {error}") from None
    count = len([n for n in files if n != "latest.json"])
    print(f"fetched {count} snapshot file(s) from {target.name} into {out}/")
    if isinstance(latest, dict):
        verification = latest.get("verification", {})
        ok = verification.get("ok") if isinstance(verification, dict) else None
        print(
            f"latest: {latest.get('snapshot_id')} status={latest.get('status')} "
            f"verified={ok} -> {out / 'latest.json'}"
        )
    elif count == 0:
        print("no snapshot taken yet: run `cl-deploy snapshot`")
    return 0


def run_status(args: argparse.Namespace) -> int:
    deployed = load_deployment(args, "status")
    targets = list(deployed.targets.values())

    def states_of(target: Target) -> dict[str, ContainerState] | str:
        try:
            return container_states(target, step="reading container state")
        except DeployError as error:
            return str(error)

    states = in_parallel(targets, states_of)
    rows = [("HOST", "SERVICE", "STATE", "HEALTH", "RESTARTS")]
    all_ready = True
    for target, found in zip(targets, states, strict=True):
        expected = deployed.services(target.name)
        if isinstance(found, str):
            print(found, file=sys.stderr)
            rows += [(target.name, service, "unreachable", "-", "-") for service in expected]
            all_ready = False
            continue
        for service in expected + sorted(set(found) - set(expected)):
            current = found.get(service)
            if current is None:
                rows.append((target.name, service, "missing", "-", "-"))
                all_ready = False
                continue
            if service in expected and not current.ready:
                all_ready = False
            extra = "" if service in expected else " (not planned here)"
            rows.append(
                (target.name, service + extra, current.state, current.health, str(current.restarts))
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    print(
        f"collector on {deployed.collector.name}; "
        f"{'all services healthy' if all_ready else 'NOT all services healthy'}"
    )
    return 0 if all_ready else 1


def run_down(args: argparse.Namespace) -> int:
    log = progress("down")
    inventory = load_hosts(args.state_file)
    options = ssh_options(args, inventory)
    try:
        deployed = load_deployment(args, "down")
        targets = list(deployed.targets.values())
    except DeployError as error:
        if "no deployment found" not in str(error):
            raise
        targets = [
            Target(Remote(h, options), project_name(args.project_prefix, h.name), args.remote_dir)
            for h in inventory.hosts
        ]

    def down(target: Target) -> None:
        present = target.remote.run(
            f"test -f {shlex.quote(target.remote_dir + '/compose.yml')}",
            step="looking for compose.yml",
            check=False,
        )
        if present.returncode != 0:
            log(f"{target.name}: nothing deployed in {target.remote_dir}/")
            return
        log(f"{target.name}: compose down{' --volumes' if args.volumes else ''}...")
        target.remote.run(
            target.compose_command(
                f"--profile tools down --remove-orphans -t 10{' --volumes' if args.volumes else ''}"
            ),
            step="compose down",
            timeout=300,
        )
        log(f"{target.name}: down")

    in_parallel(targets, down)
    print(
        f"stopped the cluster on {len(targets)} host(s)"
        + (
            "; snapshot volumes removed"
            if args.volumes
            else "; volumes kept (down --volumes removes them)"
        )
    )
    return 0


# -------------------------------------------------------------------- CLI


def _common(parser: argparse.ArgumentParser) -> None:
    add_state_file_option(parser)
    parser.add_argument(
        "--hosts",
        dest="state_file",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="same as --state-file",
    )
    group = parser.add_argument_group("ssh")
    group.add_argument("--ssh-user", help="login user (default: the hosts file's ssh_user)")
    group.add_argument(
        "--ssh-key",
        type=Path,
        metavar="PATH",
        help="private key (default: the hosts file's key_path, else ssh's own)",
    )
    group.add_argument(
        "--ssh-port",
        action="append",
        metavar="[HOST=]PORT",
        help="ssh port for every host (PORT) or one host (HOST=PORT); repeatable (default: 22)",
    )
    group.add_argument(
        "--known-hosts",
        type=Path,
        metavar="PATH",
        help="known_hosts file to use (default: ssh's, ~/.ssh/known_hosts)",
    )
    group.add_argument(
        "--trust-on-first-use",
        action="store_true",
        help="accept the host key a host shows the first time, for hosts whose keys the "
        "hosts file does not record (insecure: a machine in the middle is believed)",
    )
    group.add_argument(
        "--connect-timeout",
        type=int,
        default=10,
        metavar="SECONDS",
        help="ssh connect timeout (default: 10)",
    )
    parser.add_argument(
        "--remote-dir",
        default=DEFAULT_REMOTE_DIR,
        metavar="DIR",
        help="directory on the hosts, relative to the login's home or absolute "
        f"(default: {DEFAULT_REMOTE_DIR})",
    )
    parser.add_argument(
        "--project-prefix",
        default=DEFAULT_PROJECT_PREFIX,
        metavar="NAME",
        help=f"compose project of a host is NAME-<host name> (default: {DEFAULT_PROJECT_PREFIX})",
    )


def register(subparsers: SubParsers) -> None:
    up = subparsers.add_parser(
        "up",
        help="ship compose + config + image to the hosts and start the cluster",
        description="Place the collector and nodes on the hosts, ship compose.yml, a per-host "
        "cluster.yaml and the image over ssh, start each host's services and wait until all "
        "are healthy. Safe to run again.",
    )
    _common(up)
    up.add_argument(
        "--compose",
        type=Path,
        default=Path("compose.yml"),
        metavar="PATH",
        help="compose file to ship (default: compose.yml)",
    )
    up.add_argument(
        "--cluster",
        type=Path,
        default=Path("cluster.yaml"),
        metavar="PATH",
        help="cluster file whose nodes, topology and workload to deploy "
        "(default: cluster.yaml); addresses are rewritten per host",
    )
    up.add_argument(
        "--assign",
        action="append",
        metavar="SERVICE=HOST[,...]",
        help="place services, e.g. n1=host-0,n2=host-1 or collector=host-1 "
        "(default: collector on the first host, nodes round-robin)",
    )
    up.add_argument(
        "--certs-dir",
        type=Path,
        metavar="DIR",
        help="the cluster's CA and certificates (default: tls/ next to the cluster file; "
        "created by cl-certs ensure when missing; keep it, it holds the CA key)",
    )
    up.add_argument("--image", default=DEFAULT_IMAGE, help=f"image (default: {DEFAULT_IMAGE})")
    up.add_argument(
        "--image-transfer",
        choices=("save", "build", "none"),
        default="save",
        help="save: docker save here | docker load there (default); build: docker "
        "build on each host (it needs a registry); none: the hosts have it",
    )
    up.add_argument(
        "--always-ship-image",
        action="store_true",
        help="with save: load the image even where the same image id is present",
    )
    up.add_argument(
        "--base-image",
        default="python:3.11-slim",
        help="BASE_IMAGE build argument with --image-transfer build",
    )
    up.add_argument(
        "--ready-timeout",
        type=float,
        default=600,
        metavar="SECONDS",
        help="wait this long for ssh and Docker on fresh hosts (default: 600)",
    )
    up.add_argument(
        "--health-timeout",
        type=float,
        default=180,
        metavar="SECONDS",
        help="wait this long for every service to be healthy (default: 180)",
    )
    up.set_defaults(handler=run_up)

    snapshot = subparsers.add_parser(
        "snapshot",
        help="run the initiator on the collector's host and print its summary",
        description="Run `compose run --rm initiator` on the collector's host with every "
        "option this command does not know itself passed to cl-initiator as it is (--node, "
        "--snapshot-id, --count, --json, --show, --list, ...); the exit status is the "
        "initiator's (0 complete and verified, 3 aborted, 4 failed verification).",
        # An initiator option must never be taken for an abbreviation of ours.
        allow_abbrev=False,
    )
    _common(snapshot)
    snapshot.set_defaults(initiator_args=[])
    snapshot.set_defaults(handler=run_snapshot)

    fetch = subparsers.add_parser(
        "fetch",
        help="copy the snapshot JSON files from the collector's volume",
        description="Copy every finished snapshot file (and latest.json) from the collector's "
        "volume into --out; each file is written atomically.",
    )
    _common(fetch)
    fetch.add_argument(
        "--out",
        type=Path,
        default=Path("snapshots"),
        metavar="DIR",
        help="local directory (default: snapshots)",
    )
    fetch.set_defaults(handler=run_fetch)

    status = subparsers.add_parser(
        "status",
        help="state and health of every service on every host",
        description="Print host, service, state, health and restarts; exit 0 when every "
        "planned service is running and healthy, 1 otherwise.",
    )
    _common(status)
    status.set_defaults(handler=run_status)

    down = subparsers.add_parser(
        "down",
        help="stop and remove the cluster's containers on every host",
        description="Run `compose down` on every host (the files in --remote-dir stay).",
    )
    _common(down)
    down.add_argument(
        "--volumes",
        action="store_true",
        help="also remove the volumes: snapshot files and node state are lost",
    )
    down.set_defaults(handler=run_down)
