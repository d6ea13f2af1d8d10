"""``remora webhook`` and ``remora kube-inject``: thin click edges over the injector core."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from injector.config import InjectorConfig, load_config, parse_kubernetes_version
from injector.errors import ConfigError
from meshlib.clitypes import DURATION

if TYPE_CHECKING:  # imported when a command runs: ``remora --help`` stays fast
    from injector.runtime_certs import RuntimeCertOptions


def _kubernetes_version_option(value: str | None) -> tuple[int, int] | None:
    try:
        return parse_kubernetes_version(value, "--kubernetes-version")
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def detect_kubernetes_version(kubeconfig: str | None) -> tuple[int, int] | None:
    """The lowest of the API server's and the nodes' kubelet versions, or ``None`` if unknown.

    Native sidecars need support in the API server (to keep ``restartPolicy``) and in every
    kubelet that may run the pod; with no nodes registered the API server decides.
    """
    from kubernetes import client

    from meshlib.kube import api_client

    api = api_client(kubeconfig)
    try:
        info = client.VersionApi(api).get_code(_request_timeout=5)
        versions = [parse_kubernetes_version(info.git_version)]
        try:
            nodes = client.CoreV1Api(api).list_node(_request_timeout=5).items
            versions += [
                parse_kubernetes_version(n.status.node_info.kubelet_version) for n in nodes
            ]
        except client.ApiException:
            pass  # no permission to list nodes: the API server's version will do
        known = [v for v in versions if v is not None]
        return min(known) if known else None
    finally:
        api.close()


WEBHOOK_HELP = """Run the sidecar injection webhook (a Kubernetes mutating admission webhook).

\b
It answers AdmissionReviews on POST /inject over HTTPS and injects the Remora
sidecar and capture init container into pods, as Istio's injector does for
namespaces labelled istio-injection=enabled. Also serves /healthz, /readyz and
/metrics. The certificate, key and config files are re-read when they change.

\b
Examples:
  # local trial: make a CA and serving certificate, print the caBundle, serve
  remora webhook --self-signed ./certs --port 9443
  # in a cluster, with a mounted Secret and ConfigMap
  remora webhook --tls-cert /certs/tls.crt --tls-key /certs/tls.key \\
      --config /etc/remora/config --mesh-config /etc/remora/mesh --workers 2
  # in a cluster, certificates made and renewed at runtime (the Helm chart's default)
  remora webhook --tls-cert /run/certs/tls.crt --tls-key /run/certs/tls.key \\
      --cert-secret remora-injector-tls --webhook-configuration remora-sidecar-injector \\
      --san remora-injector.remora-system.svc
