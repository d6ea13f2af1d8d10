"""The webhook in a background thread of this process: for tests and ``remora demo``.

The same app, TLS reload and config reload as :func:`injector.server.serve`, on a port of its
own (0: any free one), with a CA and serving certificate made for it when none is given.
"""

from __future__ import annotations

import asyncio
import base64
import tempfile
import threading
import time

from injector.config import InjectorConfig, default_config
from injector.runtime_certs import write_self_signed
from injector.server import (
    ConfigFiles,
    TlsFiles,
    WebhookState,
    bind,
    create_app,
    serve_async,
    uvicorn_server,
)
from meshlib.hostport import host_port


class WebhookServer:
    """The webhook in a background thread, e.g. for tests and the demo.

    >>> server = WebhookServer(default_config()).start()    # self-signed for 127.0.0.1
    >>> server.url, server.ca_bundle                        # https://127.0.0.1:PORT/inject, b64 CA
    >>> server.stop()

    Without ``cert_file``/``key_file`` a CA and serving certificate (SANs ``127.0.0.1`` and
    ``localhost``) are created in a temporary directory; ``ca_pem``/``ca_bundle`` then hold the
    CA. With ``config_file`` the config is read from (and reloaded with) that file instead of
    ``config``.
    """

    def __init__(
        self,
        config: InjectorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_file: str | None = None,
        key_file: str | None = None,
        config_file: str | None = None,
        mesh_config_file: str | None = None,
        reload_interval: float = 1.0,
    ) -> None:
        self.host = host
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self.ca_pem: bytes | None = None
        if cert_file is None or key_file is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="remora-webhook-")
            self_signed = write_self_signed(self._tempdir.name, (host, "localhost"))
            cert_file, key_file, self.ca_pem = (
                self_signed.cert_file,
                self_signed.key_file,
                self_signed.ca_pem,
            )
        self.cert_file, self.key_file = cert_file, key_file
        self._config_files = (
            ConfigFiles(config_file, mesh_config_file)
            if (config_file or mesh_config_file)
            else None
        )
        initial = self._config_files.config if self._config_files else (config or default_config())
        self.state = WebhookState(initial, TlsFiles(cert_file, key_file))
        self._sock = bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._server = uvicorn_server(create_app(self.state), self.state.tls)  # type: ignore[arg-type]
        self._thread: threading.Thread | None = None
        self._interval = reload_interval

    @property
    def base_url(self) -> str:
        return f"https://{host_port(self.host, self.port)}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/inject"

    @property
    def ca_bundle(self) -> str | None:
        """base64 of the CA PEM, ready for ``clientConfig.caBundle`` (self-signed only)."""
        return base64.b64encode(self.ca_pem).decode() if self.ca_pem else None

    @property
    def config(self) -> InjectorConfig:
        return self.state.config

    @config.setter
    def config(self, config: InjectorConfig) -> None:
        self.state.config = config

    def start(self, timeout: float = 10.0) -> WebhookServer:
        def run() -> None:
            asyncio.run(
                serve_async(
                    self._server, self._sock, self.state, self._config_files, self._interval
                )
            )

        self._thread = threading.Thread(target=run, name=f"webhook-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the webhook did not start on {self.base_url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._sock.close()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> WebhookServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
