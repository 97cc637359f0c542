# EC2 hosts for a chandy-lamport cluster.
#
# What this creates, in the region's default VPC:
#   - N Debian 12 (amd64) hosts, all in one default subnet (same AZ: lowest
#     latency between nodes, no cross-AZ traffic charges), each with a public
#     IP, IMDSv2 required and an encrypted gp3 root volume. cloud-init
#     (deploy/user_data.sh, shared with `cl-deploy provision`) installs Docker Engine and the Compose plugin.
#   - One security group: ssh (22) from var.ssh_cidr only; the node gRPC port
#     range and the collector port only from members of the same group;
#     egress to the same gRPC ports inside the group, and HTTP/HTTPS out
#     (apt and Docker's package repository). Terraform removes the default
#     allow-all egress rule of a new group, so these rules are all there is.
#   - Optionally, an EC2 key pair imported from the operator's public key.
#
# The AMI is Debian 12 "bookworm" from Debian's own AWS account
# (136693071363); its login user is "admin" (output ssh_user).
#
# deploy/aws.py creates the same thing with boto3 and the same tags; keep the
# two in step (tests/test_terraform.py and tests/test_deploy_aws.py check it).

provider "aws" {
  region = var.region

  default_tags {
    tags = local.common_tags
  }
}

locals {
  # Debian's official AWS account, and the login user of its cloud images.
  debian_owner_id = "136693071363"
  ssh_user        = "admin"

  common_tags = merge(var.extra_tags, {
    "Project"                = "chandy-lamport"
    "ManagedBy"              = "terraform"
    "chandy-lamport:cluster" = var.cluster_name
  })

  key_name  = var.public_key_path == null ? var.key_name : aws_key_pair.operator[0].key_name
  subnet_id = try(sort(data.aws_subnets.default.ids)[0], null)
}

data "aws_vpc" "default" {
  default = true
}

# Availability zones of the region that offer the chosen instance type.
data "aws_ec2_instance_type_offerings" "chosen" {
  location_type = "availability-zone"

  filter {
    name   = "instance-type"
    values = [var.instance_type]
  }
}

data "aws_subnets" "default" {
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default.id]
  }

  filter {
    name   = "default-for-az"
    values = ["true"]
  }

  filter {
    name   = "availability-zone"
    values = data.aws_ec2_instance_type_offerings.chosen.locations
  }
}

