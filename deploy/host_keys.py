"""Ssh host keys: read from an EC2 console, pinned in a known_hosts file. Pure, no I/O.

cloud-init prints the host's public keys to the serial console at first boot,
between ``-----BEGIN SSH HOST KEY KEYS-----`` and ``-----END SSH HOST KEY
KEYS-----``; ``ec2:get_console_output`` returns that console over the AWS API,
a channel an attacker on the network path cannot forge. ``cl-deploy provision``
records the keys in the hosts file, and every later ssh connection accepts
only them (``StrictHostKeyChecking=yes``), instead of trusting whatever key
a new host shows first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
_KEY = re.compile(
    r"(?P<type>" + "|".join(re.escape(t) for t in KEY_TYPES) + r") (?P<blob>[A-Za-z0-9+/]+={0,2})"
)


def parse_key(text: str) -> str | None:
    """``type base64`` of one public key line (comment dropped), or None if it is not one."""
    match = _KEY.search(text)
    return f"{match['type']} {match['blob']}" if match else None


def keys_from_console(output: str) -> tuple[str, ...]:
    """The host keys cloud-init printed to a console; () if the block is not there (yet)."""
    start = output.rfind(BEGIN)  # the newest boot's block
    if start < 0:
        return ()
    end = output.find(END, start)
    if end < 0:
        return ()  # still being written
    found = [parse_key(line) for line in output[start + len(BEGIN) : end].splitlines()]
    return tuple(dict.fromkeys(k for k in found if k is not None))


def alias(host_name: str) -> str:
    """The name a host's keys are filed under (ssh ``HostKeyAlias``): addresses may change."""
    return f"chandy-lamport-{host_name}"


def known_hosts(keys: Mapping[str, Sequence[str]]) -> str:
    """A known_hosts file pinning every host's keys under its alias."""
    return "".join(
        f"{alias(name)} {key}\n" for name, host_keys in keys.items() for key in host_keys
    )


def check_keys(values: Iterable[object], where: str) -> tuple[str, ...]:
    """Validate a hosts file's ``host_keys`` list; raises ValueError naming `where`."""
    keys = []
    for index, value in enumerate(values):
        key = parse_key(value) if isinstance(value, str) else None
        if key is None:
            raise ValueError(f"{where}[{index}] is not an ssh public key ('ssh-ed25519 AAAA...')")
        keys.append(key)
    return tuple(keys)
