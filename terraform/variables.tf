variable "region" {
  type        = string
  description = "AWS region to create the hosts in, e.g. eu-west-1."
  default     = "eu-west-1"
}

variable "cluster_name" {
  type        = string
  description = "Name of this cluster. Prefixes every resource name and is the value of the chandy-lamport:cluster tag (the boto3 tool uses the same tag)."
  default     = "demo"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{0,31}$", var.cluster_name))
    error_message = "cluster_name must be 1-32 characters of lowercase letters, digits and '-', starting with a letter or digit."
  }
}

variable "host_count" {
  type        = number
  description = "Number of EC2 hosts to create (each runs part of the compose deployment)."
  default     = 3

  validation {
    condition     = var.host_count >= 1 && var.host_count <= 16 && floor(var.host_count) == var.host_count
    error_message = "host_count must be a whole number between 1 and 16."
  }
}

variable "instance_type" {
  type        = string
  description = "EC2 instance type of every host. t3.small (2 vCPU, 2 GiB) runs Docker and a few nodes comfortably."
  default     = "t3.small"
}

variable "root_volume_size" {
  type        = number
  description = "Size of each host's encrypted gp3 root volume, in GiB."
  default     = 16

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 256
    error_message = "root_volume_size must be between 8 and 256 GiB."
  }
}

variable "key_name" {
  type        = string
  description = "Name of the EC2 key pair the hosts accept for ssh. With public_key_path set, Terraform imports that public key under this name; otherwise a key pair with this name must already exist in the region."
}

variable "public_key_path" {
  type        = string
  description = "Path of the operator's ssh public key (e.g. ~/.ssh/id_ed25519.pub) to import as key pair key_name. Leave null to use an existing key pair."
  default     = null
}

variable "ssh_cidr" {
  type        = string
  description = "The operator's IPv4 CIDR allowed to reach port 22, e.g. 203.0.113.7/32 (your public IP: curl -s https://checkip.amazonaws.com). Nothing else can ssh in."

  validation {
    condition     = can(cidrhost(var.ssh_cidr, 0)) && !strcontains(var.ssh_cidr, ":") && var.ssh_cidr != "0.0.0.0/0"
    error_message = "ssh_cidr must be an IPv4 CIDR such as 203.0.113.7/32, and not 0.0.0.0/0 (ssh must not be open to the internet)."
  }
}

variable "allow_wide_ssh_cidr" {
  type        = bool
  description = "Accept an ssh_cidr wider than /8 (more than 16M addresses could reach ssh). Off by default: ssh is meant for the operator's own address or network."
  default     = false
}

variable "node_port_first" {
  type        = number
  description = "First TCP port of the node gRPC port range (node <-> node channels, initiator -> node). Open only between members of the cluster's security group."
  default     = 50051

  validation {
    condition     = var.node_port_first >= 1024 && var.node_port_first <= 65535
    error_message = "node_port_first must be a TCP port between 1024 and 65535."
  }
}

variable "node_port_last" {
  type        = number
  description = "Last TCP port (inclusive) of the node gRPC port range."
  default     = 50099

  validation {
    condition     = var.node_port_last >= 1024 && var.node_port_last <= 65535
    error_message = "node_port_last must be a TCP port between 1024 and 65535."
  }
}

variable "collector_port" {
  type        = number
  description = "TCP port of the collector's gRPC server (node -> collector). Open only between members of the cluster's security group."
  default     = 50050

  validation {
    condition     = var.collector_port >= 1024 && var.collector_port <= 65535
    error_message = "collector_port must be a TCP port between 1024 and 65535."
  }
}

variable "extra_tags" {
  type        = map(string)
  description = "Additional tags applied to every resource (e.g. owner, cost centre)."
  default     = {}
}
