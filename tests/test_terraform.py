"""Static checks of terraform/: HCL parses, the security policy holds, checkov passes.

No provider is downloaded and no AWS API is called. The checkov scan runs
from its own virtualenv (scripts/install-checkov.sh creates .venv-checkov):
missing under CI=true it is a failure, locally a skip that says how to get it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from deploy import aws, sg_rules
from deploy.userdata import USER_DATA

ROOT = Path(__file__).resolve().parents[1]
TF_DIR = ROOT / "terraform"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CHECKOV_CONFIG = TF_DIR / ".checkov.yaml"
# Offline: no update check against the package index, no Prisma Cloud download.
CHECKOV_ENV = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}
SG_REF = "${aws_security_group.cluster.id}"


def _unquote(value: Any) -> Any:
    """python-hcl2 >= 8 keeps the quotes of strings and labels and adds markers."""
    if isinstance(value, dict):
        return {
            _unquote(k): _unquote(v)
            for k, v in value.items()
            if not (isinstance(k, str) and k.startswith("__"))
        }
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _load(name: str) -> dict[str, Any]:
    with (TF_DIR / name).open(encoding="utf-8") as f:
        return _unquote(hcl2.load(f))  # type: ignore[no-any-return]


def _blocks(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """{type.name: body} of every `resource`/`data` block (or {name: body} for others)."""
    found: dict[str, dict[str, Any]] = {}
    for entry in doc.get(kind, []):
        for type_or_name, body in entry.items():
            if kind in ("resource", "data"):
                for name, inner in body.items():
                    found[f"{type_or_name}.{name}"] = inner
            else:
                found[type_or_name] = body
    return found


def _block(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body[key]
    return value[0] if isinstance(value, list) else value  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def main_tf() -> dict[str, Any]:
    return _load("main.tf")


@pytest.fixture(scope="module")
def resources(main_tf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _blocks(main_tf, "resource")


@pytest.fixture(scope="module")
def variables() -> dict[str, dict[str, Any]]:
    return _blocks(_load("variables.tf"), "variable")


def _of_type(resources: dict[str, dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in resources.items() if k.startswith(f"{kind}.")}


# --- parsing and layout -----------------------------------------------------------------


def test_every_tf_file_parses() -> None:
    files = sorted(p.name for p in TF_DIR.glob("*.tf"))
    assert {"versions.tf", "variables.tf", "main.tf", "outputs.tf"} <= set(files)
    for name in files:
        assert _load(name), f"{name} parsed to nothing"


def test_aws_provider_is_pinned() -> None:
    terraform = _load("versions.tf")["terraform"][0]
    assert terraform["required_version"]
    aws_provider = terraform["required_providers"][0]["aws"]
    assert aws_provider["source"] == "hashicorp/aws"
    assert re.fullmatch(r"(~>|=)\s*\d+\.\d+(\.\d+)?", aws_provider["version"])


def test_variables_are_typed_and_described(variables: dict[str, dict[str, Any]]) -> None:
    required = {
        "region",
        "host_count",
        "instance_type",
        "key_name",
        "ssh_cidr",
        "node_port_first",
        "node_port_last",
        "collector_port",
    }
    assert required <= set(variables)
    for name, body in variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert len(body.get("description", "")) > 10, f"variable {name} has no description"
    # The operator must say who may ssh in: no default, and never the world.
    assert "default" not in variables["ssh_cidr"]
    condition = variables["ssh_cidr"]["validation"][0]["condition"]
    assert "0.0.0.0/0" in condition


def test_default_tags_carry_the_cluster_tag(main_tf: dict[str, Any]) -> None:
    provider = main_tf["provider"][0]["aws"]
    assert _block(provider, "default_tags")["tags"] == "${local.common_tags}"
    common = main_tf["locals"][0]["common_tags"]
    assert aws.CLUSTER_TAG in common and "chandy-lamport" in common


# --- security group ---------------------------------------------------------------------


def test_security_group_has_no_inline_rules(resources: dict[str, dict[str, Any]]) -> None:
    groups = _of_type(resources, "aws_security_group")
    assert list(groups) == ["aws_security_group.cluster"]
    assert not {"ingress", "egress"} & set(groups["aws_security_group.cluster"])


def test_ssh_only_from_the_operator_cidr(resources: dict[str, dict[str, Any]]) -> None:
    ingress = _of_type(resources, "aws_vpc_security_group_ingress_rule")
    ssh = ingress["aws_vpc_security_group_ingress_rule.ssh"]
    assert (ssh["from_port"], ssh["to_port"], ssh["ip_protocol"]) == (22, 22, "tcp")
    assert ssh["cidr_ipv4"] == "${var.ssh_cidr}"
    assert ssh["security_group_id"] == SG_REF
    # No other ingress rule admits any address range at all.
    for name, rule in ingress.items():
        assert rule["security_group_id"] == SG_REF
        assert rule.get("description")
        if name != "aws_vpc_security_group_ingress_rule.ssh":
            assert not {"cidr_ipv4", "cidr_ipv6", "prefix_list_id"} & set(rule), name


def test_grpc_ports_only_from_the_group_itself(resources: dict[str, dict[str, Any]]) -> None:
    ingress = _of_type(resources, "aws_vpc_security_group_ingress_rule")
    assert set(ingress) == {
        "aws_vpc_security_group_ingress_rule.ssh",
        "aws_vpc_security_group_ingress_rule.node_grpc",
        "aws_vpc_security_group_ingress_rule.collector_grpc",
    }
    node = ingress["aws_vpc_security_group_ingress_rule.node_grpc"]
    assert (node["from_port"], node["to_port"]) == (
        "${var.node_port_first}",
        "${var.node_port_last}",
    )
    collector = ingress["aws_vpc_security_group_ingress_rule.collector_grpc"]
    assert collector["from_port"] == collector["to_port"] == "${var.collector_port}"
    for rule in (node, collector):
        assert rule["referenced_security_group_id"] == SG_REF
        assert rule["ip_protocol"] == "tcp"


def test_egress_is_limited(resources: dict[str, dict[str, Any]]) -> None:
    egress = _of_type(resources, "aws_vpc_security_group_egress_rule")
    for name, rule in egress.items():
        assert rule["ip_protocol"] == "tcp", f"{name}: no all-protocol egress"
        if rule.get("cidr_ipv4") == "0.0.0.0/0":
            assert rule["from_port"] == rule["to_port"] and rule["from_port"] in (80, 443), name
        else:
            assert rule["referenced_security_group_id"] == SG_REF, name


def _resolve(value: Any, defaults: dict[str, Any]) -> Any:
    if isinstance(value, str) and (m := re.fullmatch(r"\$\{var\.(\w+)\}", value)):
        return defaults[m.group(1)]
    return value


def test_boto3_rules_are_the_terraform_rules(
    resources: dict[str, dict[str, Any]], variables: dict[str, dict[str, Any]]
) -> None:
    defaults = {k: v.get("default") for k, v in variables.items()}
    defaults["ssh_cidr"] = "203.0.113.7/32"

    def peer(rule: dict[str, Any]) -> str:
        if rule.get("referenced_security_group_id") == SG_REF:
            return "self"
        return str(_resolve(rule["cidr_ipv4"], defaults))

    terraform_rules = {
        (
            "ingress" if kind.endswith("ingress_rule") else "egress",
            rule["ip_protocol"],
            _resolve(rule["from_port"], defaults),
            _resolve(rule["to_port"], defaults),
            peer(rule),
        )
        for kind in ("aws_vpc_security_group_ingress_rule", "aws_vpc_security_group_egress_rule")
        for rule in _of_type(resources, kind).values()
    }
    boto3_rules = {
        (r.direction, r.protocol, r.from_port, r.to_port, "self" if r.group_id else r.cidr)
        for r in sg_rules.desired_rules(
            "sg-self",
            defaults["ssh_cidr"],
            (defaults["node_port_first"], defaults["node_port_last"]),
            defaults["collector_port"],
        )
    }
    assert terraform_rules == boto3_rules
    spec = aws.ClusterSpec(name="x", region="eu-west-1", ssh_cidr="203.0.113.7/32")
    assert spec.node_ports == (defaults["node_port_first"], defaults["node_port_last"])
    assert spec.collector_port == defaults["collector_port"]
    assert spec.instance_type == defaults["instance_type"]
    assert spec.count == defaults["host_count"]
    assert spec.root_volume_gib == defaults["root_volume_size"]


# --- instances --------------------------------------------------------------------------


def test_instances_require_imdsv2_and_encrypt_the_root_volume(
    resources: dict[str, dict[str, Any]],
) -> None:
    host = resources["aws_instance.host"]
    metadata = _block(host, "metadata_options")
    assert metadata["http_tokens"] == "required"
    assert metadata["http_endpoint"] == "enabled"
    assert metadata["http_put_response_hop_limit"] == 1
    root = _block(host, "root_block_device")
    assert root["encrypted"] is True
    assert root["volume_type"] == "gp3"
    assert host["vpc_security_group_ids"] == [SG_REF]
    assert host["count"] == "${var.host_count}"
    assert "../deploy/user_data.sh" in host["user_data"]


def test_ami_and_ssh_user_match_the_boto3_path(main_tf: dict[str, Any]) -> None:
    data = _blocks(main_tf, "data")
    ami = data["aws_ami.debian"]
    local = main_tf["locals"][0]
    assert ami["owners"] == ["${local.debian_owner_id}"]
    assert local["debian_owner_id"] == aws.DEBIAN_OWNER_ID
    filters = {f["name"]: f["values"] for f in ami["filter"]}
    assert filters["name"] == [aws.DEBIAN_AMI_NAME]
    assert filters["architecture"] == ["x86_64"]
    assert local["ssh_user"] == aws.SSH_USER


def test_user_data_is_shared_with_the_boto3_path() -> None:
    script_path = (TF_DIR / "../deploy/user_data.sh").resolve()
    script = script_path.read_text(encoding="utf-8")
    assert script == USER_DATA
    assert "docker-compose-plugin" in script
    subprocess.run(["bash", "-n", str(script_path)], check=True)


def test_outputs_are_what_the_deploy_tool_reads() -> None:
    outputs = _blocks(_load("outputs.tf"), "output")
    assert {"hosts", "ssh_user"} <= set(outputs)
    hosts = outputs["hosts"]["value"]
    for key in ("name", "public_ip", "private_ip"):
        assert re.search(rf"\b{key}\s*=", hosts), key
    assert outputs["ssh_user"]["value"] == "${local.ssh_user}"
    for name, body in outputs.items():
        assert body.get("description"), f"output {name} has no description"


def test_terraform_fmt_is_clean() -> None:
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed (the HCL checks above still ran)")
    result = subprocess.run(
        [terraform, "fmt", "-check", "-diff", "-recursive", str(TF_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"run `terraform fmt terraform/`:\n{result.stdout}"


# --- checkov ----------------------------------------------------------------------------


def _checkov_or_skip() -> Path:
    if CHECKOV.exists():
        return CHECKOV
    reason = f"checkov is not installed at {CHECKOV}: run scripts/install-checkov.sh"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def _run_checkov(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_checkov_or_skip()), "--config-file", str(CHECKOV_CONFIG), "-d", str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **CHECKOV_ENV},
        cwd=ROOT,
    )


def test_checkov_config_gives_a_reason_for_every_skip() -> None:
    config = yaml.safe_load(CHECKOV_CONFIG.read_text(encoding="utf-8"))
    assert config["framework"] == ["terraform"]
    assert config["skip-download"] is True
    lines = CHECKOV_CONFIG.read_text(encoding="utf-8").splitlines()
    for check in config["skip-check"]:
        index = lines.index(f"  - {check}")
        assert lines[index - 1].lstrip().startswith("#"), f"{check} is skipped without a reason"
    # The checks this project relies on are never skipped.
    assert not {"CKV_AWS_79", "CKV_AWS_8", "CKV_AWS_24", "CKV_AWS_23"} & set(config["skip-check"])


def test_checkov_scan_passes() -> None:
    result = _run_checkov(TF_DIR)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.search(r"Passed checks: (\d+), Failed checks: (\d+)", output)
    assert passed, output
    assert int(passed.group(1)) >= 20 and int(passed.group(2)) == 0, output


def test_checkov_catches_imdsv1_and_unencrypted_volumes(tmp_path: Path) -> None:
    broken = tmp_path / "terraform"
    shutil.copytree(TF_DIR, broken)
    main = broken / "main.tf"
    text = main.read_text(encoding="utf-8")
    text = text.replace('http_tokens                 = "required"', 'http_tokens = "optional"')
    text = text.replace("encrypted             = true", "encrypted = false")
    main.write_text(text, encoding="utf-8")

    result = _run_checkov(broken)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "CKV_AWS_79" in output and "CKV_AWS_8" in output, output


def test_ssh_cidr_wider_than_slash_8_needs_the_explicit_switch(
    resources: dict[str, dict[str, Any]], variables: dict[str, dict[str, Any]]
) -> None:
    assert variables["allow_wide_ssh_cidr"]["default"] is False
    ssh = resources["aws_vpc_security_group_ingress_rule.ssh"]
    precondition = _block(_block(ssh, "lifecycle"), "precondition")
    condition = precondition["condition"]
    assert "var.allow_wide_ssh_cidr ||" in condition and ">= 8" in condition
    # The same rule as the boto3 path (deploy.aws.validate_spec).
    assert aws.MIN_SSH_PREFIX == 8
    assert "wider than /8" in precondition["error_message"]