data "aws_ami" "debian" {
  most_recent = true
  owners      = [local.debian_owner_id]

  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }

  filter {
    name   = "architecture"
    values = ["x86_64"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

resource "aws_key_pair" "operator" {
  count = var.public_key_path == null ? 0 : 1

  key_name   = var.key_name
  public_key = trimspace(file(pathexpand(var.public_key_path)))
}

resource "aws_security_group" "cluster" {
  name        = "chandy-lamport-${var.cluster_name}"
  description = "chandy-lamport ${var.cluster_name}: ssh from the operator, gRPC between members"
  vpc_id      = data.aws_vpc.default.id

  tags = {
    Name = "chandy-lamport-${var.cluster_name}"
  }
}

# --- ingress -----------------------------------------------------------------

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  security_group_id = aws_security_group.cluster.id
  description       = "ssh from the operator only"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = var.ssh_cidr

  tags = {
    Name = "chandy-lamport-${var.cluster_name}-ssh"
  }

  lifecycle {
    # A variable's own validation cannot see another variable before Terraform 1.9.
    precondition {
      condition     = var.allow_wide_ssh_cidr || tonumber(split("/", var.ssh_cidr)[1]) >= 8
      error_message = "ssh_cidr is wider than /8: use your own address or network (e.g. 203.0.113.7/32), or set allow_wide_ssh_cidr = true if you really mean it."
    }
  }
}

resource "aws_vpc_security_group_ingress_rule" "node_grpc" {
  security_group_id            = aws_security_group.cluster.id
  description                  = "node gRPC from cluster members only"
  ip_protocol                  = "tcp"
  from_port                    = var.node_port_first
  to_port                      = var.node_port_last
  referenced_security_group_id = aws_security_group.cluster.id

  tags = {
    Name = "chandy-lamport-${var.cluster_name}-node-grpc"
  }

  lifecycle {
    precondition {
      condition     = var.node_port_first <= var.node_port_last
      error_message = "node_port_first must not be greater than node_port_last."
    }
    precondition {
      condition     = var.collector_port < var.node_port_first || var.collector_port > var.node_port_last
      error_message = "collector_port must lie outside the node port range."
    }
  }
}

resource "aws_vpc_security_group_ingress_rule" "collector_grpc" {
  security_group_id            = aws_security_group.cluster.id
  description                  = "collector gRPC from cluster members only"
  ip_protocol                  = "tcp"
  from_port                    = var.collector_port
  to_port                      = var.collector_port
  referenced_security_group_id = aws_security_group.cluster.id

  tags = {
    Name = "chandy-lamport-${var.cluster_name}-collector-grpc"
  }
}

# --- egress ------------------------------------------------------------------

resource "aws_vpc_security_group_egress_rule" "node_grpc" {
  security_group_id            = aws_security_group.cluster.id
  description                  = "node gRPC to cluster members"
  ip_protocol                  = "tcp"
  from_port                    = var.node_port_first
  to_port                      = var.node_port_last
  referenced_security_group_id = aws_security_group.cluster.id

  tags = {
    Name = "chandy-lamport-${var.cluster_name}-node-grpc-out"
  }
}

resource "aws_vpc_security_group_egress_rule" "collector_grpc" {
  security_group_id            = aws_security_group.cluster.id
  description                  = "collector gRPC to cluster members"
  ip_protocol                  = "tcp"
  from_port                    = var.collector_port
  to_port                      = var.collector_port
  referenced_security_group_id = aws_security_group.cluster.id

  tags = {
    Name = "chandy-lamport-${var.cluster_name}-collector-grpc-out"
  }
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.cluster.id
  description       = "HTTPS out: Docker package repository, apt, image and package downloads"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"

  tags = {
    Name = "chandy-lamport-${var.cluster_name}-https-out"
  }
}

resource "aws_vpc_security_group_egress_rule" "http" {
  security_group_id = aws_security_group.cluster.id
  description       = "HTTP out: Debian apt mirrors (packages are signed)"
  ip_protocol       = "tcp"
  from_port         = 80
  to_port           = 80
  cidr_ipv4         = "0.0.0.0/0"

  tags = {
    Name = "chandy-lamport-${var.cluster_name}-http-out"
  }
}

# --- hosts -------------------------------------------------------------------

resource "aws_instance" "host" {
  count = var.host_count

  ami                         = data.aws_ami.debian.id
  instance_type               = var.instance_type
  key_name                    = local.key_name
  subnet_id                   = local.subnet_id
  vpc_security_group_ids      = [aws_security_group.cluster.id]
  associate_public_ip_address = true
  ebs_optimized               = true
  user_data                   = file("${path.module}/../deploy/user_data.sh")
  user_data_replace_on_change = true

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    encrypted             = true
    volume_type           = "gp3"
    volume_size           = var.root_volume_size
    delete_on_termination = true

    tags = merge(local.common_tags, {
      Name = "${var.cluster_name}-host-${count.index}-root"
    })
  }

  tags = {
    Name                  = "${var.cluster_name}-host-${count.index}"
    "chandy-lamport:host" = "host-${count.index}"
  }

  lifecycle {
    # A newer Debian AMI must not replace running hosts; taint to rebuild.
    ignore_changes = [ami]

    precondition {
      condition     = length(data.aws_subnets.default.ids) > 0
      error_message = "No default subnet in the default VPC offers ${var.instance_type} in ${var.region}: choose another instance_type or region, or create a default VPC (aws ec2 create-default-vpc)."
    }
  }
}
