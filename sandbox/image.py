"""Building the Docker sandbox image.

The image holds a Python 3 interpreter and the runner (the chunking helpers and
``runner.py`` joined into ``/opt/minionflow/sandbox_runner.py``), nothing else. It is
tagged ``minionflow-sandbox:<sha256 of the runner and the Dockerfile>``, so a
changed runner means a new tag and a stale image is never used.

    python -m minionflow.sandbox.image               # offline: debootstrap + docker import
    python -m minionflow.sandbox.image --dockerfile  # with a registry: sandbox/Dockerfile
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from .base import SandboxUnavailable, runner_source

log = logging.getLogger(__name__)

REPOSITORY = "minionflow-sandbox"
BASE_TAG = "minionflow-sandbox-base:bookworm"
RUNNER_PATH = "/opt/minionflow/sandbox_runner.py"
DEBIAN_MIRROR = os.environ.get("MINIONFLOW_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("MINIONFLOW_CACHE", Path.home() / ".cache" / "minionflow"))


def dockerfile() -> str:
    return resources.files("minionflow.sandbox").joinpath("Dockerfile").read_text(encoding="utf-8")


def image_tag() -> str:
    digest = hashlib.sha256((runner_source() + "\0" + dockerfile()).encode("utf-8")).hexdigest()[:16]
    return f"{REPOSITORY}:{digest}"


def _client():  # type: ignore[no-untyped-def]
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as exc:
        raise SandboxUnavailable(f"no Docker engine answers ({exc}); start one (scripts/docker-engine.sh)") from exc
    return client


def _base_rootfs() -> Path:
    """A minimal Debian bookworm with python3, made once with debootstrap and cached as a tarball."""
    tarball = CACHE / "sandbox-rootfs-bookworm-python3.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise SandboxUnavailable("debootstrap is not installed (apt-get install debootstrap)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="minionflow-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        log.info("debootstrap bookworm from %s (about a minute)", DEBIAN_MIRROR)
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(root), DEBIAN_MIRROR],
            check=True, stdout=subprocess.DEVNULL,
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(root / junk, ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    return tarball


def build(use_dockerfile: bool = False) -> str:
    """Build the sandbox image if this tag does not exist yet; return the tag."""
    client = _client()
    tag = image_tag()
    if client.images.list(name=tag):
        return tag
    base_args: dict[str, str] = {}
    if not use_dockerfile:
        if not client.images.list(name=BASE_TAG):
            repository, _, base_tag = BASE_TAG.partition(":")
            client.api.import_image_from_file(str(_base_rootfs()), repository=repository, tag=base_tag)
        base_args = {"BASE": BASE_TAG}
    with tempfile.TemporaryDirectory(prefix="minionflow-image-") as tmp:
        Path(tmp, "Dockerfile").write_text(dockerfile(), encoding="utf-8")
        Path(tmp, "sandbox_runner.py").write_text(runner_source(), encoding="utf-8")
        client.images.build(path=tmp, tag=tag, buildargs=base_args, rm=True, pull=False, network_mode="none")
    log.info("built %s", tag)
    return tag


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the minionflow Docker sandbox image.")
    parser.add_argument("--dockerfile", action="store_true", help="build from sandbox/Dockerfile (needs a registry)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[sandbox-image] %(message)s")
    try:
        print(build(args.dockerfile))
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
