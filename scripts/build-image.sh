#!/usr/bin/env bash
# Build the project image (chandy-lamport:latest) on any Docker host, with or
# without access to a container registry or to PyPI from inside containers.
#
#   scripts/build-image.sh [--base-only] [--debian-base] [--no-pull] [--offline|--online] [--no-cache]
#
#   --base-only    only make sure a Python base image exists; print its name
#   --debian-base  skip BASE_IMAGE; use (building it if missing) the Debian base
#   --no-pull      use BASE_IMAGE only if it is already present (scripts/stack.py
#                  passes this when it found no registry: no pull attempt)
#   --offline      install Python packages from wheels downloaded on the host
#   --online       install Python packages from PyPI inside the build
#                  (default: probe PyPI from a container and decide)
#   --no-cache     pass --no-cache to docker build
#
# Steps, each skipped when its result is already there:
#   1. base image: BASE_IMAGE if present locally or pullable; otherwise
#      DEBIAN_BASE_IMAGE, built from Debian packages (debootstrap + docker import).
#   2. if containers cannot reach PyPI: wheels for the runtime dependencies,
#      downloaded on the host for the base image's Python/platform into build/wheels.
#   3. docker build of IMAGE from the Dockerfile, then a smoke test.
#
# Environment: BASE_IMAGE (python:3.11-slim), IMAGE (chandy-lamport:latest),
# DEBIAN_BASE_IMAGE (chandy-lamport/python-base:3.11-bookworm), DEBIAN_SUITE
# (bookworm), DEBIAN_MIRROR (http://deb.debian.org/debian), DEBIAN_SECURITY_MIRROR
# (the mirror's sibling /debian-security), PULL_TIMEOUT (30 s), APT_LOCK_TIMEOUT
# (600 s waiting for another apt's dpkg lock),
# PYTHON (host interpreter with pip, for downloading wheels).
# Progress goes to stderr; stdout gets only the name of the image built.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR="$ROOT/build"
WHEELS_DIR="$BUILD_DIR/wheels"

BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
IMAGE=${IMAGE:-chandy-lamport:latest}
DEBIAN_BASE_IMAGE=${DEBIAN_BASE_IMAGE:-chandy-lamport/python-base:3.11-bookworm}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PULL_TIMEOUT=${PULL_TIMEOUT:-30}
APT_LOCK_TIMEOUT=${APT_LOCK_TIMEOUT:-600}
# Packages on top of debootstrap's minbase; python3-venv brings ensurepip.
DEBIAN_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,netbase

base_only=0 debian_base=0 no_pull=0 pip_mode=auto no_cache=()
for arg in "$@"; do
    case $arg in
        --base-only) base_only=1 ;;
        --debian-base) debian_base=1 ;;
        --no-pull) no_pull=1 ;;
        --offline) pip_mode=offline ;;
        --online) pip_mode=online ;;
        --no-cache) no_cache=(--no-cache) ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 0 ;;
        *) echo "build-image.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
    esac
done

log() { printf '==> %s\n' "$*" >&2; }
run() { printf '+ %s\n' "$*" >&2; "$@"; }
die() { printf 'build-image.sh: error: %s\n' "$*" >&2; exit 1; }

# Commands that need root (debootstrap, chroot) run directly as root, else via sudo.
if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
elif command -v sudo >/dev/null; then
    as_root() { sudo "$@"; }
else
    as_root() { die "need root or sudo to run: $*"; }
fi

with_timeout() { # seconds command...: a bounded wait where coreutils timeout exists
    local seconds=$1; shift
    if command -v timeout >/dev/null; then timeout "$seconds" "$@"; else "$@"; fi
}

DOCKER=(docker)
if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo -n docker info >/dev/null 2>&1; then
        DOCKER=(sudo docker)
    else
        die "cannot talk to the Docker daemon (is it running, may this user use it?)"
    fi
fi
image_exists() { "${DOCKER[@]}" image inspect "$1" >/dev/null 2>&1; }

