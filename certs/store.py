"""Certificate directories on disk: one sub-directory per identity.

    DIR/ca/ca.crt, DIR/ca/ca.key      the CA (the key stays on the operator's machine)
    DIR/collector/{ca.crt,tls.crt,tls.key}
    DIR/node-<id>/{ca.crt,tls.crt,tls.key}
    DIR/operator-<name>/{ca.crt,tls.crt,tls.key}

A process is pointed at one identity directory (`--tls-dir`, CL_TLS_DIR):
`ca.crt` is the trust anchor, `tls.crt`/`tls.key` its own certificate and key.
Private keys are written atomically with mode 0600 (created that way, never
widened) and are never printed or logged. The CA may live in a directory of
its own (`ca_dir`), e.g. a volume only the one-shot certs job mounts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs import authority
from certs.authority import AuthorityError, Issued
from certs.identity import Identity, collector, node, operator
from certs.names import CA_CERT, CA_KEY, CERT, KEY
from common.files import atomic_write_bytes, fsync_dir


class CertStoreError(Exception):
    """A certificate directory that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Action:
    identity: Identity | None  # None: the CA
    path: Path
    what: str  # "created", "reissued (<why>)", "kept"

    def __str__(self) -> str:
        subject = "CA" if self.identity is None else str(self.identity)
        return f"{subject}: {self.what} ({self.path})"


