#!/bin/sh
# AUTHORIZED_KEY: the public key allowed to log in as root.
# HOME_DIR: root's home (the fixture mounts a host directory there at the same
# path, so relative --remote-dir paths are valid bind-mount sources for the engine).
set -eu
: "${AUTHORIZED_KEY:?set AUTHORIZED_KEY to an ssh public key}"
printf '%s\n' "$AUTHORIZED_KEY" > /etc/ssh/authorized_keys/root
chmod 0644 /etc/ssh/authorized_keys/root
if [ -n "${HOME_DIR:-}" ]; then
    mkdir -p "$HOME_DIR"
    # usermod refuses while root runs this very process: edit passwd directly.
    sed -i "s|^root:\([^:]*\):0:0:\([^:]*\):[^:]*:|root:\1:0:0:\2:$HOME_DIR:|" /etc/passwd
fi
ssh-keygen -A >/dev/null
exec /usr/sbin/sshd -D -e
