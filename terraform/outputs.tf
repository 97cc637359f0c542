# tests/test_terraform.py and deploy/hosts.py read these names: `terraform
# output -json > hosts.json` is a valid input of `cl-deploy --state-file`.

output "hosts" {
  description = "Every host as {name, public_ip, private_ip}, in host order (host-0 first)."
  value = [
    for h in aws_instance.host : {
      name       = h.tags["chandy-lamport:host"]
      public_ip  = h.public_ip
      private_ip = h.private_ip
    }
  ]
}

output "ssh_user" {
  description = "Login user of the hosts' AMI (Debian 12 cloud images: admin)."
  value       = local.ssh_user
}

output "region" {
  description = "Region the hosts run in."
  value       = var.region
}

output "security_group_id" {
  description = "ID of the cluster's security group."
  value       = aws_security_group.cluster.id
}

output "ami" {
  description = "ID and name of the Debian 12 AMI the hosts were created from."
  value = {
    id   = data.aws_ami.debian.id
    name = data.aws_ami.debian.name
  }
}
