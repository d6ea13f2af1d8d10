"""initcontainer.process: the posix_spawn + poll replacement for subprocess.run/Popen."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
from leaks import child_pids, new_children, open_fds

from initcontainer import process


def test_exit_code_stdout_and_stderr_are_kept_apart() -> None:
    result = process.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert result.argv == ["sh", "-c", "echo out; echo err >&2; exit 3"]


def test_input_is_fed_and_large_outputs_do_not_deadlock() -> None:
    # More than a pipe buffer in each direction at once: stdin and both outputs must be
    # serviced together, as subprocess.communicate does.
    text = "".join(f"line {i} é\n" for i in range(60_000))  # ~600 kB
    result = process.run(["sh", "-c", "tee /dev/stderr"], stdin=text)
    assert result.returncode == 0
    assert result.stdout == text and result.stderr == text


def test_a_tool_that_ignores_its_input_is_not_an_error() -> None:
    result = process.run(["true"], stdin="x" * 1_000_000)
    assert result.returncode == 0 and result.stdout == ""


def test_a_killed_tool_reports_the_signal_like_subprocess() -> None:
    assert process.run(["sh", "-c", "kill -TERM $$"]).returncode == -15


def test_tools_run_concurrently_and_leave_no_descriptor_behind() -> None:
    before = open_fds()
    started = [process.Process(["sh", "-c", f"sleep 0.2; echo {i}"]) for i in range(4)]
    results = [p.communicate() for p in started]
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n"]
    assert open_fds() == before


def test_a_missing_tool_is_file_not_found_and_leaks_nothing() -> None:
    before = open_fds()
    with pytest.raises(FileNotFoundError):
        process.Process(["remora-no-such-tool"], with_stdin=True)
    assert open_fds() == before


def test_stdin_is_inherited_when_no_input_is_given() -> None:
    # iptables-save gets the init container's stdin, as with subprocess defaults.
    result = process.run(["sh", "-c", "readlink /proc/self/fd/0"])
    assert result.stdout.strip() == os.readlink("/proc/self/fd/0")


# --- error paths: every descriptor closed, every child reaped -----------------------------


def _fail_on_call(real: Any, failing_call: int, error: BaseException) -> Any:
    calls = []

    def fake(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == failing_call:
            raise error
        return real(*args)

    fake.calls = calls  # type: ignore[attr-defined]
    return fake


@pytest.mark.parametrize(
    ("with_stdin", "failing_call"),
    [(False, 1), (False, 2), (True, 1), (True, 2), (True, 3)],
)
def test_a_pipe_that_cannot_be_made_leaks_no_end_of_the_others(
    monkeypatch: pytest.MonkeyPatch, with_stdin: bool, failing_call: int
) -> None:
    children = set(child_pids())
    before = open_fds()
    emfile = OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    fake_pipe = _fail_on_call(os.pipe, failing_call, emfile)
    monkeypatch.setattr(os, "pipe", fake_pipe)
    with pytest.raises(OSError) as error:
        process.Process(["true"], with_stdin=with_stdin)
    monkeypatch.undo()
    assert error.value.errno == errno.EMFILE
    assert len(fake_pipe.calls) == failing_call  # it failed where we meant it to
    assert open_fds() == before
    assert new_children(children) == []


@pytest.mark.parametrize(
    ("content", "mode", "expected"),
    [
        (b"#!/bin/sh\necho hi\n", 0o644, errno.EACCES),  # not executable (root too)
        (b"\x7fELF, but not really", 0o755, errno.ENOEXEC),  # not a program for this CPU
    ],
)
def test_a_tool_that_cannot_be_executed_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes, mode: int, expected: int
) -> None:
    children = set(child_pids())
    tool = tmp_path / "remora-broken-tool"
    tool.write_bytes(content)
    tool.chmod(mode)
    monkeypatch.setenv("PATH", str(tmp_path))
    before = open_fds()
    with pytest.raises(OSError) as error:
        process.Process([tool.name], with_stdin=True)
    assert error.value.errno == expected
    assert open_fds() == before
    assert new_children(children) == []


def test_a_failed_write_kills_and_reaps_the_tool_and_closes_every_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    children = set(child_pids())
    before = open_fds()
    proc = process.Process(["sleep", "30"], with_stdin=True)
    assert new_children(children) == [proc.pid]
    monkeypatch.setattr(os, "write", _fail_on_call(os.write, 1, OSError(errno.EIO, "I/O")))
    started = time.monotonic()
    with pytest.raises(OSError, match="I/O"):
        proc.communicate("*nat\nCOMMIT\n")
    monkeypatch.undo()
    assert time.monotonic() - started < 5  # killed, not waited for
    assert open_fds() == before
    assert new_children(children) == []
    with pytest.raises(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)  # already reaped


def test_an_interrupt_while_reading_kills_and_reaps_the_tool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    children = set(child_pids())
    before = open_fds()
    proc = process.Process(["sh", "-c", "echo started; exec sleep 30"])
    monkeypatch.setattr(os, "read", _fail_on_call(os.read, 1, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        proc.communicate()
    monkeypatch.undo()
    assert open_fds() == before
    assert new_children(children) == []


def test_a_started_tool_that_is_not_needed_can_be_killed_twice() -> None:
    children = set(child_pids())
    # What a caller does with the tools it started when starting the next one failed.
    before = open_fds()
    proc = process.Process(["sleep", "30"], with_stdin=True)
    proc.kill()
    proc.kill()
    assert open_fds() == before
    assert new_children(children) == []
    finished = process.Process(["true"])
    assert finished.communicate().returncode == 0
    finished.kill()  # after communicate: nothing left to do, and no error
    assert new_children(children) == []
