"""Golden files for the injector: ``tests/golden/injector/<case>.in.yaml`` → ``<case>.out.yaml``.

Each case runs through ``kube-inject`` (optionally with ``<case>.config.yaml`` as the injection
config) and must match its reviewed output exactly. Every case also checks the properties that
must hold whatever the expected output is:

* idempotence: injecting the output again changes nothing;
* the webhook path: for a Pod document, the JSON Patch the webhook returns, applied to the input
  the way the API server applies it, gives the same pod as kube-inject;
* the output is a valid Kubernetes object (the 1.34 OpenAPI schema, strict).

Regenerate after a reviewed change with ``REMORA_UPDATE_GOLDEN=1 pytest tests/unit/test_injector_golden.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from harness.golden import assert_golden
from injector.admission import PatchCache, review
from injector.config import InjectorConfig, default_config, load_config
from injector.kube_inject import kube_inject_text, load_documents
from injector.patch import apply_patch, decode_patch

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "injector"
CASES = sorted(p.name.removesuffix(".in.yaml") for p in GOLDEN.glob("*.in.yaml"))
SCHEMA_VERSION = "1.34"


def _config(case: str) -> InjectorConfig:
    path = GOLDEN / f"{case}.config.yaml"
    config = load_config(str(path)) if path.exists() else default_config()
    # Goldens must not change with the package version.
    from dataclasses import replace

    if config.proxy.tag == default_config().proxy.tag:
        config = replace(config, proxy=replace(config.proxy, tag="0.1.0"))
    return config


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 30, CASES


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    config = _config(case)
    text = (GOLDEN / f"{case}.in.yaml").read_text()
    out, _notes = kube_inject_text(text, config, source=case)
    expected_path = GOLDEN / f"{case}.out.yaml"
    assert_golden(expected_path, out, f"{case}'s injected pod")

    again, _ = kube_inject_text(out, config, source=case)
    assert again == out, f"{case}: injecting the injected output changed it"

    inputs = load_documents(text)
    outputs = load_documents(out)
    for before, after in zip(inputs, outputs, strict=True):
        if not isinstance(after, dict) or "kind" not in after:
            continue
        if after.get("kind") == "Pod":
            _check_webhook_agrees(before, after, config)
        if after.get("kind") != "List":
            kubernetes_validate.validate(after, SCHEMA_VERSION, strict=True)


def _check_webhook_agrees(before: dict, after: dict, config: InjectorConfig) -> None:
    namespace = (before.get("metadata") or {}).get("namespace", "default")
    request = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0a6c4e2e-golden",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": before,
        },
    }
    body = json.dumps(request).encode()
    outcome = review(body, "application/json", config)
    assert outcome.status_code == 200
    # The served path goes through the patch cache: a miss and then a hit answer byte for byte
    # what the uncached review does.
    cache = PatchCache()
    missed = review(body, "application/json", config, cache)
    hit = review(body, "application/json", config, cache)
    assert (missed.cached, hit.cached) == (False, outcome.result == "injected")
    assert (missed.body, hit.body) == (outcome.body, outcome.body)
    response = json.loads(outcome.body)
    assert response["response"]["uid"] == "0a6c4e2e-golden"
    assert response["response"]["allowed"] is True
    patched = apply_patch(before, decode_patch(response))
    # The webhook also honours neverInjectSelector/alwaysInjectSelector and the policy, which
    # kube-inject (like istioctl's) ignores: with those in the config it may skip instead.
    expected = after
    if config.never_inject_selector and not response["response"].get("patch"):
        expected = before
    # Maps compare without order (the API server does not keep it); lists with order.
    assert json.dumps(patched, sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_every_case_file_has_an_input() -> None:
    for path in GOLDEN.iterdir():
        case = path.name.split(".")[0]
        assert (GOLDEN / f"{case}.in.yaml").exists(), f"{path.name} has no {case}.in.yaml"


def test_inputs_are_valid_yaml_with_a_comment_saying_why() -> None:
    for case in CASES:
        text = (GOLDEN / f"{case}.in.yaml").read_text()
        assert text.startswith("#"), f"{case}.in.yaml should open with a comment on what it shows"
        assert list(yaml.safe_load_all(text))
