"""Provision and destroy a cluster's EC2 hosts with boto3 (no Terraform needed).

What ``provision`` creates is what ``terraform/`` creates, in the region's
default VPC: N Debian 12 hosts in one default subnet (IMDSv2 required,
encrypted gp3 root volume, cloud-init installing Docker + Compose), one
security group with the rules of :mod:`deploy.sg_rules`, and a key pair
(the operator's public key imported, or a new ed25519 key whose private half
is saved 0600 next to the state file).

Idempotent: every resource carries the tags ``chandy-lamport:cluster=<name>``
and ``ManagedBy=cl-deploy``, and is looked up by them before anything is
created; each host also has ``chandy-lamport:host=host-<i>``, applied at
launch. ``run_instances`` gets a deterministic ``ClientToken`` per host, so a
retried launch cannot make a second instance. Running ``provision`` again
converges: missing hosts are launched, stopped ones started, surplus ones
(``--count`` lowered) terminated, security-group rules set to exactly the
described ones. Resources without ``ManagedBy=cl-deploy`` (e.g. Terraform's,
which share the cluster tag) are never modified or deleted.

Every AWS failure becomes a :class:`~deploy.errors.DeployError` whose message
says what to do (credentials, quota, region, AMI, ...).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    WaiterError,
)
from botocore.waiter import WaiterModel, create_waiter_with_client

from deploy import sg_rules
from deploy.errors import DeployError
from deploy.host_keys import BEGIN, keys_from_console
from deploy.hosts import DEFAULT_STATE_FILE, Host, Inventory, write_state
from deploy.progress import Log, reporter
from deploy.userdata import USER_DATA

CLUSTER_TAG = "chandy-lamport:cluster"
HOST_TAG = "chandy-lamport:host"
KEY_SOURCE_TAG = "chandy-lamport:key-source"
MANAGED_BY_TAG = "ManagedBy"
MANAGED_BY = "cl-deploy"

# Debian's official AWS account, the AMI name pattern of Debian 12 amd64
# cloud images, and their login user. Ubuntu 22.04 (--ami) logs in as "ubuntu".
DEBIAN_OWNER_ID = "136693071363"
DEBIAN_AMI_NAME = "debian-12-amd64-*"
SSH_USER = "admin"

MAX_HOSTS = 16
# An ssh_cidr may not be wider than this prefix unless allowed explicitly.
MIN_SSH_PREFIX = 8
HOST_KEY_POLL_SECONDS = 10.0
LIVE_STATES = ("pending", "running", "stopping", "stopped")

# Waiters poll every 5 s, for at most 10 minutes.
WAITER_CONFIG = {"Delay": 5, "MaxAttempts": 120}

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")

_NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_PROFILE (after `aws configure` or `aws sso login`) "
    "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, then run the command again"
)
_QUOTA_CODES = {"InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded"}
_AUTH_CODES = {
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "RequestExpired",
    "UnrecognizedClientException",
}

# ENIs of terminated instances linger for a few seconds and keep their
# security group in use; wait for them to be gone before deleting the group.
_ENIS_GONE = WaiterModel(
    {
        "version": 2,
        "waiters": {
            "NetworkInterfacesGone": {
                "operation": "DescribeNetworkInterfaces",
                "delay": 5,
                "maxAttempts": 60,
                "acceptors": [
                    {
                        "matcher": "path",
                        "argument": "length(NetworkInterfaces[]) == `0`",
                        "expected": True,
                        "state": "success",
                    }
                ],
            }
        },
    }
)


@dataclass(frozen=True)
class ClusterSpec:
    """What ``provision`` should make. Defaults match ``terraform/variables.tf``."""

    name: str
    region: str
    ssh_cidr: str
    count: int = 3
    instance_type: str = "t3.small"
    key_name: str | None = None
    public_key_path: Path | None = None
    node_ports: tuple[int, int] = (50051, 50099)
    collector_port: int = 50050
    root_volume_gib: int = 16
    ami_id: str | None = None
    state_file: Path = DEFAULT_STATE_FILE
    # Refuse an ssh_cidr wider than /8 (16M addresses) unless this is set.
    allow_wide_ssh_cidr: bool = False
    # How long to wait for cloud-init to print the ssh host keys to the console.
    host_key_timeout: float = 900.0

    @property
    def effective_key_name(self) -> str:
        return self.key_name or f"chandy-lamport-{self.name}"

    @property
    def private_key_path(self) -> Path:
        """Where a key created by ``provision`` is saved: next to the state file."""
        return self.state_file.parent / f"{self.effective_key_name}.pem"

    @property
    def group_name(self) -> str:
        return f"chandy-lamport-{self.name}"


@dataclass(frozen=True)
class Provisioned:
    """The outcome of :func:`provision`."""

    inventory: Inventory
    instance_ids: tuple[str, ...]
    security_group_id: str
    key_name: str
    state_file: Path


@dataclass(frozen=True)
class Destroyed:
    """What :func:`destroy` removed."""

    instance_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    key_names: tuple[str, ...]


# --- public API -----------------------------------------------------------------------


def validate_spec(spec: ClusterSpec) -> None:
    """Refuse a spec that cannot work, with one message naming the problem."""
    check_cluster_name(spec.name)
    if not 1 <= spec.count <= MAX_HOSTS:
        raise DeployError(f"--count must be between 1 and {MAX_HOSTS}, not {spec.count}")
    try:
        net = ipaddress.IPv4Network(spec.ssh_cidr, strict=False)
    except ValueError:
        raise DeployError(
            f"--ssh-cidr {spec.ssh_cidr!r} is not an IPv4 CIDR: use your public IP, e.g. "
            "203.0.113.7/32 (find it with `curl -s https://checkip.amazonaws.com`)"
        ) from None
    if net.prefixlen == 0:
        raise DeployError("--ssh-cidr 0.0.0.0/0 would open ssh to the whole internet: refused")
    if net.prefixlen < MIN_SSH_PREFIX and not spec.allow_wide_ssh_cidr:
        raise DeployError(
            f"--ssh-cidr {spec.ssh_cidr} lets {net.num_addresses:,} addresses reach ssh: use your "
            f"own address or network (e.g. 203.0.113.7/32; at most /{MIN_SSH_PREFIX} wide), or "
            "pass --allow-wide-ssh-cidr if you really mean it"
        )
    first, last = spec.node_ports
    for label, port in (
        ("node port", first),
        ("node port", last),
        ("collector port", spec.collector_port),
    ):
        if not 1024 <= port <= 65535:
            raise DeployError(f"{label} {port} is outside 1024-65535")
    if first > last:
        raise DeployError(f"node port range {first}-{last} is empty (first > last)")
    if first <= spec.collector_port <= last:
        raise DeployError(
            f"collector port {spec.collector_port} lies inside the node port range {first}-{last}"
        )
    if not 8 <= spec.root_volume_gib <= 256:
        raise DeployError(f"root volume size must be 8-256 GiB, not {spec.root_volume_gib}")


def check_cluster_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise DeployError(
            f"cluster name {name!r} is invalid: use 1-32 lowercase letters, digits and '-'"
        )


def provision(
    spec: ClusterSpec,
    *,
    session: boto3.session.Session | None = None,
    log: Log | None = None,
) -> Provisioned:
    """Create (or converge) the cluster's hosts and write the state file."""
    log = log or reporter("provision")
    validate_spec(spec)
    ec2 = ec2_client(spec.region, session)
    log(f"region {spec.region}, cluster {spec.name!r}: looking up the default VPC and AMI...")
    with aws_errors(spec.region):
        vpc_id = _default_vpc(ec2, spec.region)
        image = _find_image(ec2, spec)
        subnet_id = _pick_subnet(ec2, vpc_id, spec)
        key_name, key_path = _ensure_key_pair(ec2, spec, log)
        group_id = _ensure_security_group(ec2, spec, vpc_id, log)
        instances = _ensure_instances(ec2, spec, image, subnet_id, group_id, key_name, log)
        host_keys = _console_host_keys(ec2, instances, spec.host_key_timeout, log)
    inventory = Inventory(
        hosts=tuple(
            Host(
                name=_host_of(i),
                public_ip=i.get("PublicIpAddress", ""),
                private_ip=i.get("PrivateIpAddress", ""),
                host_keys=host_keys[i["InstanceId"]],
            )
            for i in instances
        ),
        ssh_user=_ssh_user_for(image),
        key_path=key_path.resolve() if key_path else None,
    )
    missing_ip = [h.name for h in inventory.hosts if not h.public_ip]
    if missing_ip:
        raise DeployError(
            f"hosts {missing_ip} have no public IP: the default subnet does not assign them; "
            "check the default VPC's subnets in the EC2 console"
        )
    ids = tuple(i["InstanceId"] for i in instances)
    write_state(
        spec.state_file,
        inventory,
        source="cl-deploy",
        cluster=spec.name,
        region=spec.region,
        key_name=key_name,
        security_group_id=group_id,
        ami_id=image["ImageId"],
        instance_ids={_host_of(i): i["InstanceId"] for i in instances},
    )
    log(f"wrote {len(ids)} hosts to {spec.state_file}")
    return Provisioned(inventory, ids, group_id, key_name, spec.state_file)


