"""Getting the image onto the hosts.

``save``: ``docker save`` once here (gzip), ``docker load`` on every host
that lacks the same image id. ``build``: ship the build context (a tar of
:data:`BUILD_CONTEXT`) and ``docker build`` on every host.
"""

from __future__ import annotations

import gzip
import io
import shlex
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from deploy.errors import DeployError
from deploy.progress import Log
from deploy.targets import Target, in_parallel

DEFAULT_IMAGE = "chandy-lamport:latest"
# Files and directories `--image-transfer build` ships as the build context.
BUILD_CONTEXT = (
    "Dockerfile",
    "pyproject.toml",
    "README.md",
    ".dockerignore",
    "protos",
    "node",
    "collector",
    "initiator",
    "simulator",
    "deploy",
    "common",
)


NO_DOCKER = "the `docker` client is not installed on this machine (it saves the image)"


def local_image_id(image: str) -> str:
    try:
        result = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", image],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise DeployError(NO_DOCKER) from None
    if result.returncode != 0:
        raise DeployError(
            f"image {image} is not in the local Docker engine: build it with "
            "`scripts/build-image.sh`, or use --image-transfer build"
        )
    return result.stdout.strip()


def remote_image_id(target: Target, image: str) -> str | None:
    result = target.remote.run(
        f"docker image inspect --format '{{{{.Id}}}}' {shlex.quote(image)} 2>/dev/null",
        step="checking the image",
        check=False,
    )
    found = result.stdout.decode().strip()
    return found if result.returncode == 0 and found else None


def ship_image_save(targets: Sequence[Target], image: str, always: bool, log: Log) -> None:
    """``docker save`` once (gzip), ``docker load`` on every host that lacks the same image."""
    image_id = local_image_id(image)
    if always:
        needing = list(targets)
    else:
        have = in_parallel(targets, lambda t: remote_image_id(t, image))
        needing = [t for t, remote_id in zip(targets, have, strict=True) if remote_id != image_id]
        for target in targets:
            if target not in needing:
                log(f"{target.name}: image {image} already present ({image_id[:19]})")
    if not needing:
        return
    with tempfile.TemporaryDirectory(prefix="cl-deploy-image-") as folder:
        archive = Path(folder) / "image.tar.gz"
        log(f"saving image {image} ({image_id[:19]})...")
        with (
            archive.open("wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as packed,
        ):
            saver = subprocess.Popen(
                ["docker", "save", image], stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            assert saver.stdout is not None
            while chunk := saver.stdout.read(1 << 20):
                packed.write(chunk)
            _, stderr = saver.communicate()
            if saver.returncode != 0:
                raise DeployError(f"docker save {image} failed: {stderr.decode().strip()}")
        size = archive.stat().st_size / 1e6

        def load(target: Target) -> None:
            log(f"{target.name}: loading image ({size:.0f} MB)...")
            target.remote.run_with_file("docker load", archive, step="loading image", timeout=1800)
            loaded = remote_image_id(target, image)
            if loaded != image_id:
                raise DeployError(
                    f"{target.name}: loading image: {image} there is {loaded}, not {image_id}"
                )
            log(f"{target.name}: image loaded")

        in_parallel(needing, load)


def build_context_tar(root: Path) -> bytes:
    """The files the Dockerfile needs, as a gzipped tar (no caches, no virtualenvs)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for entry in BUILD_CONTEXT:
            path = root / entry
            if not path.exists():
                if entry in ("Dockerfile", "pyproject.toml"):
                    raise DeployError(f"--image-transfer build: {path} is missing")
                continue
            archive.add(
                path,
                arcname=entry,
                filter=lambda info: (
                    None
                    if "__pycache__" in info.name or info.name.endswith((".pyc", ".pyo"))
                    else info
                ),
            )
    return buffer.getvalue()


def ship_image_build(
    targets: Sequence[Target], image: str, base_image: str, root: Path, log: Log
) -> None:
    """Ship the build context and ``docker build`` on every host (needs a registry there)."""
    context = build_context_tar(root)

    def build(target: Target) -> None:
        src = f"{target.remote_dir}/src"
        log(f"{target.name}: shipping the build context ({len(context) / 1e3:.0f} kB)...")
        target.remote.run(
            f"rm -rf {shlex.quote(src)} && mkdir -p {shlex.quote(src)} && "
            f"tar -xzf - -C {shlex.quote(src)}",
            input=context,
            step="shipping the build context",
        )
        log(f"{target.name}: building image {image} (a few minutes)...")
        target.remote.run(
            f"docker build -q --build-arg BASE_IMAGE={shlex.quote(base_image)} "
            f"-t {shlex.quote(image)} {shlex.quote(src)}",
            step="building the image",
            timeout=1800,
        )
        log(f"{target.name}: image built")

    in_parallel(list(targets), build)
