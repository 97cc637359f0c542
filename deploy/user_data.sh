#!/bin/bash
# cloud-init user data for chandy-lamport hosts (Debian 12 or Ubuntu 22.04).
# Installs Docker Engine and the Docker Compose plugin from Docker's apt
# repository and lets the image's login user (uid 1000: "admin" on Debian,
# "ubuntu" on Ubuntu) run docker. The deploy tool can wait for it with
# `cloud-init status --wait`; /var/lib/chandy-lamport/docker-ready marks success.
#
# The one copy: Terraform (terraform/main.tf) and `cl-deploy provision` both read it.
set -euxo pipefail
export DEBIAN_FRONTEND=noninteractive

. /etc/os-release
apt-get update -q
apt-get install -yq ca-certificates curl gnupg

repo="https://download.docker.com/linux/${ID}"
key=/etc/apt/keyrings/docker.asc
install -m 0755 -d /etc/apt/keyrings
curl -fsSL "${repo}/gpg" -o "${key}"
chmod a+r "${key}"
arch="$(dpkg --print-architecture)"
echo "deb [arch=${arch} signed-by=${key}] ${repo} ${VERSION_CODENAME} stable" \
  > /etc/apt/sources.list.d/docker.list

apt-get update -q
apt-get install -yq docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin
systemctl enable --now docker

login_user="$(getent passwd 1000 | cut -d: -f1)"
if [ -n "${login_user}" ]; then
  usermod -aG docker "${login_user}"
fi

docker compose version
install -d -m 0755 /var/lib/chandy-lamport
touch /var/lib/chandy-lamport/docker-ready