def destroy(
    name: str,
    region: str,
    *,
    state_file: Path | None = DEFAULT_STATE_FILE,
    session: boto3.session.Session | None = None,
    log: Log | None = None,
) -> Destroyed:
    """Terminate the cluster's instances, delete its security group and key pair.

    Only resources tagged ``ManagedBy=cl-deploy`` and ``chandy-lamport:cluster=name``
    are touched. Removes the state file if it describes this cluster, and the
    private key file that ``provision`` created.
    """
    log = log or reporter("destroy")
    check_cluster_name(name)
    ec2 = ec2_client(region, session)
    with aws_errors(region):
        instances = _find_instances(ec2, name, (*LIVE_STATES, "shutting-down"))
        ids = tuple(i["InstanceId"] for i in instances)
        if ids:
            log(f"terminating {len(ids)} instances: {', '.join(ids)}")
            ec2.terminate_instances(InstanceIds=list(ids))
            log(f"waiting for {len(ids)} instances to be terminated...")
            _wait(ec2, "instance_terminated", ids, "terminated")
        groups = _find_groups(ec2, name)
        for group in groups:
            log(f"deleting security group {group['GroupId']} ({group['GroupName']})...")
            _wait_enis_gone(ec2, group["GroupId"])
            ec2.delete_security_group(GroupId=group["GroupId"])
        key_pairs = ec2.describe_key_pairs(Filters=_ours_filters(name))["KeyPairs"]
        for pair in key_pairs:
            log(f"deleting key pair {pair['KeyName']}")
            ec2.delete_key_pair(KeyName=pair["KeyName"])
    state = _read_state_for(state_file, name)
    for pair in key_pairs:
        if _tags(pair).get(KEY_SOURCE_TAG) == "created" and state_file is not None:
            key_file = state_file.parent / f"{pair['KeyName']}.pem"
            if key_file.exists():
                key_file.unlink()
                log(f"removed private key {key_file}")
    if state is not None and state_file is not None:
        state_file.unlink()
        log(f"removed {state_file}")
    if not (ids or groups or key_pairs):
        log(f"nothing to destroy for cluster {name!r} in {region}")
    return Destroyed(
        ids,
        tuple(g["GroupId"] for g in groups),
        tuple(p["KeyName"] for p in key_pairs),
    )