"""


@click.command(
    "webhook", help=WEBHOOK_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=9443, show_default=True, type=click.IntRange(0, 65535))
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Serving certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="Serving private key (PEM).")
@click.option(
    "--self-signed",
    "self_signed_dir",
    type=click.Path(file_okay=False),
    help="Create a CA and a serving certificate in this directory, print the caBundle, and use them.",
)
@click.option(
    "--san",
    multiple=True,
    default=("localhost", "127.0.0.1"),
    show_default=True,
    help="DNS name or IP for --self-signed and runtime certificates (repeatable).",
)
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False), help="Injection config YAML."
)
@click.option(
    "--mesh-config", "mesh_file", type=click.Path(dir_okay=False), help="Istio MeshConfig YAML."
)
@click.option(
    "--kubernetes-version",
    default="auto",
    show_default=True,
    help="Cluster version for the native-sidecar decision: e.g. 1.34, 'auto' (ask the API server "
    "via --kubeconfig/in-cluster credentials, falling back to the config) or 'config'.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False),
    help="Credentials for --kubernetes-version auto and --cert-secret "
    "(default: $KUBECONFIG, else the pod's service account).",
)
@click.option(
    "--cert-secret",
    help="Runtime certificates: keep a CA and serving certificate in this Secret (shared by the "
    "replicas), write them to --tls-cert/--tls-key and renew them before expiry.",
)
@click.option(
    "--webhook-configuration",
    help="Runtime certificates: write the CA into this MutatingWebhookConfiguration's caBundle.",
)
@click.option(
    "--cert-validity",
    type=DURATION,
    default="2160h",
    show_default=True,
    help="Runtime certificates.",
)
@click.option(
    "--cert-renew-before",
    type=DURATION,
    default="720h",
    show_default=True,
    help="Runtime certificates.",
)
@click.option(
    "--namespace",
    envvar="POD_NAMESPACE",
    help="Namespace of --cert-secret (default: $POD_NAMESPACE).",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--reload-interval", default=2.0, show_default=True, type=float, help="Seconds.")
@click.option("--log-level", default="info", show_default=True)
@click.option(
    "--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True
)
def webhook(  # noqa: PLR0913, PLR0917 - click passes every option
    host: str,
    port: int,
    tls_cert: str | None,
    tls_key: str | None,
    self_signed_dir: str | None,
    san: tuple[str, ...],
    config_file: str | None,
    mesh_file: str | None,
    kubernetes_version: str,
    kubeconfig: str | None,
    cert_secret: str | None,
    webhook_configuration: str | None,
    cert_validity: float,
    cert_renew_before: float,
    namespace: str | None,
    workers: int,
    reload_interval: float,
    log_level: str,
    log_format: str,
) -> None:
    from injector.runtime_certs import write_self_signed
    from injector.server import ServeOptions, serve
    from meshlib.logs import setup_logging

    setup_logging(log_level, log_format)
    if self_signed_dir:
        generated = write_self_signed(self_signed_dir, tuple(san))
        tls_cert, tls_key = generated.cert_file, generated.key_file
        click.echo(f"CA certificate: {generated.ca_file}", err=True)
        click.echo("caBundle for the MutatingWebhookConfiguration:", err=True)
        click.echo(generated.ca_bundle)
    if not tls_cert or not tls_key:
        raise click.UsageError("give --tls-cert and --tls-key, or --self-signed DIR")
    runtime_certs = None
    if cert_secret:
        cert_options = _runtime_cert_options(
            cert_secret,
            namespace,
            webhook_configuration,
            (tls_cert, tls_key),
            san,
            cert_validity,
            cert_renew_before,
        )
        runtime_certs = _runtime_certificates(cert_options, kubeconfig)
    try:
        config = load_config(config_file, mesh_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None

    version: tuple[int, int] | None = None
    if kubernetes_version == "auto":
        if config.native_sidecars == "auto" and config.kubernetes_version is None:
            try:
                version = detect_kubernetes_version(kubeconfig)
                click.echo(f"Kubernetes version for native sidecars: {version}", err=True)
            except Exception as exc:
                click.echo(
                    f"warning: cannot learn the Kubernetes version ({exc}); native sidecars "
                    "stay off unless the config or the pod annotation turns them on",
                    err=True,
                )
    elif kubernetes_version != "config":
        version = _kubernetes_version_option(kubernetes_version)

    options = ServeOptions(
        cert_file=tls_cert,
        key_file=tls_key,
        host=host,
        port=port,
        config_file=config_file,
        mesh_config_file=mesh_file,
        reload_interval=reload_interval,
        kubernetes_version=version,
    )
    try:
        serve(options, workers=workers, on_started=runtime_certs.start if runtime_certs else None)
    except (ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def _runtime_cert_options(
    secret: str,
    namespace: str | None,
    webhook_configuration: str | None,
    tls_files: tuple[str, str],
    sans: tuple[str, ...],
    validity: float,
    renew_before: float,
) -> RuntimeCertOptions:
    """The runtime certificate flags, checked, as :class:`RuntimeCertOptions`."""
    import datetime as dt

    from injector.runtime_certs import RuntimeCertOptions

    if not namespace:
        raise click.UsageError("--cert-secret needs --namespace (or $POD_NAMESPACE)")
    lifetime = dt.timedelta(seconds=validity)
    renew = dt.timedelta(seconds=renew_before)
    if renew >= lifetime:
        raise click.BadParameter("--cert-renew-before must be shorter than --cert-validity")
    return RuntimeCertOptions(
        secret_name=secret,
        namespace=namespace,
        cert_file=tls_files[0],
        key_file=tls_files[1],
        sans=sans,
        webhook_configuration=webhook_configuration,
        validity=lifetime,
        renew_before=renew,
    )


def _runtime_certificates(options: RuntimeCertOptions, kubeconfig: str | None) -> Any:
    """Set up runtime certificates before serving; the returned manager keeps them current."""
    from injector.runtime_certs import RuntimeCertificates
    from meshlib.kube import api_client

    try:
        manager = RuntimeCertificates(api_client(kubeconfig), options)
        manager.ensure()
    except RuntimeError as exc:  # a RuntimeCertError, or no usable credentials
        raise click.ClickException(str(exc)) from None
    return manager


KUBE_INJECT_HELP = """Inject the sidecar into Kubernetes YAML, offline.

