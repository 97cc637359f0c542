"""deploy.aws (boto3 provisioning) against moto, plus deploy.hosts and the CLI.

Clients are created inside ``mock_aws``; credentials are fake and set per test;
the instance-metadata credential lookup is disabled so nothing leaves the
process.
"""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.exceptions import NoCredentialsError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from moto import mock_aws
from moto.ec2.models import amis as moto_amis
from moto.ec2.responses import general as moto_general

from deploy import DeployError, Host, load_hosts
from deploy.aws import (
    CLUSTER_TAG,
    DEBIAN_OWNER_ID,
    HOST_TAG,
    MANAGED_BY_TAG,
    ClusterSpec,
    aws_errors,
    destroy,
    provision,
)
from deploy.cli import build_parser, main
from deploy.userdata import USER_DATA

REGION = "eu-west-1"
CLUSTER = "demo"
SSH_CIDR = "203.0.113.7/32"
OLD_DEBIAN_AMI = "ami-0debian12old000001"
NEW_DEBIAN_AMI = "ami-0debian12new000002"


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, no profile/config files, no instance-metadata lookups."""
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def _debian_image(ami_id: str, name: str, created: str) -> dict[str, Any]:
    return {
        "ami_id": ami_id,
        "name": name,
        "description": "Debian 12 (test image)",
        "owner_id": DEBIAN_OWNER_ID,
        "state": "available",
        "public": True,
        "architecture": "x86_64",
        "image_type": "machine",
        "virtualization_type": "hvm",
        "hypervisor": "xen",
        "root_device_type": "ebs",
        "root_device_name": "/dev/xvda",
        "sriov": "simple",
        "creation_date": created,
    }


@pytest.fixture
def debian_amis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian 12 AMIs in moto's catalogue (it ships none), plus a decoy."""
    extra = [
        _debian_image(OLD_DEBIAN_AMI, "debian-12-amd64-20240101-1000", "2024-01-01T10:00:00.000Z"),
        _debian_image(NEW_DEBIAN_AMI, "debian-12-amd64-20250601-2000", "2025-06-01T20:00:00.000Z"),
        # Newest of all, but not plain amd64: must not be chosen.
        _debian_image(
            "ami-0debian12backport3",
            "debian-12-backports-amd64-20250701-0000",
            "2025-07-01T00:00:00.000Z",
        ),
    ]
    monkeypatch.setattr(moto_amis, "AMIS", [*moto_amis.AMIS, *extra])


# What cloud-init on a real Debian image prints to the serial console at first
# boot (moto's canned console output has no such block; AWS cannot run here).
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHN0YW5kLWluLWhvc3Qta2V5LWZvci10ZXN0cw"
ECDSA_KEY = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY="
CLOUD_INIT_CONSOLE = f"""[   12.3] cloud-init[512]: Cloud-init v. 22.4.2 running 'modules:final'
<14>Dec  1 10:00:00 cloud-init: #############################################################
-----BEGIN SSH HOST KEY FINGERPRINTS-----
256 SHA256:abc root@ip-172-31-1-2 (ECDSA)
-----END SSH HOST KEY FINGERPRINTS-----
-----BEGIN SSH HOST KEY KEYS-----
{ECDSA_KEY} root@ip-172-31-1-2
{HOST_KEY} root@ip-172-31-1-2
-----END SSH HOST KEY KEYS-----
"""


@pytest.fixture(autouse=True)
def console_with_host_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto_general, "SAMPLE_CONSOLE_OUTPUT", CLOUD_INIT_CONSOLE)