def write_private(path: Path, data: bytes) -> None:
    """Atomically write a secret: the temp file is created 0600 and stays so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def key_pem(key: authority.CaKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def read_cert(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CertStoreError(f"{path}: cannot read certificate: {error.strerror}") from error
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as error:
        raise CertStoreError(f"{path}: not a PEM certificate") from error


def read_certs(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (a CA file may hold a chain)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CertStoreError(f"{path}: cannot read certificate: {error.strerror}") from error
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise CertStoreError(f"{path}: not a PEM certificate") from error
    return certs


def read_key(path: Path) -> object:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CertStoreError(f"{path}: cannot read private key: {error.strerror}") from error
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        # Never echo the content: it is a secret, even when broken.
        raise CertStoreError(
            f"{path}: not an unencrypted PEM private key (encrypted CA keys are not supported)"
        ) from error


class CertDir:
    """The certificate directory `root` (CA under `ca_dir`, default `root/ca`)."""

    def __init__(self, root: str | os.PathLike[str], ca_dir: str | os.PathLike[str] | None = None):
        self.root = Path(root)
        self.ca_dir = Path(ca_dir) if ca_dir is not None else self.root / "ca"

    @property
    def ca_cert_path(self) -> Path:
        return self.ca_dir / CA_CERT

    @property
    def ca_key_path(self) -> Path:
        return self.ca_dir / CA_KEY

    def identity_dir(self, identity: Identity) -> Path:
        return self.root / identity.directory

    def has_ca(self) -> bool:
        return self.ca_cert_path.exists() or self.ca_key_path.exists()

    def load_ca(self, now: dt.datetime) -> Issued:
        if not self.ca_cert_path.exists():
            raise CertStoreError(
                f"{self.ca_cert_path}: no CA here: run `cl-certs init --dir {self.root}` first"
            )
        certs = read_certs(self.ca_cert_path)
        key = read_key(self.ca_key_path)
        try:
            authority.check_ca(certs[0], key, now)
        except AuthorityError as error:
            raise CertStoreError(f"{self.ca_cert_path}: {error}") from error
        return Issued(certs[0], key)  # type: ignore[arg-type]

    def init_ca(self, now: dt.datetime, name: str, days: int) -> Action:
        if self.has_ca():
            raise CertStoreError(
                f"{self.ca_dir}: a CA already exists; delete the directory to start over "
                "(every certificate it issued stops working)"
            )
        self.ca_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):  # a mount point we do not own
            os.chmod(self.ca_dir, 0o700)
        ca = authority.make_ca(now, name=name, days=days)
        write_private(self.ca_key_path, key_pem(ca.key))
        write_public(self.ca_cert_path, cert_pem(ca.cert))
        return Action(None, self.ca_cert_path, "created")

    def import_ca(self, cert_path: Path, key_path: Path, now: dt.datetime) -> Action:
        """Bring your own CA: copy (and check) its certificate (or chain) and key."""
        if self.has_ca():
            raise CertStoreError(f"{self.ca_dir}: a CA already exists; refusing to replace it")
        certs = read_certs(cert_path)
        key = read_key(key_path)
        try:
            authority.check_ca(certs[0], key, now)
        except AuthorityError as error:
            raise CertStoreError(f"{cert_path}: {error}") from error
        self.ca_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):  # a mount point we do not own
            os.chmod(self.ca_dir, 0o700)
        write_private(self.ca_key_path, key_pem(key))  # type: ignore[arg-type]
        write_public(self.ca_cert_path, b"".join(cert_pem(cert) for cert in certs))
        return Action(None, self.ca_cert_path, "imported")

    def issue(
        self,
        identity: Identity,
        now: dt.datetime,
        days: int = authority.LEAF_DAYS,
        extra_dns: tuple[str, ...] = (),
        ca: Issued | None = None,
        why: str = "created",
    ) -> Action:
        """(Re)issue `identity`'s certificate and key, and copy the CA next to them."""
        ca = ca or self.load_ca(now)
        try:
            issued = authority.issue(ca, identity, now, days=days, extra_dns=extra_dns)
        except AuthorityError as error:
            raise CertStoreError(f"{self.ca_cert_path}: {error}") from error
        directory = self.identity_dir(identity)
        directory.mkdir(parents=True, exist_ok=True)
        # Key first: a crash in between leaves a key without its certificate,
        # which `ensure` reissues; never a certificate whose key is another.
        write_private(directory / KEY, key_pem(issued.key))
        write_public(directory / CERT, cert_pem(issued.cert))
        write_public(directory / CA_CERT, self.ca_cert_path.read_bytes())
        return Action(identity, directory, why)

    def problem(self, identity: Identity, ca: x509.Certificate, now: dt.datetime) -> str | None:
        """Why `identity`'s files must be (re)issued, or None when they are fine."""
        directory = self.identity_dir(identity)
        for name in (CERT, KEY, CA_CERT):
            if not (directory / name).exists():
                return "missing" if name == CERT else f"{name} missing"
        try:
            cert = read_cert(directory / CERT)
            key = read_key(directory / KEY)
        except CertStoreError as error:
            return str(error).split(": ", 1)[-1]
        if getattr(key, "public_key", lambda: None)() != cert.public_key():
            return "the key does not belong to the certificate"
        if (directory / CA_CERT).read_bytes() != self.ca_cert_path.read_bytes():
            return "its ca.crt is not this CA"
        return authority.problems_with(cert, ca, identity, now)

    def ensure(
        self,
        identities: Iterable[Identity],
        now: dt.datetime,
        days: int = authority.LEAF_DAYS,
        ca_name: str = "chandy-lamport cluster CA",
    ) -> list[Action]:
        """Create the CA if there is none and every missing, expiring or foreign
        certificate; keep what is fine. Running it twice changes nothing."""
        actions: list[Action] = []
        identities = list(identities)
        if not self.has_ca():
            issued_elsewhere = [i for i in identities if (self.identity_dir(i) / CA_CERT).exists()]
            if issued_elsewhere:
                # e.g. a host that `cl-deploy up` gave certificates from the operator's CA:
                # a new CA here would replace them all and split the cluster.
                raise CertStoreError(
                    f"{self.identity_dir(issued_elsewhere[0])}: certificates from a CA that is "
                    f"not in {self.ca_dir}; refusing to create a new CA over them "
                    "(run cl-certs where the CA is, or delete the directory to start over)"
                )
            actions.append(self.init_ca(now, ca_name, authority.CA_DAYS))
        ca_certs = read_certs(self.ca_cert_path)
        ca: Issued | None = None
        for identity in identities:
            problem = self.problem(identity, ca_certs[0], now)
            directory = self.identity_dir(identity)
            if problem is None:
                actions.append(Action(identity, directory, "kept"))
                continue
            if ca is None:
                if not self.ca_key_path.exists():
                    raise CertStoreError(
                        f"{directory}: {problem}, and the CA key is not here "
                        f"({self.ca_key_path}): run cl-certs where the CA key is"
                    )
                ca = self.load_ca(now)
            why = "created" if problem == "missing" else f"reissued: {problem}"
            actions.append(self.issue(identity, now, days=days, ca=ca, why=why))
        return actions

    def listing(self, now: dt.datetime) -> list[tuple[str, str, str]]:
        """(directory, identity, validity) of every identity directory, sorted."""
        rows = []
        for directory in sorted(p for p in self.root.iterdir() if (p / CERT).exists()):
            cert = read_cert(directory / CERT)
            who = authority.identity_of(cert)
            expiry = cert.not_valid_after_utc
            state = "EXPIRED" if expiry <= now else "valid"
            rows.append(
                (directory.name, str(who or "no identity"), f"{state} until {expiry:%Y-%m-%d}")
            )
        return rows


