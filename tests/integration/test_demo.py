"""The README's first command: `remora demo` injects a workload through a real API server."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.testbed, pytest.mark.slow]


def test_demo_injects_the_deployment_and_leaves_the_opted_out_pod_alone() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "remora", "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "2 of 3 pods injected" in out
    # The opted-out Pod is listed with its one container and nothing else.
    opted_out = out.split("pod demo/opted-out\n", 1)[1].split("pod demo/", 1)[0]
    assert opted_out.strip().splitlines() == ["container       batch        image busybox:1.36"]
    web_pods = [block for block in out.split("pod demo/")[1:] if block.startswith("web-")]
    assert len(web_pods) == 2
    for block in web_pods:
        assert "init container  istio-init" in block
        assert "-p 15001 -z 15006 -u 1337 -m REDIRECT" in block
        # The test bed is Kubernetes 1.34: the sidecar is a native one, started before the app.
        assert "init container  istio-proxy  proxy sidecar" in block
        assert (
            block.index("istio-init")
            < block.index("istio-proxy")
            < block.index("container       web")
        )
        assert "(native sidecar)" in block
        assert "sidecar.istio.io/status" in block
    assert "stopped the webhook and the test bed" in run.stderr
