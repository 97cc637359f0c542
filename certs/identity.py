"""Who a certificate speaks for: the naming scheme every certificate of a cluster follows.

Pure: no I/O, no clock. A cluster certificate names exactly one identity, a
role and a name, in two Subject Alternative Names:

* a URI `urn:chandy-lamport:<role>:<name>`: the identity servers read from a
  peer's certificate (`common.tls.peer_identity`), and the only one they trust;
* a DNS name `<name>.<role>.chandy-lamport`: what a client checks the server
  it reached presents (gRPC's `ssl_target_name_override`), so a client that
  dials n2 refuses anyone who is not n2, whatever address it dialled.

Roles: `node` (a node id), `collector` (always named `collector`), `operator`
(a person or tool allowed to start snapshots: the initiator).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROLES = ("node", "collector", "operator")
URI_PREFIX = "urn:chandy-lamport:"
DNS_SUFFIX = "chandy-lamport"
COLLECTOR_NAME = "collector"
DEFAULT_OPERATOR = "admin"

# Node ids follow common.config.NODE_ID_PATTERN; operator names the same rule.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


class IdentityError(ValueError):
    """A role or name that cannot be put in a cluster certificate."""


@dataclass(frozen=True, order=True)
class Identity:
    role: str
    name: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise IdentityError(f"unknown role {self.role!r} (expected one of {', '.join(ROLES)})")
        if not NAME_PATTERN.fullmatch(self.name):
            raise IdentityError(
                f"{self.name!r} is not a valid {self.role} name "
                "(a letter, then up to 31 letters, digits, - or _)"
            )
        if self.role == "collector" and self.name != COLLECTOR_NAME:
            raise IdentityError(f"the collector's name is {COLLECTOR_NAME!r}, not {self.name!r}")

    @property
    def uri(self) -> str:
        return f"{URI_PREFIX}{self.role}:{self.name}"

    @property
    def dns_name(self) -> str:
        """The target name a client verifies; lower case (DNS matching ignores case)."""
        return f"{self.name.lower()}.{self.role}.{DNS_SUFFIX}"

    @property
    def directory(self) -> str:
        """The sub-directory of a certificate directory holding this identity's files."""
        return COLLECTOR_NAME if self.role == "collector" else f"{self.role}-{self.name}"

    def __str__(self) -> str:
        return f"{self.role} {self.name}"


def node(name: str) -> Identity:
    return Identity("node", name)


def collector() -> Identity:
    return Identity("collector", COLLECTOR_NAME)


def operator(name: str = DEFAULT_OPERATOR) -> Identity:
    return Identity("operator", name)


def parse_uri(uri: str) -> Identity | None:
    """The identity a SAN URI names, or None if it is not a valid cluster URI."""
    if not uri.startswith(URI_PREFIX):
        return None
    role, sep, name = uri[len(URI_PREFIX) :].partition(":")
    if not sep:
        return None
    try:
        return Identity(role, name)
    except IdentityError:
        return None


def identity_from_uris(uris: list[str]) -> Identity | None:
    """The one cluster identity among a certificate's SAN URIs; None if none or several."""
    found = {parsed for parsed in map(parse_uri, uris) if parsed is not None}
    claims = [uri for uri in uris if uri.startswith(URI_PREFIX)]
    if len(found) != 1 or len(claims) != 1:
        return None
    return found.pop()