# Leave nothing behind: the debootstrap tree always; after a failure, a base
# image this run imported but did not check, and every dangling (untagged)
# image the run produced; after a success, the previous IMAGE once the tag has
# moved off it (the builder stage's untagged image stays: it is the layer cache
# that makes the next build fast). An image a container still uses stays.
ROOTFS="" imported_base=0
dangling_before=$("${DOCKER[@]}" image ls -q --no-trunc -f dangling=true | sort)
previous_image=$("${DOCKER[@]}" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
remove_image() { # id: quietly, never by force
    "${DOCKER[@]}" rmi "$1" >/dev/null 2>&1 && log "removed dangling image ${1#sha256:}" || true
}
cleanup() {
    local status=$? id
    if [ -n "$ROOTFS" ] && [ -d "$ROOTFS" ]; then
        log "removing $ROOTFS"
        as_root rm -rf --one-file-system "$ROOTFS"
    fi
    if [ "$status" -ne 0 ]; then
        if [ "$imported_base" -eq 1 ]; then
            log "removing $DEBIAN_BASE_IMAGE (this run imported it and then failed)"
            "${DOCKER[@]}" rmi "$DEBIAN_BASE_IMAGE" >/dev/null 2>&1 || true
        fi
        for id in $(comm -13 <(echo "$dangling_before") \
            <("${DOCKER[@]}" image ls -q --no-trunc -f dangling=true | sort)); do
            remove_image "$id"
        done
    elif [ -n "$previous_image" ] \
        && [ "$("${DOCKER[@]}" image inspect -f '{{len .RepoTags}}' "$previous_image" 2>/dev/null)" = 0 ]; then
        remove_image "$previous_image"
    fi
    exit "$status"
}
trap cleanup EXIT

# --- 1. base image ----------------------------------------------------------

debian_base_image() {
    if image_exists "$DEBIAN_BASE_IMAGE"; then
        log "Debian base $DEBIAN_BASE_IMAGE already exists (docker rmi it to rebuild)"
        return
    fi
    log "building $DEBIAN_BASE_IMAGE from $DEBIAN_MIRROR ($DEBIAN_SUITE, debootstrap minbase)"
    local debootstrap
    debootstrap=$(PATH=$PATH:/usr/sbin:/sbin command -v debootstrap || true)
    if [ -z "$debootstrap" ]; then
        command -v apt-get >/dev/null || die "debootstrap is missing and there is no apt-get to install it"
        log "installing debootstrap"
        # Another apt (unattended upgrades, a second build) may hold the dpkg
        # lock: wait for it (APT_LOCK_TIMEOUT s) instead of failing at once.
        local host_apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o "DPkg::Lock::Timeout=$APT_LOCK_TIMEOUT")
        run as_root "${host_apt[@]}" install -y debootstrap >&2 \
            || { run as_root "${host_apt[@]}" update >&2 && run as_root "${host_apt[@]}" install -y debootstrap >&2; }
        debootstrap=$(PATH=$PATH:/usr/sbin:/sbin command -v debootstrap)
    fi

    mkdir -p "$BUILD_DIR"
    ROOTFS=$(mktemp -d "$BUILD_DIR/rootfs.XXXXXX")
    local start=$SECONDS
    run as_root "$debootstrap" --variant=minbase --include="$DEBIAN_PACKAGES" \
        "$DEBIAN_SUITE" "$ROOTFS" "$DEBIAN_MIRROR" >&2

    log "configuring apt (updates + security), applying updates, trimming"
    local security=${DEBIAN_SECURITY_MIRROR:-${DEBIAN_MIRROR%/debian}/debian-security}
    as_root tee "$ROOTFS/etc/apt/sources.list" >/dev/null <<EOF
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb $security $DEBIAN_SUITE-security main
EOF
    # Like the official debian:*-slim images: later apt installs (e.g. sshd test
    # hosts built on this base) skip docs and locales and leave no caches.
    as_root tee "$ROOTFS/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    as_root tee "$ROOTFS/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
APT::Install-Recommends "false";
Acquire::Languages "none";
EOF
    local apt=(env DEBIAN_FRONTEND=noninteractive chroot "$ROOTFS" apt-get \
        -o APT::Sandbox::User=root -o Dpkg::Use-Pty=0)
    as_root "${apt[@]}" update -qq >&2
    as_root "${apt[@]}" upgrade -y -qq >&2
    as_root chroot "$ROOTFS" apt-get clean
    # shellcheck disable=SC2016 # $1 expands in the inner shell
    as_root sh -euc '
        cd "$1"
        rm -rf var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old \
            var/lib/dpkg/*-old var/log/* tmp/* var/tmp/* \
            usr/share/man/* usr/share/groff/* usr/share/info/* usr/share/lintian/* \
            usr/share/linda/* usr/share/locale/*
        find usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
        find usr/share/doc -mindepth 1 -type d -empty -delete
        # Docker provides these at run time; do not ship the build host'"'"'s copies.
        : > etc/resolv.conf; : > etc/hostname; rm -f etc/machine-id var/lib/dbus/machine-id
    ' sh "$ROOTFS"

    log "importing the root filesystem as $DEBIAN_BASE_IMAGE"
    as_root tar --numeric-owner -C "$ROOTFS" -c . | "${DOCKER[@]}" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --message "debootstrap --variant=minbase $DEBIAN_SUITE + $DEBIAN_PACKAGES" \
        - "$DEBIAN_BASE_IMAGE" >&2
    imported_base=1
    as_root rm -rf --one-file-system "$ROOTFS"
    ROOTFS=""
    run "${DOCKER[@]}" run --rm "$DEBIAN_BASE_IMAGE" python3 -c \
        'import sys, ssl, venv; print("python", sys.version.split()[0], ssl.OPENSSL_VERSION)' >&2
    imported_base=0
    log "built $DEBIAN_BASE_IMAGE in $((SECONDS - start)) s"
}

choose_base() { # sets BASE
    if [ "$debian_base" -eq 0 ]; then
        if image_exists "$BASE_IMAGE"; then
            log "base image $BASE_IMAGE is present"
            BASE=$BASE_IMAGE; return
        fi
        if [ "$no_pull" -eq 0 ]; then
            log "trying to pull $BASE_IMAGE (at most $PULL_TIMEOUT s)"
            if with_timeout "$PULL_TIMEOUT" "${DOCKER[@]}" pull "$BASE_IMAGE" >&2; then
                BASE=$BASE_IMAGE; return
            fi
        fi
        log "cannot pull $BASE_IMAGE: using a Debian-built base instead"
    fi
    debian_base_image
    BASE=$DEBIAN_BASE_IMAGE
}

choose_base
if [ "$base_only" -eq 1 ]; then
    echo "$BASE"
    exit 0
fi

# --- 2. Python packages: PyPI from the build, or wheels from the host ----------

if [ "$pip_mode" = auto ]; then
    log "probing PyPI from a container of $BASE"
    if with_timeout 30 "${DOCKER[@]}" run --rm "$BASE" python3 -c \
        'import urllib.request; urllib.request.urlopen("https://pypi.org/simple/grpcio/", timeout=10)' \
        >/dev/null 2>&1; then
        pip_mode=online
    else
        pip_mode=offline
    fi
fi
log "Python packages: $pip_mode ($([ "$pip_mode" = online ] && echo 'pip inside the build reaches PyPI' \
    || echo "wheels downloaded on the host into ${WHEELS_DIR#"$ROOT"/}"))"

download_wheels() {
    local host_python=${PYTHON:-}
    if [ -z "$host_python" ]; then
        for candidate in "$ROOT/.venv/bin/python" python3; do
            if command -v "$candidate" >/dev/null && "$candidate" -m pip --version >/dev/null 2>&1; then
                host_python=$candidate; break
            fi
        done
    fi
    [ -n "$host_python" ] || die "offline build needs a host python3 with pip (set PYTHON=...)"

    # What the wheels must fit: the base image's Python, glibc and CPU; and the
    # project's runtime dependencies (read with the base image's own tomllib).
    local target requirements=()
    target=$("${DOCKER[@]}" run --rm "$BASE" python3 -c \
        'import platform, sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}", platform.libc_ver()[1], platform.machine())')
    read -r py_version glibc arch <<<"$target"
    mapfile -t requirements < <("${DOCKER[@]}" run --rm -i "$BASE" python3 -c \
        'import sys, tomllib; print(*tomllib.load(sys.stdin.buffer)["project"]["dependencies"], sep="\n")' \
        <"$ROOT/pyproject.toml")
    [ "${#requirements[@]}" -gt 0 ] || die "could not read the dependencies from pyproject.toml"
    # The build backend too: the image builds the project from source, offline.
    requirements+=("setuptools>=68" wheel)

    local stamp
    stamp=$(printf '%s\n' "$py_version $glibc $arch" "${requirements[@]}" | sha256sum | cut -c1-16)
    if [ -f "$WHEELS_DIR/.stamp" ] && [ "$(cat "$WHEELS_DIR/.stamp")" = "$stamp" ]; then
        log "wheels in ${WHEELS_DIR#"$ROOT"/} are up to date (cp${py_version/./} $arch glibc $glibc)"
        return
    fi
    log "downloading wheels for CPython $py_version, glibc $glibc, $arch with $host_python"
    rm -rf "$WHEELS_DIR"
    mkdir -p "$WHEELS_DIR"
    local platforms=() minor
    for ((minor = ${glibc#*.}; minor >= 17; minor--)); do
        platforms+=(--platform "manylinux_2_${minor}_$arch")
    done
    platforms+=(--platform "manylinux2014_$arch")
    run "$host_python" -m pip download --quiet --only-binary=:all: --no-cache-dir \
        --implementation cp --python-version "$py_version" "${platforms[@]}" \
        --dest "$WHEELS_DIR" "${requirements[@]}" >&2
    echo "$stamp" >"$WHEELS_DIR/.stamp"
    log "wheels: $(find "$WHEELS_DIR" -name '*.whl' -printf '%f\n' | sort | tr '\n' ' ')"
}

if [ "$pip_mode" = offline ]; then
    download_wheels
    offline=1
else
    offline=0
fi

# --- 3. the project image ----------------------------------------------------

start=$SECONDS
run "${DOCKER[@]}" build "${no_cache[@]}" --build-arg "BASE_IMAGE=$BASE" --build-arg "PIP_OFFLINE=$offline" \
    -t "$IMAGE" "$ROOT" >&2
log "built $IMAGE in $((SECONDS - start)) s (base $BASE, PIP_OFFLINE=$offline)"
run "${DOCKER[@]}" run --rm "$IMAGE" python -c \
    'import grpc, grpc_health, google.protobuf, yaml, structlog; print("imports ok")' >&2
"${DOCKER[@]}" image ls "$IMAGE" >&2
# What this host needs, for building by hand with compose:
#   docker compose --env-file build/host.env up -d --build
mkdir -p "$BUILD_DIR"
cat >"$BUILD_DIR/host.env" <<EOF
# Written by scripts/build-image.sh: how this host builds $IMAGE.
BASE_IMAGE=$BASE
PIP_OFFLINE=$offline
EOF
echo "$IMAGE"
