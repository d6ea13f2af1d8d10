"""``remora demo``: Remora's main job on an embedded default, end to end on this machine.

Starts the local test bed (a real kube-apiserver with its controllers), runs the injection
webhook against it, registers it the way Istio's chart does, labels a namespace
``istio-injection=enabled``, deploys an unchanged workload and shows what the API server
stored: the Pods come out with the capture init container and the sidecar.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click
import yaml

from meshlib.pod_markers import SIDECAR_STATUS_ANNOTATION

if TYPE_CHECKING:
    from injector.in_process import WebhookServer
    from testbed.launcher import TestBed

WORKLOAD = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web, version: v1}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - {name: http, containerPort: 80}
        readinessProbe:
          httpGet: {path: /, port: http}
"""

OPTED_OUT = """
apiVersion: v1
kind: Pod
metadata:
  name: opted-out
  labels: {app: batch, sidecar.istio.io/inject: "false"}
spec:
  containers:
  - {name: batch, image: busybox:1.36, command: [sleep, "3600"]}
"""


def _say(message: str) -> None:
    click.secho(f"demo: {message}", fg="cyan", err=True)


def describe_pod(pod: dict[str, Any]) -> str:
    """A short human summary of what injection did to a stored Pod."""
    spec, meta = pod["spec"], pod["metadata"]
    lines = [f"pod {meta['namespace']}/{meta['name']}"]
    for init in spec.get("initContainers") or []:
        restart = " (native sidecar)" if init.get("restartPolicy") == "Always" else ""
        lines.append(
            f"  init container  {init['name']:12} {shlex.join(init.get('args') or [])}{restart}"
        )
    for container in spec.get("containers") or []:
        lines.append(f"  container       {container['name']:12} image {container['image']}")
    for key in sorted(meta.get("annotations") or {}):
        if key.startswith(("sidecar.istio.io", "prometheus.io", "kubectl.kubernetes.io")):
            value = meta["annotations"][key]
            lines.append(
                f"  annotation      {key}: {value if len(value) < 70 else value[:67] + '...'}"
            )
    return "\n".join(lines)


@click.command()
@click.option("--show-yaml", is_flag=True, help="Also print the full YAML of one injected Pod.")
@click.option(
    "--keep",
    is_flag=True,
    help="Keep everything running until Ctrl-C (KUBECONFIG is printed so you can look around).",
)
def demo(show_yaml: bool, keep: bool) -> None:
    """Run the mesh's main job locally: inject a workload through a real API server.

    \b
    Starts etcd + kube-apiserver + controllers on loopback (remora testbed), the injection
    webhook on https://127.0.0.1, registers it like Istio's chart, creates the namespace
    'demo' labelled istio-injection=enabled, deploys an unchanged Deployment and an opted-out
    Pod, and prints what the API server stored. Everything stops at the end.
    """
    from injector.cli import detect_kubernetes_version
    from injector.config import default_config
    from injector.in_process import WebhookServer
    from testbed.launcher import TestBed

    started = time.monotonic()
    _say("starting the local Kubernetes test bed (etcd, kube-apiserver, controllers)...")
    with TestBed.start(progress=_say) as bed:
        # As `remora webhook` does at start: native sidecars when the cluster supports them.
        version = detect_kubernetes_version(str(bed.kubeconfig))
        config = replace(default_config(), kubernetes_version=version)
        with WebhookServer(config) as webhook:
            shown = ".".join(map(str, version)) if version else "unknown"
            _say(f"injection webhook listening on {webhook.url} (Kubernetes {shown})")
            _run(bed, webhook, started, show_yaml=show_yaml, keep=keep)
    _say("stopped the webhook and the test bed")


def _run(
    bed: TestBed, webhook: WebhookServer, started: float, *, show_yaml: bool, keep: bool
) -> None:
    """Register the webhook, label a namespace, deploy, and print what the API server stored."""
    from kubernetes import client, utils

    from injector.registration import wait_until_injecting, webhook_configuration

    with bed.api_client() as api:
        core = client.CoreV1Api(api)
        client.AdmissionregistrationV1Api(api).create_mutating_webhook_configuration(
            webhook_configuration("remora-sidecar-injector", webhook.url, webhook.ca_bundle or "")
        )
        bed.create_namespace("demo", labels={"istio-injection": "enabled"})
        _say("namespace 'demo' labelled istio-injection=enabled")
        try:
            wait_until_injecting(core, "demo", timeout=20.0)
        except TimeoutError as exc:
            raise click.ClickException(str(exc)) from exc
        utils.create_from_yaml(api, yaml_objects=[yaml.safe_load(WORKLOAD)], namespace="demo")
        core.create_namespaced_pod("demo", yaml.safe_load(OPTED_OUT))
        _say("deployed Deployment 'web' (2 replicas) and Pod 'opted-out', both unchanged")
        pods = _wait_for_pods(core, "demo", count=3)
        for pod in pods:
            click.echo(describe_pod(pod))
        injected = [
            p for p in pods if SIDECAR_STATUS_ANNOTATION in (p["metadata"].get("annotations") or {})
        ]
        click.echo(
            f"\n{len(injected)} of {len(pods)} pods injected "
            f"(the opted-out pod was left alone) in {time.monotonic() - started:.1f}s"
        )
        if show_yaml and injected:
            click.echo("---\n" + yaml.safe_dump(injected[0], sort_keys=False))
        if keep:
            click.echo(f"\nexport KUBECONFIG={bed.kubeconfig}   # Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass


def _wait_for_pods(
    core: Any, namespace: str, count: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_namespaced_pod(namespace).items
        if len(pods) >= count or time.monotonic() > deadline:
            api = core.api_client
            return sorted(
                (api.sanitize_for_serialization(p) for p in pods),
                key=lambda p: p["metadata"]["name"],
            )
        time.sleep(0.2)
