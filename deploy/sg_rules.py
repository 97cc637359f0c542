"""The security-group rules of a cluster, as plain values (no AWS calls here).

The same rules as ``terraform/main.tf``:

* ingress tcp/22 from the operator's CIDR only;
* ingress node gRPC port range and collector port from the group itself only;
* egress node gRPC port range and collector port to the group itself;
* egress tcp/443 and tcp/80 to anywhere (apt, Docker's package repository).

A new group's default allow-all egress rule is not among them, so converging
a group to these rules removes it (Terraform does the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["ingress", "egress"]
ANYWHERE = "0.0.0.0/0"


@dataclass(frozen=True)
class Rule:
    """One security-group rule; exactly one of ``cidr``/``group_id``/``other`` is set.

    ``other`` stands for a peer this tool never creates (IPv6 range, prefix
    list): such rules are only ever revoked. ``description`` is not part of
    the rule's identity.
    """

    direction: Direction
    protocol: str
    from_port: int
    to_port: int
    cidr: str | None = None
    group_id: str | None = None
    other: tuple[tuple[str, str], ...] | None = None
    description: str = ""

    @property
    def key(self) -> tuple[Any, ...]:
        return (
            self.direction,
            self.protocol,
            self.from_port,
            self.to_port,
            self.cidr,
            self.group_id,
            self.other,
        )


def desired_rules(
    group_id: str,
    ssh_cidr: str,
    node_ports: tuple[int, int],
    collector_port: int,
) -> list[Rule]:
    """The rules a cluster's group must have, and no others."""
    first, last = node_ports
    return [
        Rule("ingress", "tcp", 22, 22, cidr=ssh_cidr, description="ssh from the operator only"),
        Rule(
            "ingress",
            "tcp",
            first,
            last,
            group_id=group_id,
            description="node gRPC from cluster members only",
        ),
        Rule(
            "ingress",
            "tcp",
            collector_port,
            collector_port,
            group_id=group_id,
            description="collector gRPC from cluster members only",
        ),
        Rule(
            "egress",
            "tcp",
            first,
            last,
            group_id=group_id,
            description="node gRPC to cluster members",
        ),
        Rule(
            "egress",
            "tcp",
            collector_port,
            collector_port,
            group_id=group_id,
            description="collector gRPC to cluster members",
        ),
        Rule(
            "egress",
            "tcp",
            443,
            443,
            cidr=ANYWHERE,
            description="HTTPS out: Docker package repository, apt, downloads",
        ),
        Rule(
            "egress",
            "tcp",
            80,
            80,
            cidr=ANYWHERE,
            description="HTTP out: Debian apt mirrors (packages are signed)",
        ),
    ]


def rules_of_group(group: Mapping[str, Any]) -> list[Rule]:
    """Flatten a ``describe_security_groups`` group into one :class:`Rule` per peer."""
    rules: list[Rule] = []
    for direction, key in (("ingress", "IpPermissions"), ("egress", "IpPermissionsEgress")):
        for perm in group.get(key, []):
            proto = str(perm.get("IpProtocol", "-1"))
            lo = int(perm.get("FromPort", -1))
            hi = int(perm.get("ToPort", -1))
            base: dict[str, Any] = {
                "direction": direction,
                "protocol": proto,
                "from_port": lo,
                "to_port": hi,
            }
            for r in perm.get("IpRanges", []):
                rules.append(Rule(**base, cidr=r["CidrIp"], description=r.get("Description", "")))
            for r in perm.get("UserIdGroupPairs", []):
                rules.append(
                    Rule(**base, group_id=r["GroupId"], description=r.get("Description", ""))
                )
            for r in perm.get("Ipv6Ranges", []):
                rules.append(Rule(**base, other=(("CidrIpv6", r["CidrIpv6"]),)))
            for r in perm.get("PrefixListIds", []):
                rules.append(Rule(**base, other=(("PrefixListId", r["PrefixListId"]),)))
    return rules


def plan(existing: Iterable[Rule], desired: Iterable[Rule]) -> tuple[list[Rule], list[Rule]]:
    """Return (rules to add, rules to revoke) to turn ``existing`` into ``desired``."""
    have = {r.key: r for r in existing}
    want = {r.key: r for r in desired}
    to_add = [r for k, r in want.items() if k not in have]
    to_revoke = [r for k, r in have.items() if k not in want]
    return to_add, to_revoke


def ip_permission(rule: Rule, *, with_description: bool = True) -> dict[str, Any]:
    """The ``IpPermissions`` entry that authorizes (or, without description, revokes) ``rule``."""
    perm: dict[str, Any] = {"IpProtocol": rule.protocol}
    if rule.protocol != "-1":
        perm["FromPort"] = rule.from_port
        perm["ToPort"] = rule.to_port
    peer: dict[str, str] = {}
    if rule.description and with_description:
        peer["Description"] = rule.description
    if rule.cidr is not None:
        perm["IpRanges"] = [{"CidrIp": rule.cidr, **peer}]
    elif rule.group_id is not None:
        perm["UserIdGroupPairs"] = [{"GroupId": rule.group_id, **peer}]
    elif rule.other:
        ((field, value),) = rule.other
        if field == "CidrIpv6":
            perm["Ipv6Ranges"] = [{"CidrIpv6": value}]
        else:
            perm["PrefixListIds"] = [{"PrefixListId": value}]
    return perm
