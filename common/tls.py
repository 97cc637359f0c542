"""Mutual TLS for every gRPC connection, and who is on the other end.

Every process has one identity directory (see `certs.store`): `ca.crt` (the
cluster CA, the only one it trusts), `tls.crt` and `tls.key` (its own). Servers
require a client certificate from that CA (`server_credentials`); clients
present theirs and check that the server is the peer they meant to reach
(`channel_credentials` + `channel_options_for`). A peer's identity is read
from its verified certificate (`peer_identity`), never from metadata.

Plaintext exists only for teaching with a packet capture: `--plaintext` /
CL_PLAINTEXT=1, logged loudly at start (`load_tls_settings` returns None).

    tls = load_tls_settings(args.tls_dir, plaintext=args.plaintext, expect=identity.node("n1"))
    port = add_port(server, "127.0.0.1:50051", tls)
    channel = open_channel("n2:50052", tls, "node", "n2")
    who = peer_identity(context)   # PeerIdentity("node", "n2") or None
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import stat
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from certs.identity import Identity, identity_from_uris
from certs.names import CA_CERT, CERT, KEY

# grpc is imported by the functions that make credentials, channels and
# refusals: the settings half of this module is what every CLI parses its
# options with (`--help` included), and a node checks its settings in a
# child process that must fork before grpc is loaded (node/__main__.py).
if TYPE_CHECKING:
    import grpc
    import grpc.aio
    from cryptography import x509

# The identity a verified peer certificate names (role "node" | "collector" |
# "operator"; name: node id, "collector", or the operator's name).
PeerIdentity = Identity

PLAINTEXT_ENV = "CL_PLAINTEXT"
TLS_DIR_ENV = "CL_TLS_DIR"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")


class TlsError(Exception):
    """TLS files that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: str | os.PathLike[str]) -> TlsFiles:
        root = Path(directory)
        return cls(ca=root / CA_CERT, cert=root / CERT, key=root / KEY)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) PEM bytes."""
        return self.ca.read_bytes(), self.cert.read_bytes(), self.key.read_bytes()


# ------------------------------------------------------------------ settings


def plaintext_from_env(environ: Mapping[str, str]) -> bool:
    raw = environ.get(PLAINTEXT_ENV, "").strip().lower()
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise TlsError(f"{PLAINTEXT_ENV}={raw!r} is not one of 1/0, true/false, yes/no, on/off")


def add_tls_options(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """--tls-dir (CL_TLS_DIR) and --plaintext (CL_PLAINTEXT)."""
    parser.add_argument(
        "--tls-dir",
        default=environ.get(TLS_DIR_ENV) or None,
        help="this process's certificate directory: ca.crt, tls.crt, tls.key "
        "(env CL_TLS_DIR; default tls/<identity>/ next to the cluster file, "
        "as `cl-certs ensure` writes it)",
    )
    parser.add_argument(
        "--plaintext",
        action="store_true",
        default=None,
        help="no TLS, no authentication: anyone who reaches a port can move money "
        "(for packet-capture teaching only; env CL_PLAINTEXT=1)",
    )


def default_tls_dir(cluster_file: str | os.PathLike[str], identity: Identity) -> Path:
    return Path(cluster_file).resolve().parent / "tls" / identity.directory


def tls_from_args(
    args: argparse.Namespace,
    identity: Identity,
    environ: Mapping[str, str] | None = None,
    *,
    check: bool = True,
) -> TlsFiles | None:
    """The TLS settings of a CLI with `add_tls_options` and `--cluster`
    (`check`: see `load_tls_settings`)."""
    environ = os.environ if environ is None else environ
    plaintext = args.plaintext if args.plaintext is not None else plaintext_from_env(environ)
    directory = args.tls_dir or default_tls_dir(args.cluster, identity)
    return load_tls_settings(directory, plaintext=plaintext, expect=identity, check=check)


def load_tls_settings(
    tls_dir: str | os.PathLike[str] | None,
    *,
    plaintext: bool = False,
    expect: Identity | None = None,
    now: dt.datetime | None = None,
    check: bool = True,
) -> TlsFiles | None:
    """The checked TLS files in `tls_dir`, or None when plaintext was chosen.

    Refuses (TlsError, one line naming the file and the fix) a missing file, a
    key others can read, a key that is not the certificate's, a certificate
    not from the directory's CA, expired or not yet valid, or naming another
    identity than `expect`.

    `check=False` stops after the cheap checks (the files are there, the key
    is private): the rest parses the certificates with `cryptography`, which
    costs a short-lived CLI more than its snapshot. Such a caller runs the
    full check when a call fails, to say why (the servers verify every
    certificate anyway: skipping this check weakens nothing).
    """
    if plaintext:
        warn_plaintext(str(expect) if expect else "this process")
        return None
    if tls_dir is None:
        raise TlsError("no TLS directory given (--tls-dir or CL_TLS_DIR), and not --plaintext")
    files = TlsFiles.in_dir(tls_dir)
    fix = "create it with `cl-certs ensure --cluster FILE` (see README, Security)"
    for path in (files.ca, files.cert, files.key):
        if not path.is_file():
            raise TlsError(f"{path}: missing; {fix}")
    mode = files.key.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TlsError(
            f"{files.key}: private key readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {files.key}"
        )
    if not check:
        return files
    try:
        ca_pem, cert_pem, key_pem = files.read()
    except OSError as error:
        raise TlsError(f"{error.filename}: cannot read: {error.strerror}") from error
    # Imported here: ~10 MB and ~40 ms that a process pays only to check its files.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as error:
        raise TlsError(f"{files.ca}: not a PEM certificate") from error
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as error:
        raise TlsError(f"{files.cert}: not a PEM certificate") from error
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise TlsError(f"{files.key}: not an unencrypted PEM private key") from error
    from certs.authority import identity_of, signed_by

    if key.public_key() != cert.public_key():
        raise TlsError(f"{files.key}: this key does not belong to {files.cert}")
    if not any(signed_by(cert, ca) for ca in cas):
        raise TlsError(f"{files.cert}: not issued by the CA in {files.ca}; {fix}")
    who = identity_of(cert)
    if who is None:
        raise TlsError(f"{files.cert}: names no chandy-lamport identity; {fix}")
    if expect is not None and who != expect:
        raise TlsError(f"{files.cert}: certificate of {who}, but this process is {expect}")
    now = now or dt.datetime.now(dt.UTC)
    check_validity(cert, files.cert, now)
    for ca, path in ((c, files.ca) for c in cas):
        check_validity(ca, path, now)
    return files


def check_validity(cert: x509.Certificate, path: Path, now: dt.datetime) -> None:
    """Refuse an expired or not-yet-valid certificate, naming the date."""
    renew = "renew it with `cl-certs ensure --cluster FILE` (see README, Security)"
    if now >= cert.not_valid_after_utc:
        raise TlsError(
            f"{path}: certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC; "
            + renew
        )
    if now < cert.not_valid_before_utc:
        raise TlsError(
            f"{path}: certificate not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC (check this machine's clock)"
        )


_warned: set[str] = set()


def warn_plaintext(who: str) -> None:
    """One loud line per process and identity: nothing is authenticated."""
    if who in _warned:
        return
    _warned.add(who)
    message = (
        "PLAINTEXT gRPC: mutual TLS is OFF (--plaintext / CL_PLAINTEXT). Nothing is "
        "encrypted or authenticated: anyone who can reach a port can forge transfers, "
        "reports and snapshots. Use only to teach the protocol with a packet capture."
    )
    # structlog only if the process already uses it (a CLI need not import it).
    structlog = sys.modules.get("structlog")
    if structlog is not None and structlog.is_configured():
        structlog.get_logger("tls").warning(message, identity=who)
    else:
        print(f"WARNING: {message}", file=sys.stderr)


# --------------------------------------------------------------- credentials


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """Server side: our certificate; clients must present one from our CA."""
    import grpc

    ca, cert, key = tls.read()
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """Client side: our certificate, and only our CA is trusted for the server."""
    import grpc

    ca, cert, key = tls.read()
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def channel_options_for(role: str, name: str) -> list[tuple[str, str]]:
    """Client options that make TLS check the server is `role` `name` (its DNS SAN)."""
    return [("grpc.ssl_target_name_override", Identity(role, name).dns_name)]


class _Server(Protocol):
    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int: ...
    def add_insecure_port(self, address: str) -> int: ...


def add_port(
    server: grpc.Server | grpc.aio.Server | _Server, address: str, tls: TlsFiles | None
) -> int:
    """Listen on `address` with mutual TLS (plaintext when `tls` is None); returns the port."""
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(tls))


def open_channel(
    address: str,
    tls: TlsFiles | None,
    role: str,
    name: str,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A blocking-API channel to `role` `name` at `address`."""
    import grpc

    if tls is None:
        return grpc.insecure_channel(address, options=list(options))
    return grpc.secure_channel(
        address, channel_credentials(tls), options=[*options, *channel_options_for(role, name)]
    )


