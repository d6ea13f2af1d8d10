"""initcontainer.process: the posix_spawn + poll replacement for subprocess.run/Popen."""

from __future__ import annotations

import os

import pytest

from initcontainer import process


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


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
    before = _open_fds()
    started = [process.Process(["sh", "-c", f"sleep 0.2; echo {i}"]) for i in range(4)]
    results = [p.communicate() for p in started]
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n"]
    assert _open_fds() == before


def test_a_missing_tool_is_file_not_found_and_leaks_nothing() -> None:
    before = _open_fds()
    with pytest.raises(FileNotFoundError):
        process.Process(["remora-no-such-tool"], with_stdin=True)
    assert _open_fds() == before


def test_stdin_is_inherited_when_no_input_is_given() -> None:
    # iptables-save gets the init container's stdin, as with subprocess defaults.
    result = process.run(["sh", "-c", "readlink /proc/self/fd/0"])
    assert result.stdout.strip() == os.readlink("/proc/self/fd/0")
