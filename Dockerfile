# One image for every Remora role: the control plane (remora discovery), the injector
# (remora webhook), the sidecar agent with Envoy (remora proxy sidecar) and the capture init
# container (remora init). One image, because the roles share ~all of their bytes (Python,
# the locked dependencies, Envoy): a node that runs sidecars pulls one image once, and the
# injector and init container can never disagree on versions. See docs/install.md.
#
#   make images                        # builds docker.io/remora/remora:<version>
#   docker build --build-arg VERSION=0.1.0 -t remora:dev .
#
# Builds with Docker's legacy builder too (no BuildKit-only syntax).
ARG BASE_IMAGE=debian:bookworm-slim

# --- python: Debian's Python 3.11, the base of the build stages ---------------------------
FROM ${BASE_IMAGE} AS python
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# --- deps: a virtualenv with exactly the locked dependencies --------------------------------
# `make images` prepares build/: requirements.txt (`uv export --frozen --no-dev` of uv.lock)
# and wheels/ (those exact versions, hash-checked on download). The install uses no index:
# the image holds what the lock says and nothing else. This stage, and the image layer it
# becomes, change only when uv.lock does: a new Remora build ships as a layer of ~2 MB.
FROM python AS deps
COPY build/requirements.txt /tmp/requirements.txt
COPY build/wheels /tmp/wheels
RUN python3 -m venv /opt/remora \
 && /opt/remora/bin/pip install --no-index --no-deps --find-links /tmp/wheels \
      -r /tmp/requirements.txt \
 && /opt/remora/bin/pip uninstall -y -q pip setuptools \
 && find /opt/remora -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/remora/bin/python3 -m compileall -q -j 0 /opt/remora/lib

# --- app: Remora's own wheel, laid out to be copied into that virtualenv ---------------------
FROM python AS app
COPY build/remora-wheel /tmp/remora-wheel
ARG SITE=/opt/remora/lib/python3.11/site-packages
RUN python3 -m venv /tmp/tools \
 && /tmp/tools/bin/pip install --no-index --no-deps --target /opt/app/lib /tmp/remora-wheel/*.whl \
 && mv /opt/app/lib/bin /opt/app/bin \
 && sed -i '1s|^#!.*|#!/opt/remora/bin/python3|' /opt/app/bin/remora \
 && python3 -m compileall -q -s /opt/app/lib -p "$SITE" /opt/app/lib

# --- runtime ------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
# iptables brings both backends (iptables-legacy and iptables-nft) and the libip4tc/libxtables
# that python-iptables loads; the init container picks the backend the node uses. iproute2
# is `ip`, which iptables does not pull in: the init container adds ::6 to lo for every pod
# with IPv6 rules, and TPROXY's policy routing (ip rule/ip route) with it.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 iptables iproute2 ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /usr/share/doc/* \
      /usr/share/man/* \
 && groupadd --system --gid 1337 istio-proxy \
 && useradd --system --uid 1337 --gid 1337 --home-dir /var/lib/istio --create-home \
      --shell /usr/sbin/nologin istio-proxy \
 && mkdir -p /etc/istio/proxy /var/run/secrets/istio \
 && chown -R 1337:1337 /etc/istio/proxy /var/run/secrets/istio
COPY --from=deps /opt/remora /opt/remora
COPY --from=app /opt/app/lib /opt/remora/lib/python3.11/site-packages/
COPY --from=app /opt/app/bin/remora /opt/remora/bin/remora
ENV PATH=/opt/remora/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The sidecar's uid: its own traffic is exempt from capture. The init container overrides
# this with runAsUser: 0 and only NET_ADMIN + NET_RAW (the injector renders that).
USER 1337:1337
WORKDIR /var/lib/istio
ENTRYPOINT ["remora"]
CMD ["--help"]
# Last, so that a new revision or date does not invalidate the cached layers above.
ARG VERSION=0.0.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG LOCK_SHA256=unknown
LABEL org.opencontainers.image.title="remora" \
      org.opencontainers.image.description="Remora: Istio-compatible sidecar mesh (control plane, injector, sidecar agent with Envoy, capture init)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.remora.version="${VERSION}" \
      io.remora.uv-lock-sha256="${LOCK_SHA256}"
