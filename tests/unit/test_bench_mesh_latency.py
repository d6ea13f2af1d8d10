"""bench/mesh_latency.py reads fortio's result, /proc and its own tables right.

The fortio samples in tests/golden/bench/ are real: the JSON result (stdout) and the text
summary (stderr) of one ``fortio load`` run of the bench, through both sidecars. The text
summary is fortio's own rendering of the same histogram, so it checks the JSON parser
independently; the parsed result is also kept as a golden file (``REMORA_UPDATE_GOLDEN=1``
rewrites it: review the diff first).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import mesh_latency as bench
from harness.golden import assert_golden

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "bench"
SAMPLE = GOLDEN / "fortio-mesh-1000qps"


def _sample_json() -> str:
    return SAMPLE.with_suffix(".json").read_text()


def _text_targets() -> dict[float, float]:
    """fortio's text summary: ``# target 99% 0.00123`` (seconds) -> {99.0: 1.23} (ms)."""
    text = SAMPLE.with_suffix(".txt").read_text()
    found = re.findall(r"^# target ([0-9.]+)% ([0-9.e-]+)$", text, flags=re.MULTILINE)
    return {float(p): float(v) * 1000 for p, v in found}


def _text_codes() -> dict[str, int]:
    text = SAMPLE.with_suffix(".txt").read_text()
    return {code: int(n) for code, n in re.findall(r"^Code (-?\d+) : (\d+) ", text, re.MULTILINE)}


def test_parsed_sample_matches_golden() -> None:
    parsed = dataclasses.asdict(bench.parse_fortio_json(_sample_json()))
    golden = SAMPLE.with_suffix(".parsed.json")
    rendered = json.dumps(parsed, indent=2, sort_keys=True) + "\n"
    assert_golden(golden, rendered, "the parsed fortio result")


def test_percentiles_agree_with_fortios_text_summary() -> None:
    result = bench.parse_fortio_json(_sample_json())
    targets = _text_targets()
    assert set(targets) == {50.0, 90.0, 99.0, 99.9}
    assert result.p50_ms == pytest.approx(targets[50.0], rel=1e-5)
    assert result.p90_ms == pytest.approx(targets[90.0], rel=1e-5)
    assert result.p99_ms == pytest.approx(targets[99.0], rel=1e-5)
    assert result.p999_ms == pytest.approx(targets[99.9], rel=1e-5)
    # Milliseconds, ordered, and within what fortio measured.
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms <= result.p999_ms <= result.max_ms


def test_counts_agree_with_fortios_text_summary() -> None:
    result = bench.parse_fortio_json(_sample_json())
    codes = _text_codes()
    assert result.status_codes == codes
    assert result.ok == codes["200"]
    assert result.requests == sum(codes.values())
    assert result.failed == 0
    text = SAMPLE.with_suffix(".txt").read_text()
    done = re.search(r"All done (\d+) calls .*, ([0-9.]+) qps", text)
    assert done, "fortio's closing line is in the sample"
    assert result.requests == int(done.group(1))
    assert result.actual_qps == pytest.approx(float(done.group(2)), abs=0.05)
    assert result.requested_qps == 1000
    assert result.connections == 4


def test_every_non_200_answer_is_a_failure() -> None:
    data = json.loads(_sample_json())
    total = data["DurationHistogram"]["Count"]
    data["RetCodes"] = {"200": total - 5, "503": 3, "-1": 2}  # -1: fortio's transport errors
    result = bench.parse_fortio_json(json.dumps(data))
    assert (result.requests, result.ok, result.failed) == (total, total - 5, 5)


def test_output_that_is_not_a_load_result_says_so() -> None:
    with pytest.raises(bench.FortioOutputError, match="did not print a JSON result"):
        bench.parse_fortio_json("Aborting because of dial tcp 10.77.0.3:8080: refused\n")
    with pytest.raises(bench.FortioOutputError, match="no DurationHistogram"):
        bench.parse_fortio_json('{"RunType": "HTTP"}')
    data = json.loads(_sample_json())
    data["DurationHistogram"]["Percentiles"] = data["DurationHistogram"]["Percentiles"][:2]
    with pytest.raises(bench.FortioOutputError, match=r"lacks percentiles \[99.0, 99.9\]"):
        bench.parse_fortio_json(json.dumps(data))


def test_load_command_asks_fortio_for_what_the_parser_reads() -> None:
    argv = bench.fortio_load_argv(
        "/x/fortio", "http://10.96.0.9:80/echo", qps=1000, connections=4, duration=30, payload=1024
    )
    flags = dict(zip(argv[2:-1:2], argv[3:-1:2], strict=True))
    assert argv[:2] == ["/x/fortio", "load"] and argv[-1] == "http://10.96.0.9:80/echo"
    assert flags == {
        "-qps": "1000",
        "-c": "4",
        "-t": "30s",
        "-r": "1e-05",
        "-p": "50,90,99,99.9",
        "-json": "-",
        "-loglevel": "Warning",
        "-payload-size": "1024",
    }
    get = bench.fortio_load_argv("f", "u", qps=10, connections=1, duration=1.5, payload=0)
    assert "-payload-size" not in get and "1.5s" in get


