"""Run the iptables and ip tools: ``posix_spawn`` and pipes, without ``subprocess``.

The init container starts a handful of short-lived tools (four ``*-save`` at once, one or
two ``*-restore``). ``import subprocess`` costs more than all of them together (~15 ms
here: it loads ``threading``, ``signal``'s enums, ``selectors`` and ``contextlib``), so this
module does the little we need directly: spawn with stdin/stdout/stderr on pipes, feed the
input and read both outputs without deadlocking (``poll``), wait, decode as UTF-8.

Every descriptor and every child is accounted for on every path, errors included: the init
container fails a pod start with a message, not with a leaked pipe or a zombie, and a
restore that was being fed when something went wrong is killed before its input is closed,
so it never sees a truncated input as complete.
"""

from __future__ import annotations

import os
import select

from initcontainer.errors import CaptureError

_CHUNK = 65536
_SIGKILL = 9  # signal.SIGKILL on every Linux; ``import signal`` would load ``enum``


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

    Raises ``OSError`` when the tool cannot be started (``FileNotFoundError`` when it is not
    on ``$PATH``, like ``subprocess``; ``PermissionError``, ``Exec format error``, or
    ``EMFILE`` from the pipes), having closed every descriptor it opened. A started tool
    that will not be communicated with (another one failed to start) is :meth:`kill`-ed.
    """

    def __init__(self, argv: list[str], with_stdin: bool = False) -> None:
        self.argv = argv
        self._stdin: int | None = None
        self._reaped = False
        self._open: list[int] = []  # our pipe ends not closed yet
        child_ends: list[int] = []
        actions: list[tuple[int, int, int]] = []
        try:
            # Each end is recorded as soon as its pipe exists, so a failure at any step
            # (EMFILE on the second pipe, a failed spawn) closes exactly what was opened.
            if with_stdin:
                read_end, self._stdin = os.pipe()
                child_ends.append(read_end)
                self._open.append(self._stdin)
                actions.append((os.POSIX_SPAWN_DUP2, read_end, 0))
            for child_fd in (1, 2):
                ours, write_end = os.pipe()
                child_ends.append(write_end)
                self._open.append(ours)
                actions.append((os.POSIX_SPAWN_DUP2, write_end, child_fd))
            self._stdout, self._stderr = self._open[-2:]
            # The pipes are close-on-exec (PEP 446); dup2 onto 0-2 clears that for the child.
            self.pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=actions)
        except BaseException:
            self._close_all()
            raise
        finally:
            for fd in child_ends:
                os.close(fd)

    def communicate(self, stdin: str | None = None) -> Result:
        """Write ``stdin`` (then close it), read stdout and stderr to the end, wait.

        If anything goes wrong on the way (an ``OSError`` other than the tool closing its
        input early, ``KeyboardInterrupt``), the tool is killed and reaped and our pipe ends
        are closed before the exception propagates.
        """
        try:
            stdout, stderr = self._exchange((stdin or "").encode())
            _, status = os.waitpid(self.pid, 0)
            self._reaped = True
        except BaseException:
            self.kill()
            raise
        return Result(
            self.argv,
            os.waitstatus_to_exitcode(status),
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
        )

    def kill(self) -> None:
        """Stop the tool if it still runs, close our pipe ends, reap it. Idempotent.

        Killed before its input is closed: a restore must not read a cut-off input as the
        whole of it and commit that.
        """
        if not self._reaped:
            try:
                os.kill(self.pid, _SIGKILL)
            except ProcessLookupError:  # reaped elsewhere (a waitpid(-1)): nothing to wait for
                self._reaped = True
        self._close_all()
        if not self._reaped:
            # Not contextlib.suppress: importing contextlib would cost every pod start.
            try:  # noqa: SIM105
                os.waitpid(self.pid, 0)
            except ChildProcessError:  # reaped elsewhere after all
                pass
            self._reaped = True

    def _exchange(self, data: bytes) -> tuple[bytes, bytes]:
        """Feed ``data`` and read both outputs to their end, concurrently (``poll``)."""
        offset = 0
        outputs: dict[int, list[bytes]] = {self._stdout: [], self._stderr: []}
        poller = select.poll()
        for fd in outputs:
            poller.register(fd, select.POLLIN)
        if self._stdin is not None:
            if data:
                poller.register(self._stdin, select.POLLOUT)
            else:
                self._close(self._stdin)
        while self._open:
            for fd, _event in poller.poll():
                if fd == self._stdin:
                    try:
                        offset += os.write(fd, data[offset : offset + select.PIPE_BUF])
                    except BrokenPipeError:  # the tool exited without reading it all
                        offset = len(data)
                    if offset >= len(data):
                        poller.unregister(fd)
                        self._close(fd)
                    continue
                chunk = os.read(fd, _CHUNK)
                if chunk:
                    outputs[fd].append(chunk)
                else:
                    poller.unregister(fd)
                    self._close(fd)
        return b"".join(outputs[self._stdout]), b"".join(outputs[self._stderr])

    def _close(self, fd: int) -> None:
        self._open.remove(fd)
        os.close(fd)

    def _close_all(self) -> None:
        while self._open:
            self._close(self._open[-1])


def run(argv: list[str], stdin: str | None = None) -> Result:
    """Run a tool to completion (``subprocess.run(argv, input=..., capture_output=True)``)."""
    return Process(argv, with_stdin=stdin is not None).communicate(stdin)


def failure(tool: str, error: OSError, install_hint: str) -> CaptureError:
    """A tool that could not be run, as what failed (with the errno text) and what to do.

    ``install_hint`` says which package provides ``tool``: the image is the usual culprit.
    """
    import errno  # only on failure

    if error.errno == errno.ENOENT:
        return CaptureError(f"{tool} is not installed", install_hint)
    reason = os.strerror(error.errno) if error.errno else str(error)
    code = errno.errorcode.get(error.errno or 0, "")
    message = f"could not run {tool}: {reason}" + (f" ({code})" if code else "")
    if error.errno in (errno.EACCES, errno.EPERM):
        hint = (
            f"is the {tool} binary executable (mode +x, on a filesystem not mounted noexec)? "
            f"{install_hint}"
        )
    elif error.errno == errno.ENOEXEC:
        hint = (
            f"{tool} is not a program this machine can run (built for another CPU "
            f"architecture, or a damaged file); {install_hint}"
        )
    elif error.errno in (errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM):
        hint = (
            "the init container ran out of file descriptors, processes or memory: raise its "
            "limits (ulimit -n, the pod's pids limit, resources.limits.memory) and retry"
        )
    else:
        hint = install_hint
    return CaptureError(message, hint)
