"""The host inventory: what ``provision`` (or Terraform) produced, read by later steps.

Two file shapes are accepted by :func:`load_hosts`:

* the state file written by ``cl-deploy provision``::

    {"schema_version": 1, "ssh_user": "admin", "key_path": "/abs/key.pem",
     "hosts": [{"name": "host-0", "public_ip": "...", "private_ip": "...",
                "host_keys": ["ssh-ed25519 AAAA..."]}], ...}

  ``host_keys`` are the host's ssh public keys, recorded by ``provision`` from
  the EC2 console output (see :mod:`deploy.host_keys`); ssh accepts only them.

* a ``terraform output -json`` dump (outputs ``hosts`` and ``ssh_user``)::

    {"hosts": {"value": [{"name": ...}, ...], "type": ..., "sensitive": false},
     "ssh_user": {"value": "admin", ...}}

This module imports no AWS library: the ssh/compose steps can use it alone.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.files import atomic_write_json
from deploy.errors import DeployError
from deploy.host_keys import check_keys

STATE_SCHEMA_VERSION = 1
DEFAULT_STATE_FILE = Path(".cl-deploy/hosts.json")


@dataclass(frozen=True)
class Host:
    """One EC2 host: its logical name (``host-0``...) and addresses."""

    name: str
    public_ip: str
    private_ip: str
    host_keys: tuple[str, ...] = ()  # pinned ssh host keys ("type base64"); () if unknown


@dataclass(frozen=True)
class Inventory:
    """The hosts of a cluster and how to log in to them.

    ``key_path`` is the private key to use with ssh, when the inventory knows
    it (a Terraform dump does not: the operator's ssh agent/config applies).
    """

    hosts: tuple[Host, ...]
    ssh_user: str
    key_path: Path | None = None


def load_hosts(path: str | os.PathLike[str]) -> Inventory:
    """Read a provision state file or a ``terraform output -json`` dump."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeployError(
            f"host file {file} does not exist: run `cl-deploy provision` first, or write "
            f"Terraform's outputs there with `terraform -chdir=terraform output -json > {file}`"
        ) from None
    except OSError as exc:
        raise DeployError(f"cannot read host file {file}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DeployError(
            f"host file {file} is not valid JSON (line {exc.lineno}: {exc.msg})"
        ) from None
    return parse_hosts(data, source=str(file), base_dir=file.parent)


def parse_hosts(data: Any, *, source: str = "host file", base_dir: Path | None = None) -> Inventory:
    """Build an :class:`Inventory` from either accepted JSON shape (see module doc)."""
    if not isinstance(data, Mapping) or "hosts" not in data:
        raise DeployError(
            f"{source} has no 'hosts': expected the state file of `cl-deploy provision` "
            "or the output of `terraform output -json`"
        )
    raw_hosts = _unwrap_output(data["hosts"])
    raw_user = _unwrap_output(data.get("ssh_user"))
    if not isinstance(raw_user, str) or not raw_user:
        raise DeployError(f"{source} has no 'ssh_user' (a non-empty string)")
    if not isinstance(raw_hosts, list) or not raw_hosts:
        raise DeployError(f"{source}: 'hosts' must be a non-empty list of hosts")
    hosts = tuple(_parse_host(item, i, source) for i, item in enumerate(raw_hosts))
    names = [h.name for h in hosts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DeployError(f"{source}: host names must be unique, repeated: {duplicates}")
    return Inventory(hosts=hosts, ssh_user=raw_user, key_path=_key_path(data, source, base_dir))


def write_state(path: str | os.PathLike[str], inventory: Inventory, **extra: Any) -> Path:
    """Write the provision state file atomically (temp file, fsync, rename).

    ``extra`` adds top-level keys (cluster, region, resource ids, ...).
    Returns the path written.
    """
    file = Path(path)
    document: dict[str, Any] = {
        "schema_version": STATE_SCHEMA_VERSION,
        **extra,
        "ssh_user": inventory.ssh_user,
        "key_path": str(inventory.key_path) if inventory.key_path else None,
        "hosts": [
            {
                "name": h.name,
                "public_ip": h.public_ip,
                "private_ip": h.private_ip,
                "host_keys": list(h.host_keys),
            }
            for h in inventory.hosts
        ],
    }
    file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(file, document)
    return file


def _unwrap_output(value: Any) -> Any:
    """Terraform wraps each output as {"value": ..., "type": ..., "sensitive": ...}."""
    if isinstance(value, Mapping) and "value" in value:
        return value["value"]
    return value


def _parse_host(item: Any, index: int, source: str) -> Host:
    if not isinstance(item, Mapping):
        raise DeployError(f"{source}: hosts[{index}] must be an object")
    fields: dict[str, str] = {}
    for key in ("name", "public_ip", "private_ip"):
        value = item.get(key)
        if not isinstance(value, str) or not value:
            raise DeployError(
                f"{source}: hosts[{index}] has no '{key}' (is the instance running? "
                "re-run `cl-deploy provision` or `terraform apply` to refresh it)"
            )
        fields[key] = value
    for key in ("public_ip", "private_ip"):
        try:
            ipaddress.ip_address(fields[key])
        except ValueError:
            raise DeployError(
                f"{source}: hosts[{index}].{key} is not an IP address: {fields[key]!r}"
            ) from None
    raw_keys = item.get("host_keys", [])
    if not isinstance(raw_keys, list):
        raise DeployError(f"{source}: hosts[{index}].host_keys must be a list of ssh public keys")
    try:
        keys = check_keys(raw_keys, f"hosts[{index}].host_keys")
    except ValueError as error:
        raise DeployError(f"{source}: {error}") from None
    return Host(**fields, host_keys=keys)


def _key_path(data: Mapping[str, Any], source: str, base_dir: Path | None) -> Path | None:
    raw = _unwrap_output(data.get("key_path"))
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        raise DeployError(f"{source}: 'key_path' must be a path or null")
    key = Path(raw).expanduser()
    if not key.is_absolute() and base_dir is not None:
        key = base_dir / key
    return key
