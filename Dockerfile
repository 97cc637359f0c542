# One image for every role: cl-node (default), cl-collector, cl-initiator.
#
#   docker build -t chandy-lamport:latest .                      # with registry + PyPI access
#   scripts/build-image.sh                                       # anywhere (picks the path below)
#
# BASE_IMAGE is any Debian-like image with python3 (>= 3.11) and python3 -m venv:
# python:3.11-slim, or the chandy-lamport/python-base:3.11-bookworm image that
# scripts/build-image.sh builds with debootstrap when no registry is reachable.
# PIP_OFFLINE=1 installs only from the wheels in build/wheels/ (downloaded on
# the host by scripts/build-image.sh) for builds whose containers cannot reach PyPI.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ARG PIP_OFFLINE=0
# Optional: a PyPI mirror for online builds (set only in this throw-away stage).
ARG PIP_INDEX_URL
ARG PIP_TRUSTED_HOST
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH
RUN python3 -m venv /opt/venv

# Dependencies first, so that editing the code does not reinstall them.
# build/wheel[s] matches nothing when build/wheels/ is absent (online builds);
# its wheels, if any, land next to pyproject.toml in /tmp/deps.
COPY pyproject.toml build/wheel[s] /tmp/deps/
RUN set -eu; \
    if [ "$PIP_OFFLINE" = 1 ]; then index="--no-index --find-links /tmp/deps"; else index=""; fi; \
    python -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"], sep="\n")' \
        /tmp/deps/pyproject.toml > /tmp/requirements.txt; \
    pip install $index -r /tmp/requirements.txt

# The project itself (not editable); the build backend comes from the same place.
COPY . /src/
RUN set -eu; \
    if [ "$PIP_OFFLINE" = 1 ]; then index="--no-index --find-links /tmp/deps"; else index=""; fi; \
    pip install $index --no-deps /src; \
    pip uninstall --yes pip setuptools

FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    CL_PORT=50051
# /data, /snapshots and the certificate directories exist here so that named
# volumes mounted on them start out owned by the non-root user.
RUN groupadd --system --gid 10001 cl \
    && useradd --system --uid 10001 --gid cl --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin cl \
    && mkdir -p /data /snapshots /var/lib/chandy-lamport/certs /var/lib/chandy-lamport/ca \
    && chown cl:cl /data /snapshots /var/lib/chandy-lamport/certs /var/lib/chandy-lamport/ca \
    && chmod 0700 /var/lib/chandy-lamport/ca
COPY --from=builder /opt/venv /opt/venv
USER cl
WORKDIR /data
EXPOSE 50051
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "common.healthcheck"]
CMD ["cl-node"]
