"""`cl-certs`: the cluster's certificate authority in one command.

    cl-certs ensure --cluster FILE [--dir DIR] [--ca-dir DIR] [--operator NAME]...
    cl-certs init   [--dir DIR] [--ca-dir DIR] [--days N] [--name NAME]
    cl-certs init   --import-cert CA.pem --import-key CA-key.pem [--dir DIR]   (your own CA)
    cl-certs issue  --role node|collector|operator --name NAME [--dir DIR] [--days N]
    cl-certs list   [--dir DIR]
    cl-certs install --dir DIR < BUNDLE      (what `cl-deploy up` runs on each host)
    cl-certs export --dir DIR IDENTITY...    (a bundle on stdout, for `install` elsewhere)

`ensure` is what `make demo`, the compose `certs` service and `cl-deploy up`
run: it creates the CA if there is none and every certificate the cluster
file needs that is missing, expiring within 30 days, or not from this CA;
running it again changes nothing. `issue` always writes a new key and
certificate (rotation). DIR defaults to `tls/` next to the cluster file
for `ensure`, else `tls` (env CL_CERTS_DIR). Exit status 2 on an error,
with one line naming the file and the problem. Keys are never printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from certs import authority
from certs.identity import Identity, IdentityError
from certs.store import (
    CertDir,
    CertStoreError,
    bundle,
    cluster_identities,
    identity_from_directory,
    install_bundle,
)
from common.config import ConfigError, load_cluster


def default_certs_dir(cluster_file: str | os.PathLike[str]) -> Path:
    """Where a cluster's certificates live unless told: `tls/` next to its file."""
    return Path(cluster_file).resolve().parent / "tls"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cl-certs", description="Create the cluster CA and its certificates (mutual TLS)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def dirs(p: argparse.ArgumentParser, default_help: str) -> None:
        p.add_argument("--dir", help=f"certificate directory ({default_help})")
        p.add_argument("--ca-dir", help="where the CA lives (default DIR/ca)")

    ensure = sub.add_parser("ensure", help="create whatever a cluster file needs (idempotent)")
    ensure.add_argument(
        "--cluster",
        default=os.environ.get("CL_CLUSTER_FILE", "cluster.yaml"),
        help="cluster YAML (env CL_CLUSTER_FILE)",
    )
    dirs(ensure, "env CL_CERTS_DIR; default tls/ next to the cluster file")
    ensure.add_argument(
        "--operator",
        action="append",
        default=[],
        help="operator certificate(s) to have (repeatable; default: admin)",
    )
    ensure.add_argument("--days", type=int, default=authority.LEAF_DAYS)
    ensure.add_argument("--quiet", action="store_true", help="print only what changed")

    init = sub.add_parser("init", help="create a new CA, or import your own")
    dirs(init, "env CL_CERTS_DIR; default tls")
    init.add_argument("--days", type=int, default=authority.CA_DAYS)
    init.add_argument("--name", default="chandy-lamport cluster CA", help="CA common name")
    init.add_argument(
        "--import-cert", type=Path, help="your CA's certificate (PEM; may be a chain)"
    )
    init.add_argument("--import-key", type=Path, help="your CA's private key (unencrypted PEM)")

    issue = sub.add_parser("issue", help="issue (or reissue) one certificate")
    dirs(issue, "env CL_CERTS_DIR; default tls")
    issue.add_argument("--role", required=True, choices=("node", "collector", "operator"))
    issue.add_argument("--name", help="node id or operator name (the collector's is collector)")
    issue.add_argument("--days", type=int, default=authority.LEAF_DAYS)
    issue.add_argument("--dns", action="append", default=[], help="extra DNS SAN (repeatable)")

    listing = sub.add_parser("list", help="show every certificate and its expiry")
    dirs(listing, "env CL_CERTS_DIR; default tls")

    install = sub.add_parser("install", help="install a certificate bundle read from stdin")
    dirs(install, "env CL_CERTS_DIR; default tls")

    export = sub.add_parser(
        "export", help="write identity directories (never the CA key) as a bundle to stdout"
    )
    dirs(export, "env CL_CERTS_DIR; default tls")
    export.add_argument(
        "identities", nargs="+", metavar="IDENTITY", help="e.g. operator-admin, node-n1, collector"
    )
    return parser


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _cert_dir(args: argparse.Namespace, fallback: Path) -> CertDir:
    root = args.dir or os.environ.get("CL_CERTS_DIR") or fallback
    return CertDir(root, args.ca_dir)


def run(args: argparse.Namespace) -> int:
    now = _now()
    if args.command == "ensure":
        config = load_cluster(args.cluster)
        store = _cert_dir(args, default_certs_dir(args.cluster))
        identities = cluster_identities(config.node_ids, args.operator)
        _refuse_clashes(identities)
        for action in store.ensure(identities, now, days=args.days):
            if not (args.quiet and action.what == "kept"):
                print(action)
        return 0
    store = _cert_dir(args, Path("tls"))
    if args.command == "init":
        if (args.import_cert is None) != (args.import_key is None):
            raise CertStoreError("--import-cert and --import-key go together")
        if args.import_cert is not None:
            print(store.import_ca(args.import_cert, args.import_key, now))
        else:
            print(store.init_ca(now, args.name, args.days))
        return 0
    if args.command == "issue":
        name = args.name or ("collector" if args.role == "collector" else None)
        if name is None:
            raise CertStoreError(f"--name is required for a {args.role} certificate")
        identity = Identity(args.role, name)
        print(store.issue(identity, now, days=args.days, extra_dns=tuple(args.dns), why="issued"))
        return 0
    if args.command == "export":
        if sys.stdout.isatty():
            raise CertStoreError("export writes private keys: pipe it into `cl-certs install`")
        wanted = [identity_from_directory(name) for name in args.identities]
        sys.stdout.buffer.write(bundle(store, wanted))
        return 0
    if args.command == "install":
        installed = install_bundle(store.root, sys.stdin.buffer.read())
        print(f"installed {', '.join(installed)} into {store.root}")
        return 0
    for row in store.listing(now):
        print("  ".join(row))
    return 0


def _refuse_clashes(identities: Sequence[Identity]) -> None:
    seen: dict[str, Identity] = {}
    for identity in identities:
        other = seen.setdefault(identity.dns_name, identity)
        if other != identity:
            raise CertStoreError(
                f"{other} and {identity} differ only in letter case: "
                "certificates could not tell them apart"
            )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (CertStoreError, ConfigError, IdentityError, authority.AuthorityError) as error:
        print(f"cl-certs: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"cl-certs: error: {error.filename or ''}: {error.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
