"""``remora kube-inject`` as a user runs it: files and stdin, flags, config files, errors."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from remora.cli import cli

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "nginx:1.27"}
"""


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["kube-inject", *args], input=stdin, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def template_of(text: str) -> dict:
    return yaml.safe_load(text)["spec"]["template"]


def test_stdin_to_stdout_and_twice_equals_once() -> None:
    code, once, _ = run("-f", "-", stdin=DEPLOYMENT)
    assert code == 0
    names = [c["name"] for c in template_of(once)["spec"]["containers"]]
    assert names == ["web", "istio-proxy"]
    code, twice, _ = run("-f", "-", stdin=once)
    assert code == 0 and twice == once


def test_file_and_output_file(tmp_path: Path) -> None:
    source, target = tmp_path / "in.yaml", tmp_path / "out.yaml"
    source.write_text(DEPLOYMENT)
    code, stdout, _ = run("-f", str(source), "-o", str(target))
    assert code == 0 and stdout == ""
    assert "istio-init" in target.read_text()


def test_native_sidecar_flag_and_kubernetes_version() -> None:
    _, out, _ = run("-f", "-", "--native-sidecars", stdin=DEPLOYMENT)
    spec = template_of(out)["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["istio-init", "istio-proxy"]
    _, out, _ = run("-f", "-", "--kubernetes-version", "1.33", stdin=DEPLOYMENT)
    assert template_of(out)["spec"]["initContainers"][1]["restartPolicy"] == "Always"
    _, out, _ = run(
        "-f", "-", "--kubernetes-version", "1.33", "--no-native-sidecars", stdin=DEPLOYMENT
    )
    assert [c["name"] for c in template_of(out)["spec"]["containers"]] == ["web", "istio-proxy"]


def test_values_and_mesh_config_files_including_configmaps(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "istio-sidecar-injector"},
                "data": {"config": "proxy:\n  hub: registry.example/mesh\n  tag: '7'\n"},
            }
        )
    )
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(
        yaml.safe_dump(
            {
                "kind": "ConfigMap",
                "data": {"mesh": "trustDomain: corp.example\n"},
                "metadata": {"name": "istio"},
            }
        )
    )
    code, out, err = run(
        "-f", "-", "--values", str(values), "--mesh-config", str(mesh), stdin=DEPLOYMENT
    )
    assert code == 0, err
    proxy = template_of(out)["spec"]["containers"][1]
    assert proxy["image"] == "registry.example/mesh/remora:7"
    assert {"name": "TRUST_DOMAIN", "value": "corp.example"} in proxy["env"]


def test_skipped_workloads_pass_through_with_the_reason_on_stderr() -> None:
    host = DEPLOYMENT.replace("containers:", "hostNetwork: true\n      containers:")
    code, out, err = run("-f", "-", stdin=host)
    assert code == 0
    assert yaml.safe_load(out) == yaml.safe_load(host)
    assert (
        "kube-inject: document 1 (Deployment web): not injected: the pod uses the host network"
        in err
    )


def test_invalid_yaml_is_a_clear_error() -> None:
    code, out, err = run("-f", "-", stdin="kind: Pod\nspec: [\n")
    assert code == 1 and out == ""
    assert "Error: <stdin> is not valid YAML" in err
    assert "Traceback" not in err


def test_invalid_annotation_names_document_annotation_and_value() -> None:
    bad = DEPLOYMENT.replace(
        "metadata: {labels: {app: web}}",
        "metadata:\n      labels: {app: web}\n      annotations: {sidecar.istio.io/interceptionMode: BPF}",
    )
    code, out, err = run("-f", "-", stdin="---\nkind: Service\nmetadata: {name: s}\n---\n" + bad)
    assert code == 1 and out == ""
    assert (
        "Error: document 2 (Deployment web): invalid value 'BPF' for annotation "
        "'sidecar.istio.io/interceptionMode': interceptionMode invalid, use REDIRECT,TPROXY,NONE"
    ) in err


def test_malformed_workloads_are_clear_errors() -> None:
    code, _, err = run(
        "-f", "-", stdin="apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n"
    )
    assert code == 1 and "document 1 (Deployment x): spec.template is missing" in err
    code, _, err = run(
        "-f", "-", stdin="kind: Pod\nmetadata: {name: p}\nspec: {containers: nope}\n"
    )
    assert code == 1 and "spec.containers must be a list of mappings" in err
    code, _, err = run(
        "-f", "-", stdin="kind: Pod\nmetadata: {name: p, labels: {n: 1}}\nspec: {containers: []}\n"
    )
    assert code == 1 and "metadata.labels must map strings to strings" in err


def test_missing_file_and_bad_config_are_clear_errors(tmp_path: Path) -> None:
    code, _, err = run("-f", str(tmp_path / "nope.yaml"))
    assert code == 1 and "cannot read" in err and "No such file" in err
    config = tmp_path / "c.yaml"
    config.write_text("proxy: {tga: x}\n")
    code, _, err = run("-f", "-", "--config", str(config), stdin=DEPLOYMENT)
    assert code == 1 and "unknown key 'proxy.tga'" in err


def test_help_teaches_with_examples() -> None:
    code, out, _ = run("--help")
    assert code == 0
    assert "remora kube-inject -f deployment.yaml | kubectl apply -f -" in out
