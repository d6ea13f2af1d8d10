# Remora developer entry points. Every target works on a fresh Debian 12 machine as root.
SHELL := /bin/bash
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup testbed-bin demo test lint typecheck layers unit bench clean

setup: ## Install system packages, the Python environment and the test bed binaries
	hack/setup.sh

testbed-bin: ## Build (or reuse) the Kubernetes test bed binaries
	hack/testbed/build.sh

demo: setup ## Start the local test bed and the webhook, inject a pod, show the result
	$(PY) -m remora demo

lint: ## ruff lint + format check
	ruff check .
	ruff format --check .

typecheck: ## mypy over every package
	mypy

layers: ## import-linter: enforce docs/architecture.md's layering
	lint-imports

test: setup lint typecheck layers ## Everything CI runs
	$(PY) -m pytest

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
