"""Host directories created as mount points, shared by every node on the machine.

A container's ``volumeMount`` is a bind mount at its ``mountPath`` on the host's own tree
(there are no image layers), so a missing mount point is created on the host. Such a
directory may be in use by another node's pods, in this process or another (a benchmark next
to a test run): removing a directory that is a mount point in some container's mount
namespace silently detaches that mount there. So who relies on a created directory is kept in
a machine-wide registry under ``/run`` (directory -> ``<pid>:<node netns>``), and the last
user to release it removes it; a user whose process is gone no longer counts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

MOUNT_POINT_REGISTRY = Path("/run/remora-testbed-mount-points.json")


class MountPointClaims:
    """The host directories one user (a node: ``<pid>:<netns>``) relies on as mount points."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._claimed: set[str] = set()

    def ensure(self, path: Path) -> None:
        """Create ``path`` on the host if missing, for as long as any user needs it."""
        with locked_registry() as registry:
            missing = []
            probe = path
            while not probe.exists():
                missing.append(probe)
                probe = probe.parent
            for directory in reversed(missing):
                directory.mkdir()
                # Recorded as it is made: if a deeper mkdir fails, release() still removes it.
                registry.setdefault(str(directory), [])
                registry[str(directory)].append(self.owner)
                self._claimed.add(str(directory))
            # Ours too when another user created it: it must outlive our pods as well.
            for directory in (path, *path.parents):
                if str(directory) in registry and self.owner not in registry[str(directory)]:
                    registry[str(directory)].append(self.owner)
                    self._claimed.add(str(directory))

    def release(self) -> None:
        """Stop relying on every claimed directory; remove those no live user needs any more."""
        if not self._claimed:
            return
        with locked_registry() as registry:
            for directory in sorted(registry, key=len, reverse=True):  # deepest first
                owners = [o for o in registry[directory] if o != self.owner and _alive(o)]
                registry[directory] = owners
                if not owners:
                    with contextlib.suppress(OSError):
                        Path(directory).rmdir()  # only if empty: never removes anything else
                    del registry[directory]
        self._claimed.clear()


@contextlib.contextmanager
def locked_registry() -> Iterator[dict[str, list[str]]]:
    """The machine-wide registry of created mount points: directory -> its users
    (``<pid>:<node netns>``), read and written under an exclusive lock.

    Written also when the block fails (what it did before failing, e.g. directories it made,
    must be known), and atomically: a crash mid-write leaves the previous registry, not a
    truncated one that would forget every entry.
    """
    with open(MOUNT_POINT_REGISTRY.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            registry: dict[str, list[str]] = json.loads(MOUNT_POINT_REGISTRY.read_text())
        except (OSError, ValueError):
            registry = {}
        try:
            yield registry
        finally:
            _replace_file(MOUNT_POINT_REGISTRY, json.dumps(registry, indent=1, sort_keys=True))


def _replace_file(path: Path, text: str) -> None:
    """Write ``path`` atomically: a temporary file in the same directory (same filesystem),
    synced, then renamed over it; a failure before the rename leaves ``path`` as it was."""
    temporary: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as handle:
            temporary = Path(handle.name)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()
        raise


def _alive(owner: str) -> bool:
    """Whether the process of a registry entry still runs (a crashed run releases its dirs)."""
    try:
        os.kill(int(owner.split(":", 1)[0]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