@pytest.fixture
def ec2(aws_env: None, debian_amis: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def _spec(tmp_path: Path, **overrides: Any) -> ClusterSpec:
    values: dict[str, Any] = {
        "name": CLUSTER,
        "region": REGION,
        "ssh_cidr": SSH_CIDR,
        "count": 3,
        "state_file": tmp_path / "state" / "hosts.json",
    }
    values.update(overrides)
    return ClusterSpec(**values)


def _quiet(_: str) -> None:
    pass


def _cluster_instances(ec2: Any, states: tuple[str, ...] = ("pending", "running")) -> list[Any]:
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": f"tag:{CLUSTER_TAG}", "Values": [CLUSTER]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]
    )
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def _cluster_groups(ec2: Any) -> list[Any]:
    return ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [f"chandy-lamport-{CLUSTER}"]}]
    )["SecurityGroups"]


def _rule_set(group: dict[str, Any], key: str) -> set[tuple[Any, ...]]:
    rules = set()
    for perm in group[key]:
        base = (perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"))
        rules.update((*base, "cidr", r["CidrIp"]) for r in perm.get("IpRanges", []))
        rules.update((*base, "group", r["GroupId"]) for r in perm.get("UserIdGroupPairs", []))
        rules.update((*base, "ipv6", r["CidrIpv6"]) for r in perm.get("Ipv6Ranges", []))
    return rules


# --- provision --------------------------------------------------------------------------


def test_provision_creates_exactly_the_described_resources(
    ec2: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path)
    result = provision(spec)

    instances = _cluster_instances(ec2)
    assert len(instances) == 3
    assert sorted(i["InstanceId"] for i in instances) == sorted(result.instance_ids)
    by_host = {_tags(i)[HOST_TAG]: i for i in instances}
    assert sorted(by_host) == ["host-0", "host-1", "host-2"]
    groups = _cluster_groups(ec2)
    assert len(groups) == 1
    group = groups[0]
    sg = group["GroupId"]
    assert result.security_group_id == sg
    for inst in instances:
        tags = _tags(inst)
        assert tags[CLUSTER_TAG] == CLUSTER
        assert tags[MANAGED_BY_TAG] == "cl-deploy"
        assert inst["State"]["Name"] == "running"
        assert inst["InstanceType"] == "t3.small"
        # The newest plain Debian 12 amd64 image, not the older one nor backports.
        assert inst["ImageId"] == NEW_DEBIAN_AMI
        assert inst["KeyName"] == "chandy-lamport-demo"
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        assert inst["MetadataOptions"]["HttpEndpoint"] == "enabled"
        assert inst.get("PublicIpAddress")
        eni_groups = {g["GroupId"] for eni in inst["NetworkInterfaces"] for g in eni["Groups"]}
        assert eni_groups == {sg}
        volumes = ec2.describe_volumes(
            Filters=[{"Name": "attachment.instance-id", "Values": [inst["InstanceId"]]}]
        )["Volumes"]
        assert len(volumes) == 1
        assert volumes[0]["Encrypted"] is True
        assert volumes[0]["VolumeType"] == "gp3"
        assert _tags(volumes[0])[CLUSTER_TAG] == CLUSTER
        user_data = ec2.describe_instance_attribute(
            InstanceId=inst["InstanceId"], Attribute="userData"
        )["UserData"]["Value"]
        assert base64.b64decode(user_data).decode() == USER_DATA
    # All hosts share one subnet (one AZ).
    assert len({i["SubnetId"] for i in instances}) == 1

    # Exactly the rules of terraform/main.tf: no default allow-all egress left.
    assert _rule_set(group, "IpPermissions") == {
        ("tcp", 22, 22, "cidr", SSH_CIDR),
        ("tcp", 50051, 50099, "group", sg),
        ("tcp", 50050, 50050, "group", sg),
    }
    assert _rule_set(group, "IpPermissionsEgress") == {
        ("tcp", 50051, 50099, "group", sg),
        ("tcp", 50050, 50050, "group", sg),
        ("tcp", 443, 443, "cidr", "0.0.0.0/0"),
        ("tcp", 80, 80, "cidr", "0.0.0.0/0"),
    }
    assert _tags(group)[CLUSTER_TAG] == CLUSTER

    pairs = ec2.describe_key_pairs()["KeyPairs"]
    assert [p["KeyName"] for p in pairs] == ["chandy-lamport-demo"]
    assert _tags(pairs[0])[CLUSTER_TAG] == CLUSTER
    key_file = spec.private_key_path
    assert key_file.read_text().startswith("-----BEGIN")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # The state file has the Terraform `hosts` shape plus ssh user and key.
    inventory = load_hosts(spec.state_file)
    assert inventory == result.inventory
    assert inventory.ssh_user == "admin"
    assert inventory.key_path == key_file.resolve()
    assert inventory.hosts == tuple(
        Host(
            h,
            by_host[h]["PublicIpAddress"],
            by_host[h]["PrivateIpAddress"],
            (ECDSA_KEY, HOST_KEY),  # read from the console, pinned for ssh
        )
        for h in ("host-0", "host-1", "host-2")
    )
    state = json.loads(spec.state_file.read_text())
    assert state["cluster"] == CLUSTER and state["region"] == REGION
    assert set(state["hosts"][0]) == {"name", "public_ip", "private_ip", "host_keys"}

    err = capsys.readouterr().err
    assert "[provision] waiting for 3 instances to be running..." in err.splitlines()
    assert all(line.startswith("[provision] ") for line in err.splitlines())


def test_provision_twice_is_idempotent(ec2: Any, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    first = provision(spec, log=_quiet)
    group_before = _cluster_groups(ec2)[0]
    key_before = spec.private_key_path.read_text()
    second_log: list[str] = []

    second = provision(spec, log=second_log.append)

    assert second.instance_ids == first.instance_ids
    assert second.security_group_id == first.security_group_id
    assert second.inventory == first.inventory
    assert len(_cluster_instances(ec2, ("pending", "running", "stopped"))) == 3
    groups = _cluster_groups(ec2)
    assert len(groups) == 1
    assert _rule_set(groups[0], "IpPermissions") == _rule_set(group_before, "IpPermissions")
    assert _rule_set(groups[0], "IpPermissionsEgress") == _rule_set(
        group_before, "IpPermissionsEgress"
    )
    assert len(ec2.describe_key_pairs()["KeyPairs"]) == 1
    assert spec.private_key_path.read_text() == key_before
    assert not [m for m in second_log if m.startswith(("launching", "creating", "setting"))]


def test_provision_converges_count_cidr_and_stopped_hosts(ec2: Any, tmp_path: Path) -> None:
    first = provision(_spec(tmp_path), log=_quiet)
    ec2.stop_instances(InstanceIds=[first.instance_ids[0]])

    second = provision(_spec(tmp_path, count=2, ssh_cidr="198.51.100.0/24"), log=_quiet)

    assert second.instance_ids == first.instance_ids[:2]
    live = _cluster_instances(ec2, ("pending", "running", "stopping", "stopped"))
    assert sorted(i["InstanceId"] for i in live) == sorted(first.instance_ids[:2])
    assert all(i["State"]["Name"] == "running" for i in live)
    ingress = _rule_set(_cluster_groups(ec2)[0], "IpPermissions")
    assert ("tcp", 22, 22, "cidr", "198.51.100.0/24") in ingress
    assert ("tcp", 22, 22, "cidr", SSH_CIDR) not in ingress
    assert len(load_hosts(tmp_path / "state" / "hosts.json").hosts) == 2


def test_provision_imports_the_operators_public_key(ec2: Any, tmp_path: Path) -> None:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    (tmp_path / "id_ed25519").write_text("private part\n")
    (tmp_path / "id_ed25519.pub").write_bytes(public + b" me@laptop\n")

    result = provision(
        _spec(tmp_path, key_name="operator", public_key_path=tmp_path / "id_ed25519.pub"),
        log=_quiet,
    )

    pairs = ec2.describe_key_pairs()["KeyPairs"]
    assert [(p["KeyName"], p["KeyType"]) for p in pairs] == [("operator", "ed25519")]
    assert result.inventory.key_path == (tmp_path / "id_ed25519").resolve()
    assert not (tmp_path / "state" / "operator.pem").exists()


# --- destroy ----------------------------------------------------------------------------


def test_destroy_removes_everything_it_created(
    ec2: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path)
    created = provision(spec, log=_quiet)

    gone = destroy(CLUSTER, REGION, state_file=spec.state_file)

    assert sorted(gone.instance_ids) == sorted(created.instance_ids)
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2.describe_instances(InstanceIds=list(created.instance_ids))["Reservations"]
        for i in r["Instances"]
    }
    assert set(states.values()) == {"terminated"}
    assert _cluster_groups(ec2) == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert not spec.private_key_path.exists()
    assert not spec.state_file.exists()
    err = capsys.readouterr().err
    assert "[destroy] waiting for 3 instances to be terminated..." in err.splitlines()

    again = destroy(CLUSTER, REGION, state_file=spec.state_file)
    assert again.instance_ids == again.security_group_ids == again.key_names == ()
    assert "nothing to destroy" in capsys.readouterr().err


def test_destroy_leaves_resources_it_did_not_create(ec2: Any, tmp_path: Path) -> None:
    provision(_spec(tmp_path), log=_quiet)
    image = ec2.describe_images(Owners=[DEBIAN_OWNER_ID])["Images"][0]["ImageId"]
    # Same cluster tag, made by Terraform: cl-deploy must not touch it.
    foreign = ec2.run_instances(
        ImageId=image,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": CLUSTER_TAG, "Value": CLUSTER},
                    {"Key": MANAGED_BY_TAG, "Value": "terraform"},
                ],
            }
        ],
    )["Instances"][0]["InstanceId"]

    destroy(CLUSTER, REGION, state_file=tmp_path / "state" / "hosts.json", log=_quiet)

    [survivor] = _cluster_instances(ec2)
    assert survivor["InstanceId"] == foreign