def ec2_client(region: str, session: boto3.session.Session | None = None) -> Any:
    """An EC2 client for a known region, with credentials, or a clear DeployError."""
    try:
        session = session or boto3.session.Session()
    except ProfileNotFound as exc:
        raise DeployError(
            f"{exc}: check AWS_PROFILE against `aws configure list-profiles`"
        ) from None
    check_region(session, region)
    try:
        credentials = session.get_credentials()
    except BotoCoreError as exc:
        raise DeployError(f"cannot load AWS credentials: {exc}") from None
    if credentials is None:
        raise DeployError(_NO_CREDENTIALS)
    return session.client(
        "ec2", region_name=region, config=Config(retries={"max_attempts": 8, "mode": "standard"})
    )


def check_region(session: boto3.session.Session, region: str) -> None:
    """Refuse a region name that botocore does not know for EC2 in any partition."""
    known: set[str] = set()
    for partition in session.get_available_partitions():
        known.update(session.get_available_regions("ec2", partition_name=partition))
    if region not in known:
        examples = ", ".join(r for r in ("us-east-1", "eu-west-1", "ap-southeast-2") if r in known)
        raise DeployError(
            f"unknown AWS region {region!r}: pass --region with a region name such as {examples} "
            "(`aws ec2 describe-regions` lists the regions enabled for your account; "
            "a region newer than this botocore needs `pip install -U boto3`)"
        )