def open_aio_channel(
    address: str,
    tls: TlsFiles | None,
    role: str,
    name: str,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to `role` `name` at `address`."""
    import grpc.aio

    if tls is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    return grpc.aio.secure_channel(
        address, channel_credentials(tls), options=[*options, *channel_options_for(role, name)]
    )


# ------------------------------------------------------------------ identity


def peer_identity(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> PeerIdentity | None:
    """Who the verified client certificate of this call names; None without one.

    Works with grpc and grpc.aio servicer contexts (both have auth_context()).
    On a plaintext server there is no certificate, hence None.
    """
    auth = context.auth_context()
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    # gRPC puts the verified certificate's SAN URIs here: the same list that
    # certs.authority.identity_of reads from the parsed certificate, without
    # parsing it again per call (and without importing cryptography).
    uris = auth.get("peer_uri")
    if not uris or not auth.get("x509_pem_cert"):
        return None
    return _identity_of_uris(tuple(bytes(uri) for uri in uris))


@functools.lru_cache(maxsize=512)
def _identity_of_uris(uris: tuple[bytes, ...]) -> PeerIdentity | None:
    try:
        return identity_from_uris([uri.decode("ascii") for uri in uris])
    except UnicodeDecodeError:
        return None


def refusal(
    peer: PeerIdentity | None,
    roles: Collection[str],
    name: str | None = None,
    *,
    tls: bool = True,
) -> tuple[grpc.StatusCode, str] | None:
    """Why a call from `peer` is not allowed (status code, message), or None if it is.

    `roles`: the roles that may make the call; `name`: the name the peer must
    have (a Channel stream for sender n2 only from node n2). On a plaintext
    server (`tls=False`) every call is allowed: there is nobody to check.
    """
    import grpc

    if not tls:
        return None
    if peer is None:
        return grpc.StatusCode.UNAUTHENTICATED, "no cluster client certificate"
    if peer.role not in roles:
        allowed = " or ".join(sorted(roles))
        return grpc.StatusCode.PERMISSION_DENIED, f"{peer} may not make this call (only {allowed})"
    if name is not None and peer.name != name:
        return grpc.StatusCode.PERMISSION_DENIED, f"{peer} may not speak for {peer.role} {name}"
    return None


class RefusalLog:
    """Logs each kind of refused call once (who, what, why), then only counts it.

    A stranger hammering a port must not flood the log; the first refusal of
    each (peer, method, code) is logged with the detail, later ones every
    power of ten ("refused 100 times"). At most `limit` kinds are tracked.
    """

    def __init__(self, logger: Any, limit: int = 4096) -> None:
        self.log = logger
        self.limit = limit
        self._counts: dict[tuple[str, str, str], int] = {}

    def refused(
        self,
        peer: PeerIdentity | None,
        method: str,
        code: grpc.StatusCode,
        detail: str,
        **fields: Any,
    ) -> int:
        """Record one refusal; returns how many of this kind there were so far."""
        key = (str(peer) if peer else "unauthenticated", method, code.name)
        count = self._counts.get(key, 0) + 1
        if count == 1 and len(self._counts) >= self.limit:
            self._counts.clear()  # bounded memory; the next of each kind is logged again
        self._counts[key] = count
        if count == 1 or (count >= 10 and str(count).rstrip("0") == "1"):
            self.log.warning(
                "call refused",
                peer=key[0],
                method=method,
                code=code.name,
                reason=detail,
                times=count,
                **fields,
            )
        return count
