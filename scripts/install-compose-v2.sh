#!/usr/bin/env bash
# Install Compose v2 (the `docker compose` CLI plugin) privately, beside v1.
#
#   scripts/install-compose-v2.sh        # or: make compose-v2
#   DOCKER_CONFIG=build/docker-config docker compose version
#
# Our CI machine has only Compose v1 (Debian bookworm's docker-compose 1.29)
# and no container registry, while users mostly run v2. This puts Debian
# trixie's docker-compose 2.26 plugin binary (one static Go binary, from
# deb.debian.org, sha256 pinned below from trixie's Packages index) into
# build/docker-config/cli-plugins/docker-compose. Nothing system-wide changes:
# v1 stays where it is, and v2 is used only where DOCKER_CONFIG points at
# build/docker-config (scripts/stack.py and the Docker tests do that).
# Running it again when the plugin is there does nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG_DIR=${CL_DOCKER_CONFIG:-$ROOT/build/docker-config}
PLUGIN=$CONFIG_DIR/cli-plugins/docker-compose
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VERSION=2.26.1-4

die() { printf 'install-compose-v2.sh: error: %s\n' "$*" >&2; exit 1; }

case $(uname -m) in
    x86_64) arch=amd64 sha256=47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea ;;
    aarch64 | arm64) arch=arm64 sha256=bbafaa666f3e7fa00ad36f2a8bab889f1c791ca8743d674e7267a3d07203869c ;;
    *) die "no pinned docker-compose $VERSION package for $(uname -m)" ;;
esac

if [ -x "$PLUGIN" ] && [ "$(DOCKER_CONFIG=$CONFIG_DIR docker compose version --short 2>/dev/null)" = "$VERSION" ]; then
    echo "Compose v2 already installed: $PLUGIN" >&2
    exit 0
fi
command -v curl >/dev/null || die "curl is needed to download the package"
command -v dpkg-deb >/dev/null || command -v ar >/dev/null \
    || die "dpkg-deb (or binutils' ar) is needed to unpack the package"

url=$DEBIAN_MIRROR/pool/main/d/docker-compose/docker-compose_${VERSION}_${arch}.deb
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "==> downloading $url" >&2
curl -fsSL --retry 3 --connect-timeout 15 -o "$work/compose.deb" "$url" \
    || die "cannot download $url (is deb.debian.org reachable? DEBIAN_MIRROR for another mirror)"
echo "$sha256  $work/compose.deb" | sha256sum --check --quiet >&2 \
    || die "sha256 of $url is not the pinned $sha256"

mkdir -p "$work/root"
if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$work/compose.deb" "$work/root"
else # a .deb is an ar archive holding data.tar.*
    (cd "$work" && ar x compose.deb && tar -xf data.tar.* -C root)
fi
mkdir -p "$(dirname "$PLUGIN")"
# Atomic: a concurrent `docker compose` never sees half a binary.
install -m 0755 "$work/root/usr/libexec/docker/cli-plugins/docker-compose" "$PLUGIN.tmp"
mv -f "$PLUGIN.tmp" "$PLUGIN"
DOCKER_CONFIG=$CONFIG_DIR docker compose version >&2
echo "installed $PLUGIN (use: DOCKER_CONFIG=${CONFIG_DIR#"$ROOT"/} docker compose ...)" >&2