@contextmanager
def aws_errors(region: str) -> Iterator[None]:
    """Turn botocore failures into DeployErrors that say what to do."""
    try:
        yield
    except (NoCredentialsError, PartialCredentialsError):
        raise DeployError(_NO_CREDENTIALS) from None
    except EndpointConnectionError as exc:
        raise DeployError(
            f"cannot reach the EC2 endpoint of region {region!r} "
            f"({exc.kwargs.get('endpoint_url')}): check --region and your network connection"
        ) from None
    except ClientError as exc:
        raise _client_error(exc, region) from None
    except WaiterError as exc:
        raise DeployError(
            f"gave up waiting: {exc}. Check the instances in the EC2 console ({region}); "
            "running the same command again is safe"
        ) from None
    except BotoCoreError as exc:
        raise DeployError(f"AWS call failed in {region}: {exc}") from None


# --- lookups ----------------------------------------------------------------------------


def _client_error(exc: ClientError, region: str) -> DeployError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    message = str(error.get("Message", ""))
    op = exc.operation_name
    if code in _QUOTA_CODES:
        return DeployError(
            f"EC2 quota exceeded in {region} ({code}: {message}). Lower --count or use a smaller "
            "--instance-type, or request more 'Running On-Demand Standard instances' vCPUs in "
            "the Service Quotas console; hosts already launched stay until "
            "`cl-deploy destroy`"
        )
    if code in _AUTH_CODES:
        return DeployError(
            f"AWS rejected the credentials ({code}: {message}): refresh them "
            "(`aws sso login`, new access keys) and check AWS_PROFILE"
        )
    if code == "UnauthorizedOperation":
        return DeployError(
            f"your AWS identity may not call EC2 {op} in {region}: grant it ec2:{op} "
            "(e.g. attach AmazonEC2FullAccess to a sandbox user)"
        )
    if code == "OptInRequired":
        return DeployError(
            f"region {region} (or the AMI) needs an opt-in for this account ({message}): "
            "enable the region in the AWS console, or choose another --region"
        )
    if code.startswith("InvalidAMIID"):
        return DeployError(
            f"AMI not usable in {region} ({code}: {message}): pass --ami with a Debian 12 or "
            "Ubuntu 22.04 amd64 AMI id of this region, or omit --ami to use the latest Debian 12"
        )
    if code in {"InsufficientInstanceCapacity", "Unsupported"}:
        return DeployError(
            f"EC2 cannot launch this instance type now in {region} ({code}: {message}): "
            "try another --instance-type, or again later"
        )
    return DeployError(f"EC2 {op} failed in {region}: {code}: {message}")