BUNDLE_VERSION = 1
_BUNDLE_DIR = re.compile(r"^(collector|(node|operator)-[A-Za-z][A-Za-z0-9_-]{0,31})$")
_BUNDLE_FILES = (CA_CERT, CERT, KEY)


def identity_from_directory(name: str) -> Identity:
    """The identity of a directory name (`node-n1`, `collector`, `operator-admin`)."""
    if name == "collector":
        return collector()
    role, sep, rest = name.partition("-")
    if not sep or role not in ("node", "operator"):
        raise CertStoreError(
            f"{name!r} is not an identity directory (node-ID, operator-NAME, collector)"
        )
    return Identity(role, rest)


def bundle(store: CertDir, identities: Iterable[Identity]) -> bytes:
    """The identity directories of `identities` (never the CA key) as one JSON document,
    for `cl-deploy up` to install on a host (`install_bundle`)."""
    files: dict[str, str] = {}
    for identity in identities:
        directory = store.identity_dir(identity)
        for name in _BUNDLE_FILES:
            path = directory / name
            try:
                files[f"{identity.directory}/{name}"] = path.read_text(encoding="ascii")
            except OSError as error:
                raise CertStoreError(f"{path}: cannot read: {error.strerror}") from error
    return json.dumps({"schema_version": BUNDLE_VERSION, "files": files}).encode()


def install_bundle(root: Path, data: bytes) -> list[str]:
    """Install a `bundle` into `root`: exactly its identity directories stay there
    (others are removed: a host keeps only the keys of what it runs). Returns them."""
    try:
        document = json.loads(data)
        files = document["files"]
        if document.get("schema_version") != BUNDLE_VERSION or not isinstance(files, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CertStoreError("not a certificate bundle (from cl-deploy)") from None
    wanted: dict[str, dict[str, str]] = {}
    for path, text in files.items():
        directory, _, name = str(path).partition("/")
        if not _BUNDLE_DIR.fullmatch(directory) or name not in _BUNDLE_FILES:
            raise CertStoreError(f"certificate bundle: unexpected file {path!r}")
        if not isinstance(text, str):
            raise CertStoreError(f"certificate bundle: {path} is not text")
        wanted.setdefault(directory, {})[name] = text
    for directory, content in sorted(wanted.items()):
        missing = [n for n in _BUNDLE_FILES if n not in content]
        if missing:
            raise CertStoreError(f"certificate bundle: {directory}/{missing[0]} missing")
    root.mkdir(parents=True, exist_ok=True)
    for directory, content in sorted(wanted.items()):
        target = root / directory
        write_private(target / KEY, content[KEY].encode())
        write_public(target / CERT, content[CERT].encode())
        write_public(target / CA_CERT, content[CA_CERT].encode())
    for stale in root.iterdir():
        if stale.is_dir() and _BUNDLE_DIR.fullmatch(stale.name) and stale.name not in wanted:
            shutil.rmtree(stale)
    fsync_dir(root)
    return sorted(wanted)


def cluster_identities(node_ids: Sequence[str], operators: Sequence[str] = ()) -> list[Identity]:
    """Everyone a cluster needs a certificate for: its nodes, the collector, operators."""
    return [
        *(node(n) for n in node_ids),
        collector(),
        *(operator(name) for name in (operators or [operator().name])),
    ]
