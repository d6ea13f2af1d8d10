"""meshlib.processes.stop_process: SIGTERM first, SIGKILL after the grace period."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from meshlib.processes import stop_process


def test_a_process_that_obeys_sigterm_stops_with_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    assert stop_process(proc) == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline()  # the handler is in place
    started = time.monotonic()
    assert stop_process(proc, grace=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 10
    proc.stdout.close()


def test_an_exited_process_keeps_its_code() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    assert stop_process(proc) == 3