def _paginate(ec2: Any, operation: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in ec2.get_paginator(operation).paginate(**kwargs):
        items.extend(page.get(key, []))
    return items


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _tag_list(cluster: str, **extra: str) -> list[dict[str, str]]:
    tags = {
        "Project": "chandy-lamport",
        MANAGED_BY_TAG: MANAGED_BY,
        CLUSTER_TAG: cluster,
        **extra,
    }
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _tag_spec(resource_type: str, cluster: str, **extra: str) -> dict[str, Any]:
    return {"ResourceType": resource_type, "Tags": _tag_list(cluster, **extra)}


def _ours_filters(cluster: str) -> list[dict[str, Any]]:
    return [
        {"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster]},
        {"Name": f"tag:{MANAGED_BY_TAG}", "Values": [MANAGED_BY]},
    ]


def _is_ours(resource: dict[str, Any], cluster: str) -> bool:
    tags = _tags(resource)
    return tags.get(CLUSTER_TAG) == cluster and tags.get(MANAGED_BY_TAG) == MANAGED_BY


def _default_vpc(ec2: Any, region: str) -> str:
    vpcs = _paginate(
        ec2, "describe_vpcs", "Vpcs", Filters=[{"Name": "isDefault", "Values": ["true"]}]
    )
    if not vpcs:
        raise DeployError(
            f"region {region} has no default VPC: create one with "
            f"`aws ec2 create-default-vpc --region {region}`, or choose another --region"
        )
    return str(vpcs[0]["VpcId"])


def _find_image(ec2: Any, spec: ClusterSpec) -> dict[str, Any]:
    if spec.ami_id:
        images = ec2.describe_images(ImageIds=[spec.ami_id])["Images"]
    else:
        images = _paginate(
            ec2,
            "describe_images",
            "Images",
            Owners=[DEBIAN_OWNER_ID],
            Filters=[
                {"Name": "name", "Values": [DEBIAN_AMI_NAME]},
                {"Name": "architecture", "Values": ["x86_64"]},
                {"Name": "state", "Values": ["available"]},
            ],
        )
    if not images:
        what = (
            f"AMI {spec.ami_id}"
            if spec.ami_id
            else (
                f"Debian 12 amd64 AMI ({DEBIAN_AMI_NAME} from Debian's account {DEBIAN_OWNER_ID})"
            )
        )
        raise DeployError(
            f"no {what} found in region {spec.region}: pass --ami with a Debian 12 or "
            "Ubuntu 22.04 amd64 AMI id available in this region"
        )
    return max(images, key=lambda i: str(i.get("CreationDate", "")))


def _ssh_user_for(image: dict[str, Any]) -> str:
    name = str(image.get("Name", "")).lower()
    return "ubuntu" if "ubuntu" in name else SSH_USER


def _pick_subnet(ec2: Any, vpc_id: str, spec: ClusterSpec) -> str:
    """A default subnet (sorted by id, as Terraform does) in an AZ offering the type."""
    offerings = _paginate(
        ec2,
        "describe_instance_type_offerings",
        "InstanceTypeOfferings",
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": [spec.instance_type]}],
    )
    zones = {o["Location"] for o in offerings}
    if not zones:
        raise DeployError(
            f"instance type {spec.instance_type!r} is not offered in {spec.region}: "
            "choose another --instance-type (e.g. t3.small)"
        )
    subnets = _paginate(
        ec2,
        "describe_subnets",
        "Subnets",
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "default-for-az", "Values": ["true"]},
        ],
    )
    candidates = sorted(str(s["SubnetId"]) for s in subnets if s["AvailabilityZone"] in zones)
    if not candidates:
        raise DeployError(
            f"no default subnet of {vpc_id} lies in a zone offering {spec.instance_type} "
            f"({', '.join(sorted(zones))}): choose another --instance-type or --region"
        )
    return candidates[0]


# --- key pair ---------------------------------------------------------------------------


