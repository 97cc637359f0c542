terraform {
  required_version = ">= 1.5.0, < 2.0.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Pinned to one major version: 5.x has everything used here
      # (aws_vpc_security_group_*_rule, default_tags). Bump deliberately.
      version = "~> 5.80"
    }
  }
}
