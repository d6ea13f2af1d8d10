"""Run the iptables and ip tools: ``posix_spawn`` and pipes, without ``subprocess``.

The init container starts a handful of short-lived tools (four ``*-save`` at once, one or
two ``*-restore``). ``import subprocess`` costs more than all of them together (~15 ms
here: it loads ``threading``, ``signal``'s enums, ``selectors`` and ``contextlib``), so this
module does the little we need directly: spawn with stdin/stdout/stderr on pipes, feed the
input and read both outputs without deadlocking (``poll``), wait, decode as UTF-8.
"""

from __future__ import annotations

import os
import select

_CHUNK = 65536


class Result:
    """What a finished tool returned (``subprocess.CompletedProcess``, the fields we use)."""

    __slots__ = ("argv", "returncode", "stderr", "stdout")

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self) -> str:
        return f"Result(argv={self.argv!r}, returncode={self.returncode})"


class Process:
    """A started tool. :meth:`communicate` feeds its input and collects its outputs.

    Raises ``FileNotFoundError`` when the tool is not on ``$PATH``, like ``subprocess``.
    """

    def __init__(self, argv: list[str], with_stdin: bool = False) -> None:
        self.argv = argv
        child_ends: list[int] = []
        self._stdin: int | None = None
        actions: list[tuple[int, int, int]] = []
        try:
            if with_stdin:
                read_end, self._stdin = os.pipe()
                child_ends.append(read_end)
                actions.append((os.POSIX_SPAWN_DUP2, read_end, 0))
            self._stdout, out_end = os.pipe()
            self._stderr, err_end = os.pipe()
            child_ends += (out_end, err_end)
            actions += [(os.POSIX_SPAWN_DUP2, out_end, 1), (os.POSIX_SPAWN_DUP2, err_end, 2)]
            # The pipes are close-on-exec (PEP 446); dup2 onto 0-2 clears that for the child.
            self.pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
        except BaseException:
            for fd in (self._stdin, getattr(self, "_stdout", None), getattr(self, "_stderr", None)):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)

    def communicate(self, stdin: str | None = None) -> Result:
        """Write ``stdin`` (then close it), read stdout and stderr to the end, wait."""
        data = (stdin or "").encode()
        offset = 0
        outputs: dict[int, list[bytes]] = {self._stdout: [], self._stderr: []}
        poller = select.poll()
        for fd in outputs:
            poller.register(fd, select.POLLIN)
        open_fds = len(outputs)
        if self._stdin is not None:
            if data:
                poller.register(self._stdin, select.POLLOUT)
                open_fds += 1
            else:
                os.close(self._stdin)
        while open_fds:
            for fd, _event in poller.poll():
                if fd == self._stdin:
                    try:
                        offset += os.write(fd, data[offset : offset + select.PIPE_BUF])
                    except BrokenPipeError:  # the tool exited without reading it all
                        offset = len(data)
                    if offset >= len(data):
                        poller.unregister(fd)
                        os.close(fd)
                        open_fds -= 1
                    continue
                chunk = os.read(fd, _CHUNK)
                if chunk:
                    outputs[fd].append(chunk)
                else:
                    poller.unregister(fd)
                    os.close(fd)
                    open_fds -= 1
        _, status = os.waitpid(self.pid, 0)
        return Result(
            self.argv,
            os.waitstatus_to_exitcode(status),
            b"".join(outputs[self._stdout]).decode(errors="replace"),
            b"".join(outputs[self._stderr]).decode(errors="replace"),
        )


def run(argv: list[str], stdin: str | None = None) -> Result:
    """Run a tool to completion (``subprocess.run(argv, input=..., capture_output=True)``)."""
    return Process(argv, with_stdin=stdin is not None).communicate(stdin)