def _ensure_key_pair(ec2: Any, spec: ClusterSpec, log: Log) -> tuple[str, Path | None]:
    """Return the key pair name and the private key path (when known)."""
    name = spec.effective_key_name
    pairs = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name]}])["KeyPairs"]
    if pairs:
        pair = pairs[0]
        if not _is_ours(pair, spec.name):
            log(f"using existing key pair {name} (not created by cl-deploy: destroy keeps it)")
            return name, _private_key_beside(spec.public_key_path)
        if _tags(pair).get(KEY_SOURCE_TAG) == "created":
            if not spec.private_key_path.exists():
                raise DeployError(
                    f"key pair {name} exists in {spec.region} but its private key "
                    f"{spec.private_key_path} is missing: run `cl-deploy destroy --name "
                    f"{spec.name} --region {spec.region}` and provision again, or pass "
                    "--key-name/--public-key to use another key"
                )
            return name, spec.private_key_path
        return name, _private_key_beside(spec.public_key_path)

    if spec.public_key_path is not None:
        material = _read_public_key(spec.public_key_path)
        log(f"importing public key {spec.public_key_path} as key pair {name}")
        ec2.import_key_pair(
            KeyName=name,
            PublicKeyMaterial=material,
            TagSpecifications=[
                _tag_spec("key-pair", spec.name, Name=name, **{KEY_SOURCE_TAG: "imported"})
            ],
        )
        return name, _private_key_beside(spec.public_key_path)

    key_file = spec.private_key_path
    if key_file.exists():
        raise DeployError(
            f"{key_file} already exists but key pair {name} does not: remove the file, "
            "or pass --public-key to import your own key"
        )
    log(f"creating key pair {name}; private key -> {key_file}")
    created = ec2.create_key_pair(
        KeyName=name,
        KeyType="ed25519",
        KeyFormat="pem",
        TagSpecifications=[
            _tag_spec("key-pair", spec.name, Name=name, **{KEY_SOURCE_TAG: "created"})
        ],
    )
    _write_private_key(key_file, created["KeyMaterial"])
    return name, key_file


def _read_public_key(path: Path) -> bytes:
    try:
        material = path.expanduser().read_bytes().strip()
    except OSError as exc:
        raise DeployError(f"cannot read public key {path}: {exc.strerror}") from None
    if not material.startswith((b"ssh-ed25519 ", b"ssh-rsa ", b"ecdsa-sha2-")):
        raise DeployError(
            f"{path} is not an OpenSSH public key (expected a line starting with "
            "'ssh-ed25519' or 'ssh-rsa'): pass the .pub file"
        )
    return material


def _private_key_beside(public_key: Path | None) -> Path | None:
    if public_key is None or public_key.suffix != ".pub":
        return None
    private = public_key.expanduser().with_suffix("")
    return private if private.exists() else None


def _write_private_key(path: Path, material: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(material if material.endswith("\n") else material + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.chmod(path, 0o600)


# --- security group ---------------------------------------------------------------------


def _find_groups(ec2: Any, cluster: str) -> list[dict[str, Any]]:
    return _paginate(
        ec2, "describe_security_groups", "SecurityGroups", Filters=_ours_filters(cluster)
    )


def _ensure_security_group(ec2: Any, spec: ClusterSpec, vpc_id: str, log: Log) -> str:
    existing = _paginate(
        ec2,
        "describe_security_groups",
        "SecurityGroups",
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [spec.group_name]},
        ],
    )
    if existing:
        group = existing[0]
        if not _is_ours(group, spec.name):
            raise DeployError(
                f"security group {spec.group_name} ({group['GroupId']}) exists but was not "
                "created by cl-deploy (by Terraform, with the same cluster name?): "
                "destroy it there first, or choose another --name"
            )
    else:
        log(f"creating security group {spec.group_name}")
        group_id = ec2.create_security_group(
            GroupName=spec.group_name,
            Description=f"chandy-lamport {spec.name}: ssh from the operator, gRPC between members",
            VpcId=vpc_id,
            TagSpecifications=[_tag_spec("security-group", spec.name, Name=spec.group_name)],
        )["GroupId"]
        group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    group_id = str(group["GroupId"])
    desired = sg_rules.desired_rules(group_id, spec.ssh_cidr, spec.node_ports, spec.collector_port)
    to_add, to_revoke = sg_rules.plan(sg_rules.rules_of_group(group), desired)
    if to_add or to_revoke:
        log(f"setting security group rules: {len(to_add)} to add, {len(to_revoke)} to revoke")
    calls = {
        "ingress": (ec2.revoke_security_group_ingress, ec2.authorize_security_group_ingress),
        "egress": (ec2.revoke_security_group_egress, ec2.authorize_security_group_egress),
    }
    for direction, (revoke, authorize) in calls.items():
        gone = [
            sg_rules.ip_permission(r, with_description=False)
            for r in to_revoke
            if r.direction == direction
        ]
        if gone:
            revoke(GroupId=group_id, IpPermissions=gone)
        new = [sg_rules.ip_permission(r) for r in to_add if r.direction == direction]
        if new:
            authorize(
                GroupId=group_id,
                IpPermissions=new,
                TagSpecifications=[_tag_spec("security-group-rule", spec.name)],
            )
    return group_id