def test_memory_reads_rss_and_anonymous_pages() -> None:
    # /proc/<pid>/stat parsing (CPU ticks, parent pid) is bench/procfs.py's: test_bench_procfs.py.
    status = "Name:\tenvoy\nVmHWM:\t  70000 kB\nVmRSS:\t   66560 kB\nRssAnon:\t   15360 kB\n"
    fields = bench.procfs.parse_kib_fields(status)
    assert bench.memory_of(fields) == bench.Memory(rss_kib=66560, anon_kib=15360)
    assert bench.Memory(1, 2) + bench.Memory(10, 20) == bench.Memory(11, 22)
    zombie = bench.procfs.parse_kib_fields("Name:\tzombie\nState:\tZ (zombie)\n")
    with pytest.raises(ValueError, match="exited"):
        bench.memory_of(zombie)


FAKE_ENVOY = """
import time
with open("/proc/self/comm", "w") as comm:
    comm.write("envoy-fake")  # what the bench tells Envoy by
end = time.process_time() + 0.3
while time.process_time() < end:
    pass
time.sleep(30)
"""


def test_a_live_process_tree_is_found_and_measured() -> None:
    # This test process as the "agent" and a child named like Envoy: the tree, the roles,
    # CPU and memory, read from /proc as the bench reads a pod's istio-proxy container.
    child = subprocess.Popen([sys.executable, "-c", FAKE_ENVOY, "--concurrency", "2"])
    try:
        deadline = time.monotonic() + 10
        while bench.procfs.comm(child.pid) != "envoy-fake" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.pid in bench.process_tree(os.getpid())
        assert bench.process_tree(child.pid) == [child.pid]
        pod = bench.SidecarProcesses("pod", os.getpid())
        roles = pod.roles()
        assert roles["envoy"] == [child.pid] and os.getpid() in roles["agent"]
        with pytest.raises(RuntimeError, match="processes other than Envoy"):
            bench.SidecarProcesses("bare", os.getpid(), agent=False).roles()
        bare = bench.SidecarProcesses("bare", child.pid, agent=False)
        assert f"envoy pid {child.pid} (" in bare.describe()
        assert bare.describe().endswith(" --concurrency 2)")
        while bare.cpu_seconds()["envoy"] < 0.2 and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu = bare.cpu_seconds()
        assert cpu["agent"] == 0 and 0.2 <= cpu["envoy"] < 5
        memory = pod.memory()
        assert memory["envoy"].rss_kib >= memory["envoy"].anon_kib > 0
        assert memory["agent"].rss_kib > memory["envoy"].rss_kib  # pytest holds more
    finally:
        child.kill()
        child.wait(timeout=10)


def test_added_latency_is_mesh_minus_direct_per_round() -> None:
    mesh = bench.parse_fortio_json(_sample_json())
    direct = dataclasses.replace(mesh, p50_ms=0.2, p90_ms=0.3, p99_ms=0.5)
    rows = [(1, "direct", direct), (1, "mesh", mesh)]
    added = bench.added_latency(rows)
    assert added == pytest.approx(
        {"p50": mesh.p50_ms - 0.2, "p90": mesh.p90_ms - 0.3, "p99": mesh.p99_ms - 0.5}
    )
    table = bench.render_latency(rows)
    assert f"**{mesh.p99_ms - 0.5:+.3f}**" in table.splitlines()[-1]
    assert table.splitlines()[-1].startswith("| 1 | **added** (mesh - direct)")


def test_cpu_per_thousand_requests_per_second() -> None:
    idle = {"agent": bench.Memory(40 << 10, 20 << 10), "envoy": bench.Memory(30 << 10, 10 << 10)}
    usage = bench.SidecarUsage(
        pod="client",
        agent_cpu_s=0.3,
        envoy_cpu_s=5.7,
        wall_s=30.0,
        requests=15000,
        idle=idle,
        loaded_peak=idle,
    )
    assert usage.cores == pytest.approx(0.2)  # 6 CPU seconds over 30 s
    assert usage.cores_per_krps == pytest.approx(0.4)  # 0.4 ms of CPU per request
    row = bench.render_usage([(1, usage)]).splitlines()[-1]
    assert "**0.400**" in row
    assert "| 40.0 + 30.0 = **70.0** | 20.0 + 10.0 = **30.0** |" in row  # RSS, then anonymous


@pytest.mark.envoy
def test_bare_envoy_config_is_accepted_by_envoy(tmp_path: Path) -> None:
    from meshlib.envoy_binary import envoy_path

    config = bench.bare_envoy_config(("10.77.0.3", 8080), listen_port=15999, admin_port=15998)
    path = tmp_path / "bare.json"
    path.write_text(json.dumps(config))
    checked = subprocess.run(
        [str(envoy_path()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    cluster = config["static_resources"]["clusters"][0]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "10.77.0.3", "port_value": 8080}
