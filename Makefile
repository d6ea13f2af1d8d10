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

# --- Images, the Helm chart and the kind suite (docs/install.md) ---------------------------
HELM = $(shell hack/testbed/build.sh --print-helm 2>/dev/null)
REMORA_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_HUB ?= docker.io/remora
IMAGE ?= $(IMAGE_HUB)/remora:$(REMORA_VERSION)
# Debian 12, as the test bed and CI; when no registry serves it, `make images` builds the same
# base from Debian's own packages with debootstrap.
BASE_IMAGE ?= debian:bookworm-slim
# kind and kubectl: pinned builds from Go modules unless given (KIND=kind KUBECTL=kubectl to use
# your own). kind is built on first use by `make kind-up` (hack/tools/build.sh kind, ~1 min
# cold); kubectl is the test bed's (same Kubernetes line as the kind node image).
ifeq ($(origin KIND),undefined)
KIND := $(shell hack/tools/build.sh --print kind)
KIND_PINNED := yes
endif
ifeq ($(origin KUBECTL),undefined)
KUBECTL := $(shell hack/testbed/build.sh --print 2>/dev/null)/kubectl
endif
KIND_CLUSTER ?= remora
MESH_NAMESPACE ?= istio-system
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
.PHONY: images chart-lint chart-test kind-up kind-test kind-down

images: ## Build the Remora image (every role) with Docker; prints its size and build time
	@command -v docker >/dev/null || { echo "images: docker is not installed (apt-get install docker.io)" >&2; exit 1; }
	@docker info >/dev/null 2>&1 || { echo "images: the Docker engine is not running (start dockerd)" >&2; exit 1; }
	@if ! docker image inspect $(BASE_IMAGE) >/dev/null 2>&1 && ! docker pull -q $(BASE_IMAGE) >/dev/null 2>&1; then \
	  echo "images: cannot pull $(BASE_IMAGE); building it from Debian's packages (debootstrap)" >&2; \
	  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; \
	  mirror=$$(sed -n 's/^URIs: *\([^ ]*\/debian\)$$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1); \
	  rootfs=$$(mktemp -d) && debootstrap --variant=minbase bookworm $$rootfs $$mirror >/dev/null \
	    && rm -rf $$rootfs/var/lib/apt/lists/* $$rootfs/var/cache/apt/* $$rootfs/usr/share/doc/* \
	         $$rootfs/usr/share/man/* $$rootfs/usr/share/info/* $$rootfs/usr/share/locale/* \
	    && tar -C $$rootfs -c . | docker import -c 'CMD ["bash"]' - $(BASE_IMAGE) >/dev/null; \
	  status=$$?; rm -rf $$rootfs; exit $$status; \
	fi
	@mkdir -p build
	$(UV) export --quiet --frozen --no-dev --no-emit-project --format requirements-txt -o build/requirements.lock.txt
	@# Wheels are fetched here (hash-checked against the lock) and built for sdists, so the
	@# image build needs no index, no compiler and no certificates of this machine's network.
	rm -rf build/wheels build/remora-wheel
	$(UV) tool run --quiet --python 3.11 --from pip pip wheel --quiet --require-hashes --no-deps -r build/requirements.lock.txt -w build/wheels
	$(UV) tool run --quiet --python 3.11 --from pip pip wheel --quiet --no-deps . -w build/remora-wheel
	$(UV) export --quiet --frozen --no-dev --no-emit-project --no-hashes --format requirements-txt -o build/requirements.txt
	@start=$$(date +%s); \
	docker build -q -t $(IMAGE) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  --build-arg VERSION=$(REMORA_VERSION) \
	  --build-arg LOCK_SHA256=$$(sha256sum uv.lock | cut -d' ' -f1) \
	  --build-arg REVISION=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
	  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) . >/dev/null \
	  && echo "images: built $(IMAGE) in $$(( $$(date +%s) - start ))s, $$(docker image inspect -f '{{.Size}}' $(IMAGE) | awk '{printf "%.0f MB", $$1/1e6}')"

chart-lint: ## helm lint --strict the chart with every value set in charts/remora/ci
	@test -x "$(HELM)" || { echo "chart-lint: helm is missing: run hack/testbed/build.sh" >&2; exit 1; }
	@for values in charts/remora/ci/*-values.yaml; do \
	  $(HELM) lint charts/remora --strict --kube-version 1.34.4 -f $$values >/dev/null || exit 1; \
	  echo "chart-lint: $$values ok"; done

chart-test: ## Render/schema tests and the install into the test bed
	$(PY) -m pytest -q tests/unit/test_chart_render.py tests/integration/test_chart_install.py tests/integration/test_chart_image.py

kind-up: images ## Create the kind cluster, load the image, install the chart, deploy the sample app
	@if [ -n "$(KIND_PINNED)" ]; then hack/tools/build.sh kind >/dev/null; \
	  else command -v $(KIND) >/dev/null || { echo "kind-up: $(KIND) not found (unset KIND to build the pinned kind)" >&2; exit 1; }; fi
	@test -x "$(KUBECTL)" || command -v $(KUBECTL) >/dev/null || { echo "kind-up: kubectl is missing: run hack/testbed/build.sh (or pass KUBECTL=kubectl)" >&2; exit 1; }
	@test -x "$(HELM)" || { echo "kind-up: helm is missing: run hack/testbed/build.sh" >&2; exit 1; }
	$(KIND) get clusters | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --name $(KIND_CLUSTER) --config kind-config.yaml --wait 120s
	$(KIND) load docker-image --name $(KIND_CLUSTER) $(IMAGE)
	$(HELM) upgrade --install remora charts/remora -n $(MESH_NAMESPACE) --create-namespace --kube-context kind-$(KIND_CLUSTER) \
	  --set image.hub=$(IMAGE_HUB) --set image.tag=$(REMORA_VERSION) --wait --timeout 5m
	sed 's|REMORA_IMAGE|$(IMAGE)|g' tests/e2e/manifests/demo.yaml | $(KUBECTL) --context kind-$(KIND_CLUSTER) apply -f -
	$(KUBECTL) --context kind-$(KIND_CLUSTER) -n remora-demo rollout status deploy/server deploy/client deploy/legacy-client --timeout 180s

kind-test: ## The kind suite (tests/e2e) against the cluster kind-up made
	KIND=$(KIND) KUBECTL=$(KUBECTL) KIND_CLUSTER=$(KIND_CLUSTER) MESH_NAMESPACE=$(MESH_NAMESPACE) REMORA_IMAGE=$(IMAGE) $(PY) -m pytest -q -rs -m e2e tests/e2e

kind-down: ## Delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)