def _wait_enis_gone(ec2: Any, group_id: str) -> None:
    waiter = create_waiter_with_client("NetworkInterfacesGone", _ENIS_GONE, ec2)
    waiter.wait(Filters=[{"Name": "group-id", "Values": [group_id]}])


# --- instances --------------------------------------------------------------------------


def _find_instances(ec2: Any, cluster: str, states: tuple[str, ...]) -> list[dict[str, Any]]:
    reservations = _paginate(
        ec2,
        "describe_instances",
        "Reservations",
        Filters=[*_ours_filters(cluster), {"Name": "instance-state-name", "Values": list(states)}],
    )
    return [i for r in reservations for i in r["Instances"]]


def _host_of(instance: dict[str, Any]) -> str:
    return _tags(instance).get(HOST_TAG, "")


def _host_index(host: str) -> int:
    _, _, index = host.rpartition("-")
    return int(index) if index.isdigit() else 1 << 30


def _client_token(spec: ClusterSpec, host: str, parts: tuple[str, ...], salt: str = "") -> str:
    """Same request -> same token, so a retried launch returns the first instance."""
    fields = (spec.name, spec.region, host, spec.instance_type, str(spec.root_volume_gib), *parts)
    digest = hashlib.sha256("|".join((*fields, salt)).encode()).hexdigest()
    return f"cl-{digest[:48]}"


def _ensure_instances(
    ec2: Any,
    spec: ClusterSpec,
    image: dict[str, Any],
    subnet_id: str,
    group_id: str,
    key_name: str,
    log: Log,
) -> list[dict[str, Any]]:
    wanted = [f"host-{i}" for i in range(spec.count)]
    by_host: dict[str, dict[str, Any]] = {}
    surplus: list[str] = []
    for inst in sorted(_find_instances(ec2, spec.name, LIVE_STATES), key=lambda i: i["LaunchTime"]):
        host = _host_of(inst)
        if host in wanted and host not in by_host:
            by_host[host] = inst
        else:
            surplus.append(inst["InstanceId"])
    if surplus:
        log(
            f"terminating {len(surplus)} instances beyond --count {spec.count}: "
            + ", ".join(surplus)
        )
        ec2.terminate_instances(InstanceIds=surplus)

    stopping = [i["InstanceId"] for i in by_host.values() if i["State"]["Name"] == "stopping"]
    if stopping:
        log(f"waiting for {len(stopping)} stopping instances to stop...")
        _wait(ec2, "instance_stopped", stopping, "stopped")
    to_start = [
        i["InstanceId"] for i in by_host.values() if i["State"]["Name"] in ("stopped", "stopping")
    ]
    if to_start:
        log(f"starting {len(to_start)} stopped instances")
        ec2.start_instances(InstanceIds=to_start)

    missing = [h for h in wanted if h not in by_host]
    if missing:
        log(
            f"launching {len(missing)} {spec.instance_type} instances ({image['ImageId']}, "
            f"{image.get('Name', '?')}); {len(by_host)} already exist"
        )
    for host in missing:
        by_host[host] = _launch(ec2, spec, host, image, subnet_id, group_id, key_name, log)

    ids = [by_host[h]["InstanceId"] for h in wanted]
    log(f"waiting for {len(ids)} instances to be running...")
    _wait(ec2, "instance_running", ids, "running")
    running = _paginate(ec2, "describe_instances", "Reservations", InstanceIds=ids)
    instances = [i for r in running for i in r["Instances"]]
    return sorted(instances, key=lambda i: _host_index(_host_of(i)))


def _console_output(ec2: Any, instance_id: str) -> str:
    reply = ec2.get_console_output(InstanceId=instance_id, Latest=True)
    output = reply.get("Output") or ""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    if BEGIN not in output:  # the API's base64, if the client did not decode it
        try:
            output = base64.b64decode(output, validate=True).decode(errors="replace")
        except (ValueError, binascii.Error):
            pass
    return str(output)


