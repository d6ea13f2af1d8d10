"""Starting one container of a pod, as a container runtime would on this machine.

Each container runs in the pod's network namespace and its own private mount namespace
(``unshare --mount``), in which every ``volumeMount`` is bind-mounted at its ``mountPath``
(read-only when the mount says so) and the image's working directory is a per-container
directory, read-only when ``readOnlyRootFilesystem`` is set; ``/etc/hosts`` is the pod's own.
Missing mount points are created on the host (:meth:`testbed.node.Node.ensure_mount_point`):
bind mounts need a directory to land on, and no path inside the container's view is
rewritten, so what the injected spec says is what the process sees. The process runs as the
spec's user with its capabilities (``setpriv``, :func:`testbed.podspec.process_identity`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from testbed.errors import PodError
from testbed.images import Image, image_repository
from testbed.node import Node
from testbed.podspec import (
    KeyLookup,
    PodContext,
    container_argv,
    container_env,
    process_identity,
)
from testbed.running_pod import SETPRIV, ContainerProcess, RunningPod

log = logging.getLogger("testbed.containers")

REPO = Path(__file__).resolve().parents[1]
UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"


def start_container(
    running: RunningPod,
    *,
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    images: Mapping[str, Image],
    context: PodContext,
    lookup: KeyLookup,
    volumes: Mapping[str, Path],
) -> ContainerProcess:
    """Start ``container`` of ``pod`` in ``running``'s namespace; its process, not waited for."""
    name = container["name"]
    repository = image_repository(container.get("image", ""))
    if repository not in images:
        raise PodError(f"container {name}: no local mapping for image {container.get('image')!r}")
    image = images[repository]
    env = container_env(pod, container, context, lookup, image)
    argv = _resolve_program(container_argv(container, image, env), env)
    identity = process_identity(pod, container, image)
    home = running.directory / "containers" / name
    workdir = home / "workdir"
    workdir.mkdir(parents=True)
    os.chown(workdir, identity.uid, identity.gid)
    mounts = bind_mounts(
        container,
        image=image,
        volumes=volumes,
        workdir=workdir,
        hosts=running.directory / "hosts",
        node=running.node,
    )
    launch_file = home / "launch.json"
    launch_file.write_text(
        json.dumps(
            {
                "mounts": mounts,
                "workdir": image.workdir or "/",
                "argv": [SETPRIV, *identity.setpriv, "--", *argv],
                "env": env,
            }
        )
    )
    log_path = home / "log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                *("ip", "netns", "exec", running.netns),
                *(UNSHARE, "--mount", "--propagation", "private"),
                *(sys.executable, "-m", "testbed.enter_container", str(launch_file)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)},
        )
    log.info("started %s/%s: %s", running.name, name, " ".join(argv))
    return ContainerProcess(name, process, log_path, identity.uid, identity.gid, env)


def bind_mounts(
    container: Mapping[str, Any],
    *,
    image: Image,
    volumes: Mapping[str, Path],
    workdir: Path,
    hosts: Path,
    node: Node,
) -> list[tuple[str, str, bool]]:
    """The bind mounts of one container: (source, target, read-only), parents first."""
    mounts: list[tuple[str, str, bool]] = [(str(hosts), "/etc/hosts", False)]
    security = container.get("securityContext") or {}
    # The working directory stands for the image's files there (the root itself is the host's).
    home = image.workdir if image.workdir not in (None, "/") else None
    if home:
        node.ensure_mount_point(Path(home))
        mounts.append((str(workdir), home, bool(security.get("readOnlyRootFilesystem"))))
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise PodError(f"container {container['name']}: no volume named {mount['name']!r}")
        source = volumes[mount["name"]]
        if mount.get("subPath"):
            source = source / mount["subPath"]
        target = Path(mount["mountPath"])
        if home and target.is_relative_to(home):
            (workdir / target.relative_to(home)).mkdir(parents=True, exist_ok=True)
        else:
            node.ensure_mount_point(target)
        mounts.append((str(source), str(target), bool(mount.get("readOnly"))))
    return sorted(mounts, key=lambda m: len(Path(m[1]).parts))


def _resolve_program(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """Resolve a bare program name with the container's own PATH (as the runtime does)."""
    if "/" in argv[0]:
        return argv
    found = shutil.which(argv[0], path=env.get("PATH", "/usr/bin:/bin"))
    if not found:
        raise PodError(f"executable {argv[0]!r} not found in the container's PATH")
    return [found, *argv[1:]]
