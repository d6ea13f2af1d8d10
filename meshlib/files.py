"""Writing files that another process reads at any moment (Envoy's bootstrap, TLS keys)."""

from __future__ import annotations

import os


def write_atomically(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` through a temporary file and a rename: a reader sees the old content or
    the new, never half of it. The file is created with ``mode`` (0o600 for keys), so it is
    never readable by others, not even for a moment before a chmod."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed the mode os.open applied
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