def _console_host_keys(
    ec2: Any, instances: list[dict[str, Any]], timeout: float, log: Log
) -> dict[str, tuple[str, ...]]:
    """Every instance's ssh host keys, as cloud-init printed them to its console.

    The console output comes over the authenticated AWS API, so the keys are the
    instance's own, not a machine in the middle's. Polls until every instance
    has printed them (a few minutes after the first boot).
    """
    keys: dict[str, tuple[str, ...]] = {}
    deadline = time.monotonic() + timeout
    said = False
    while True:
        for instance in instances:
            instance_id = instance["InstanceId"]
            if not keys.get(instance_id):
                keys[instance_id] = keys_from_console(_console_output(ec2, instance_id))
        missing = [_host_of(i) for i in instances if not keys[i["InstanceId"]]]
        if not missing:
            return keys
        if time.monotonic() >= deadline:
            raise DeployError(
                f"no ssh host keys in the console output of {', '.join(missing)} after "
                f"{timeout:g}s (cloud-init prints them at first boot): run the same "
                "`cl-deploy provision` again in a few minutes (it is safe)"
            )
        if not said:
            log(f"waiting for {len(missing)} hosts to print their ssh host keys...")
            said = True
        time.sleep(HOST_KEY_POLL_SECONDS)


def _launch(
    ec2: Any,
    spec: ClusterSpec,
    host: str,
    image: dict[str, Any],
    subnet_id: str,
    group_id: str,
    key_name: str,
    log: Log,
) -> dict[str, Any]:
    name = f"{spec.name}-{host}"
    parts = (image["ImageId"], subnet_id, group_id, key_name)
    params: dict[str, Any] = {
        "ImageId": image["ImageId"],
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": key_name,
        "ClientToken": _client_token(spec, host, parts),
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": subnet_id,
                "Groups": [group_id],
                "AssociatePublicIpAddress": True,
                "DeleteOnTermination": True,
            }
        ],
        "MetadataOptions": {
            "HttpEndpoint": "enabled",
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 1,
            "InstanceMetadataTags": "disabled",
        },
        "BlockDeviceMappings": [
            {
                "DeviceName": image.get("RootDeviceName", "/dev/xvda"),
                "Ebs": {
                    "Encrypted": True,
                    "VolumeType": "gp3",
                    "VolumeSize": spec.root_volume_gib,
                    "DeleteOnTermination": True,
                },
            }
        ],
        "EbsOptimized": True,
        "UserData": USER_DATA,
        "TagSpecifications": [
            _tag_spec("instance", spec.name, Name=name, **{HOST_TAG: host}),
            _tag_spec("volume", spec.name, Name=f"{name}-root"),
            _tag_spec("network-interface", spec.name, Name=name),
        ],
    }
    try:
        return dict(ec2.run_instances(**params)["Instances"][0])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "IdempotentInstanceTerminated":
            raise
    # The token's earlier instance was terminated (by hand): launch a fresh one.
    log(f"{host}: its previous instance was terminated; launching a new one")
    params["ClientToken"] = _client_token(spec, host, parts, salt=str(time.time_ns()))
    return dict(ec2.run_instances(**params)["Instances"][0])


def _wait(ec2: Any, waiter_name: str, ids: list[str] | tuple[str, ...], state: str) -> None:
    try:
        ec2.get_waiter(waiter_name).wait(InstanceIds=list(ids), WaiterConfig=WAITER_CONFIG)
    except WaiterError as exc:
        raise DeployError(
            f"instances {', '.join(ids)} did not reach '{state}' within "
            f"{WAITER_CONFIG['Delay'] * WAITER_CONFIG['MaxAttempts'] // 60} minutes ({exc}); "
            "check them in the EC2 console: running the same command again is safe"
        ) from None


def _read_state_for(state_file: Path | None, cluster: str) -> dict[str, Any] | None:
    """The state file's JSON if it exists and describes ``cluster``, else None."""
    if state_file is None or not state_file.exists():
        return None
    try:
        data = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(data, dict) and data.get("cluster") == cluster:
        return data
    return None
