"""The emulation's AWS API over HTTP: moto's server application on 127.0.0.1, sharing its backends.

moto's server dispatches every request to the same process-wide backends ``mock_aws`` uses, so a
stack deployed by `sandbox.harness.LocalCloud` is what an outside client (the AWS CLI, boto3 in
another process) sees, and an object it puts fires the emulated S3 → EventBridge → SQS → Lambda
chain exactly like an in-process PutObject. moto's ``ThreadedMotoServer`` binds inside its thread
and waits forever when the port is taken; `EndpointServer` binds first, so a busy port is a clear
error before anything is deployed.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Any

#: Loopback only: the emulation has no authentication (IAM is not enforced).
HOST = "127.0.0.1"


class PortInUseError(OSError):
    """The requested port cannot be bound (another process listens there)."""


def check_port(port: int, host: str = HOST) -> None:
    """Raise `PortInUseError` when ``host:port`` cannot be bound now (checked before a slow deploy)."""
    if not 0 < port < 65536:
        raise PortInUseError(f"port {port} is not within 1-65535")
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As the server will: connections of an earlier server in TIME_WAIT do not make the port busy.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((host, port))
    except OSError as exc:
        raise PortInUseError(_busy_message(host, port, exc)) from None
    finally:
        probe.close()


def _busy_message(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is already in use; stop what listens there or pick another --port"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


class EndpointServer:
    """moto's WSGI dispatcher served on ``HOST:port`` by a background thread (one thread per request)."""

    def __init__(self, port: int, host: str = HOST) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        # werkzeug logs every request to stderr at INFO; the endpoint should be as quiet as AWS.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        app = DomainDispatcherApplication(create_backend_app)
        try:
            self._server: Any = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
        except OSError as exc:
            raise PortInUseError(_busy_message(host, port, exc)) from None
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="labelloop-endpoint", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting requests (requests being answered finish on their own threads); close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=timeout)
            self._thread = None
        self._server.server_close()
