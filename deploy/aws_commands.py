"""``cl-deploy provision`` and ``cl-deploy destroy`` (boto3, no Terraform)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deploy.cli import SubParsers, add_state_file_option
from deploy.errors import DeployError


def register(subparsers: SubParsers) -> None:
    provision = subparsers.add_parser(
        "provision",
        help="create (or converge) the EC2 hosts, security group and key pair",
        description="Create the cluster's EC2 hosts with boto3 and write the hosts file. "
        "Safe to run again: it converges to the requested hosts and makes nothing twice. "
        "Running hosts cost money until `cl-deploy destroy`.",
    )
    _add_cluster_options(provision)
    provision.add_argument("--count", type=int, default=3, help="number of hosts (default: 3)")
    provision.add_argument(
        "--instance-type", default="t3.small", help="EC2 instance type (default: t3.small)"
    )
    provision.add_argument(
        "--ssh-cidr",
        required=True,
        metavar="CIDR",
        help="your public IPv4 address/CIDR allowed to ssh, e.g. 203.0.113.7/32",
    )
    provision.add_argument(
        "--allow-wide-ssh-cidr",
        action="store_true",
        help="accept an --ssh-cidr wider than /8 (refused by default)",
    )
    provision.add_argument(
        "--host-key-timeout",
        type=float,
        default=900,
        metavar="SECONDS",
        help="wait this long for the hosts to print their ssh host keys (default: 900)",
    )
    provision.add_argument(
        "--key-name",
        metavar="NAME",
        help="EC2 key pair name (default: chandy-lamport-<name>); an existing key pair "
        "of that name is used as is",
    )
    provision.add_argument(
        "--public-key",
        type=Path,
        metavar="PATH",
        help="import this ssh public key (e.g. ~/.ssh/id_ed25519.pub) instead of creating "
        "a new key pair whose private key is saved next to the state file",
    )
    provision.add_argument(
        "--node-ports",
        default="50051-50099",
        metavar="FIRST-LAST",
        help="node gRPC port range, open between hosts only (default: 50051-50099)",
    )
    provision.add_argument(
        "--collector-port",
        type=int,
        default=50050,
        help="collector gRPC port, open between hosts only (default: 50050)",
    )
    provision.add_argument(
        "--ami",
        metavar="AMI_ID",
        help="AMI to use instead of the latest Debian 12 amd64 (Ubuntu 22.04 also works)",
    )
    add_state_file_option(provision)
    provision.set_defaults(handler=run_provision)

    destroy = subparsers.add_parser(
        "destroy",
        help="terminate the hosts and delete the security group and key pair",
        description="Delete everything `cl-deploy provision` created for the cluster "
        "(found by its tags), then the hosts file and any private key it created.",
    )
    _add_cluster_options(destroy)
    add_state_file_option(destroy)
    destroy.set_defaults(handler=run_destroy)


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--region",
        default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        help="AWS region (default: $AWS_REGION or $AWS_DEFAULT_REGION)",
    )
    parser.add_argument(
        "--name",
        "--cluster",
        dest="name",
        default="demo",
        help="cluster name, the value of the chandy-lamport:cluster tag (default: demo)",
    )


def _region(args: argparse.Namespace) -> str:
    if not args.region:
        raise DeployError("no region: pass --region (e.g. --region eu-west-1) or set AWS_REGION")
    return str(args.region)


def _node_ports(text: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    try:
        return (int(first), int(last if sep else first))
    except ValueError:
        raise DeployError(f"--node-ports {text!r} must look like 50051-50099") from None


def run_provision(args: argparse.Namespace) -> int:
    from deploy.aws import ClusterSpec, provision

    spec = ClusterSpec(
        name=args.name,
        region=_region(args),
        ssh_cidr=args.ssh_cidr,
        count=args.count,
        instance_type=args.instance_type,
        key_name=args.key_name,
        public_key_path=args.public_key.expanduser() if args.public_key else None,
        node_ports=_node_ports(args.node_ports),
        collector_port=args.collector_port,
        ami_id=args.ami,
        state_file=args.state_file,
        allow_wide_ssh_cidr=args.allow_wide_ssh_cidr,
        host_key_timeout=args.host_key_timeout,
    )
    result = provision(spec)
    inv = result.inventory
    identity = f"-i {inv.key_path} " if inv.key_path else ""
    for host in inv.hosts:
        print(f"{host.name}\t{host.public_ip}\t{host.private_ip}")
    print(f"hosts file: {result.state_file}")
    print(f"ssh: ssh {identity}{inv.ssh_user}@{inv.hosts[0].public_ip}")
    print(
        "the hosts cost money while they exist: "
        f"`cl-deploy destroy --name {spec.name} --region {spec.region}` removes them"
    )
    return 0


def run_destroy(args: argparse.Namespace) -> int:
    from deploy.aws import destroy

    result = destroy(args.name, _region(args), state_file=args.state_file)
    print(
        f"destroyed {len(result.instance_ids)} instances, "
        f"{len(result.security_group_ids)} security groups, {len(result.key_names)} key pairs"
    )
    return 0