# --- errors -----------------------------------------------------------------------------


def test_missing_credentials_is_a_clear_error(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    with mock_aws(config={"core": {"mock_credentials": False}}):
        with pytest.raises(DeployError, match="no AWS credentials found") as info:
            provision(_spec(tmp_path), log=_quiet)
        assert "AWS_ACCESS_KEY_ID" in str(info.value)
        with pytest.raises(DeployError, match="credentials"):
            destroy(CLUSTER, REGION, state_file=None, log=_quiet)


def test_credentials_failing_mid_call_is_a_clear_error() -> None:
    with pytest.raises(DeployError, match="no AWS credentials found"):
        with aws_errors(REGION):
            raise NoCredentialsError()


@pytest.mark.parametrize("region", ["eu-westt-1", "mars-north-1", ""])
def test_unknown_region_is_a_clear_error(ec2: Any, tmp_path: Path, region: str) -> None:
    with pytest.raises(DeployError, match=f"unknown AWS region '{region}'"):
        provision(_spec(tmp_path, region=region), log=_quiet)
    with pytest.raises(DeployError, match=f"unknown AWS region '{region}'"):
        destroy(CLUSTER, region, state_file=None, log=_quiet)
    assert _cluster_instances(ec2) == []


def test_missing_ami_is_a_clear_error_and_creates_nothing(aws_env: None, tmp_path: Path) -> None:
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        with pytest.raises(DeployError, match="no Debian 12 amd64 AMI") as info:
            provision(_spec(tmp_path), log=_quiet)
        assert REGION in str(info.value) and "--ami" in str(info.value)
        with pytest.raises(DeployError, match="ami-0123456789abcdef0"):
            provision(_spec(tmp_path, ami_id="ami-0123456789abcdef0"), log=_quiet)
        assert ec2.describe_key_pairs()["KeyPairs"] == []
        assert _cluster_groups(ec2) == []
        assert _cluster_instances(ec2) == []


@pytest.mark.parametrize("code", ["InstanceLimitExceeded", "VcpuLimitExceeded"])
def test_quota_exceeded_is_a_clear_error(ec2: Any, tmp_path: Path, code: str) -> None:
    session = boto3.session.Session()

    def refuse_launch(**_: Any) -> tuple[Any, dict[str, Any]]:
        http = SimpleNamespace(status_code=400, headers={}, raw=None)
        return http, {"Error": {"Code": code, "Message": "You have requested more vCPU"}}

    session.events.register("before-call.ec2.RunInstances", refuse_launch)
    with pytest.raises(DeployError, match="quota exceeded") as info:
        provision(_spec(tmp_path), session=session, log=_quiet)
    assert code in str(info.value) and "--count" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ssh_cidr": "0.0.0.0/0"}, "whole internet"),
        ({"ssh_cidr": "0.0.0.0/1"}, "lets 2,147,483,648 addresses reach ssh"),
        ({"ssh_cidr": "10.0.0.0/7"}, "--allow-wide-ssh-cidr"),
        ({"ssh_cidr": "my laptop"}, "not an IPv4 CIDR"),
        ({"count": 0}, "--count"),
        ({"name": "Bad_Name"}, "cluster name"),
        ({"collector_port": 50060}, "inside the node port range"),
    ],
)
def test_bad_spec_is_refused_before_any_call(
    aws_env: None, tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    # No AWS mock: validation comes first. (Fake credentials, so that a call made
    # anyway fails with an AuthFailure, never launches anything on a real account.)
    with pytest.raises(DeployError, match=message):
        provision(_spec(tmp_path, **overrides), log=_quiet)


# --- load_hosts -------------------------------------------------------------------------

TERRAFORM_OUTPUT = {
    "hosts": {
        "sensitive": False,
        "type": ["tuple", [["object", {"name": "string"}]]],
        "value": [
            {"name": "host-0", "public_ip": "198.51.100.10", "private_ip": "172.31.1.10"},
            {"name": "host-1", "public_ip": "198.51.100.11", "private_ip": "172.31.1.11"},
        ],
    },
    "ssh_user": {"sensitive": False, "type": "string", "value": "admin"},
    "region": {"sensitive": False, "type": "string", "value": "eu-west-1"},
}


def test_load_hosts_reads_terraform_output_json(tmp_path: Path) -> None:
    path = tmp_path / "tf.json"
    path.write_text(json.dumps(TERRAFORM_OUTPUT))
    inventory = load_hosts(path)
    assert inventory.hosts == (
        Host("host-0", "198.51.100.10", "172.31.1.10"),
        Host("host-1", "198.51.100.11", "172.31.1.11"),
    )
    assert inventory.ssh_user == "admin"
    assert inventory.key_path is None
    with pytest.raises(AttributeError):
        inventory.hosts[0].name = "changed"  # type: ignore[misc]


def test_load_hosts_reads_state_file_with_relative_key(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    state = {
        "schema_version": 1,
        "ssh_user": "ubuntu",
        "key_path": "keys/demo.pem",
        "hosts": TERRAFORM_OUTPUT["hosts"]["value"],  # type: ignore[index]
    }
    path.write_text(json.dumps(state))
    inventory = load_hosts(path)
    assert inventory.ssh_user == "ubuntu"
    assert inventory.key_path == tmp_path / "keys" / "demo.pem"
    assert [h.name for h in inventory.hosts] == ["host-0", "host-1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ('{"ssh_user": "admin"}', "has no 'hosts'"),
        ('{"hosts": [], "ssh_user": "admin"}', "non-empty list"),
        ('{"hosts": [{"name": "a", "public_ip": "1.2.3.4"}], "ssh_user": "x"}', "private_ip"),
        (
            '{"hosts": [{"name": "a", "public_ip": "nope", "private_ip": "10.0.0.1"}],'
            ' "ssh_user": "x"}',
            "not an IP address",
        ),
        (
            '{"hosts": [{"name": "a", "public_ip": null, "private_ip": "10.0.0.1"}],'
            ' "ssh_user": "x"}',
            "is the instance running",
        ),
        ('{"hosts": {"value": [{"name": "a"}]}}', "ssh_user"),
    ],
)
def test_load_hosts_errors_name_the_problem(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "hosts.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DeployError, match=message):
        load_hosts(path)


# --- CLI --------------------------------------------------------------------------------


def test_cli_provision_and_destroy(
    ec2: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "cli" / "hosts.json"
    common = ["--region", REGION, "--name", CLUSTER, "--state-file", str(state)]

    assert main(["provision", *common, "--count", "2", "--ssh-cidr", SSH_CIDR]) == 0
    out = capsys.readouterr().out
    assert out.count("host-") == 2 and "ssh -i " in out and "cl-deploy destroy" in out
    assert len(load_hosts(state).hosts) == 2

    assert main(["destroy", *common]) == 0
    assert "destroyed 2 instances, 1 security groups, 1 key pairs" in capsys.readouterr().out
    assert _cluster_instances(ec2) == []


def test_cli_reports_errors_in_one_line(
    aws_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["provision", "--region", "nowhere-1", "--ssh-cidr", SSH_CIDR])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("cl-deploy provision: error: unknown AWS region 'nowhere-1'")
    assert "Traceback" not in err

    assert main(["destroy"]) == 1
    assert "--region" in capsys.readouterr().err


def test_cli_subcommands_come_from_registered_modules() -> None:
    parser = build_parser()
    args = parser.parse_args(["destroy", "--region", REGION, "--cluster", "c1"])
    assert (args.command, args.name, args.region) == ("destroy", "c1", REGION)
    assert callable(args.handler)
    with pytest.raises(SystemExit):
        build_parser(modules=()).parse_args(["provision"])


def test_provision_records_the_ssh_host_keys_from_the_console(ec2: Any, tmp_path: Path) -> None:
    provision(_spec(tmp_path, count=2), log=_quiet)
    state = json.loads((tmp_path / "state" / "hosts.json").read_text())
    assert [h["host_keys"] for h in state["hosts"]] == [[ECDSA_KEY, HOST_KEY]] * 2
    inventory = load_hosts(tmp_path / "state" / "hosts.json")
    assert inventory.hosts[0].host_keys == (ECDSA_KEY, HOST_KEY)


def test_provision_without_host_keys_in_the_console_says_so(
    ec2: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(moto_general, "SAMPLE_CONSOLE_OUTPUT", "Linux version 6.1\nbooting\n")
    with pytest.raises(DeployError, match="no ssh host keys in the console output of host-0"):
        provision(_spec(tmp_path, count=1, host_key_timeout=0), log=_quiet)
    assert not (tmp_path / "state" / "hosts.json").exists()


def test_wide_ssh_cidr_only_when_forced(ec2: Any, tmp_path: Path) -> None:
    provision(_spec(tmp_path, count=1, ssh_cidr="10.0.0.0/7", allow_wide_ssh_cidr=True), log=_quiet)
    groups = ec2.describe_security_groups(
        Filters=[{"Name": f"tag:{CLUSTER_TAG}", "Values": [CLUSTER]}]
    )
    ranges = [
        r["CidrIp"]
        for g in groups["SecurityGroups"]
        for p in g["IpPermissions"]
        if p.get("FromPort") == 22
        for r in p["IpRanges"]
    ]
    assert ranges == ["10.0.0.0/7"]


def test_hosts_file_with_a_bad_host_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    host = {"name": "host-0", "public_ip": "192.0.2.1", "private_ip": "10.0.0.1"}
    path.write_text(json.dumps({"ssh_user": "admin", "hosts": [{**host, "host_keys": ["nope"]}]}))
    with pytest.raises(DeployError, match=r"hosts\[0\]\.host_keys\[0\] is not an ssh public key"):
        load_hosts(path)