\b
Reads multi-document YAML (Pods, Deployments, StatefulSets, DaemonSets,
ReplicaSets, Jobs, CronJobs, Lists), injects every pod template as the webhook
would, and prints YAML. Other documents pass through unchanged; workloads that
are not injected (hostNetwork, sidecar.istio.io/inject=false) pass through too,
with the reason on stderr. Injecting twice equals injecting once.

\b
Examples:
  remora kube-inject -f deployment.yaml | kubectl apply -f -
  kubectl get deploy web -o yaml | remora kube-inject -f - --native-sidecars
  remora kube-inject -f app.yaml --config injector.yaml --mesh-config mesh.yaml
"""


@click.command(
    "kube-inject", help=KUBE_INJECT_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.option("-f", "--filename", "filename", required=True, help="YAML file, or - for stdin.")
@click.option(
    "--config",
    "--values",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Injection config YAML.",
)
@click.option(
    "--mesh-config", "mesh_file", type=click.Path(dir_okay=False), help="Istio MeshConfig YAML."
)
@click.option(
    "--native-sidecars/--no-native-sidecars",
    default=None,
    help="Force native sidecars on or off (default: the config's nativeSidecars/kubernetesVersion).",
)
@click.option(
    "--kubernetes-version", default=None, help="Target cluster version, e.g. 1.34 (for 'auto')."
)
@click.option(
    "-o", "--output", "output", default="-", help="Where to write the YAML (default stdout)."
)
def kube_inject(
    filename: str,
    config_file: str | None,
    mesh_file: str | None,
    native_sidecars: bool | None,
    kubernetes_version: str | None,
    output: str,
) -> None:
    from injector.errors import KubeInjectError
    from injector.kube_inject import kube_inject_text

    try:
        config: InjectorConfig = load_config(config_file, mesh_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    changes: dict[str, Any] = {}
    if kubernetes_version:
        changes["kubernetes_version"] = _kubernetes_version_option(kubernetes_version)
    if native_sidecars is not None:
        changes["native_sidecars"] = "true" if native_sidecars else "false"
    config = replace(config, **changes)

    try:
        if filename == "-":
            text, source = sys.stdin.read(), "<stdin>"
        else:
            with open(filename, encoding="utf-8") as fh:
                text, source = fh.read(), filename
    except OSError as exc:
        raise click.ClickException(f"cannot read {filename}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{filename} is not UTF-8 text") from None

    try:
        result, notes = kube_inject_text(text, config, source=source)
    except KubeInjectError as exc:
        raise click.ClickException(str(exc)) from None
    for note in notes:
        click.echo(f"kube-inject: {note}", err=True)
    if output == "-":
        click.echo(result, nl=False)
    else:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(result)
