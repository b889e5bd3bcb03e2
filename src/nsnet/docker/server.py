"""The plugin's HTTP server: JSON over POST on a unix socket, as Docker's
plugin client speaks it (``/Plugin.Activate``, ``/NetworkDriver.*``,
``/IpamDriver.*``).

Errors follow libnetwork's remote protocol: a body that is not a JSON object
gets HTTP 400, an unknown method 404 (so Docker can tell "not implemented"),
both with ``{"Err": ...}``; a request that is understood but cannot be done
gets 200 with ``{"Err": ...}`` (the IPAM client reads ``Error``: both keys
are sent).  Nothing is changed in any of these cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from nsnet import Conflict

from .driver import Driver, PluginError

__all__ = ["CONTENT_TYPE", "PluginServer", "serve"]

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"  # what Docker's client accepts
MAX_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server: PluginServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        method = self.path.lstrip("/")
        status, answer = self._answer(method)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST

    def _answer(self, method: str) -> tuple[int, dict[str, Any]]:
        if method not in self.server.driver.methods():
            return 404, _err(f"unknown method {method!r}", method)
        try:
            body = self._body()
        except ValueError as exc:
            return 400, _err(str(exc), method)
        try:
            return 200, self.server.driver.handle(method, body)
        except PluginError as exc:
            self.server.log(f"{method}: {exc}")
            return 200, _err(str(exc), method)
        except Exception as exc:  # a bug must not kill the plugin Docker depends on
            self.server.log(f"{method}: internal error: {exc!r}")
            return 500, _err(f"internal error: {exc}", method)

    def _body(self) -> dict[str, Any]:
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length else 0
        except ValueError:
            raise ValueError(f"bad Content-Length {length!r}") from None
        if size > MAX_BODY:
            raise ValueError(f"request body of {size} bytes is too large")
        raw = self.rfile.read(size) if size else b""
        if not raw.strip():
            return {}  # Plugin.Activate and GetCapabilities come without a body
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"request body is not JSON: {exc}") from None
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise ValueError("request body must be a JSON object")
        return body

    def address_string(self) -> str:
        return "docker"

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("NSNET_DEBUG"):
            self.server.log(format % args)


def _err(message: str, method: str) -> dict[str, Any]:
    out: dict[str, Any] = {"Err": message}
    if method.startswith("IpamDriver."):
        out["Error"] = message
    return out


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, driver: Driver) -> None:
        self.driver = driver
        self.socket_path = path
        _remove_stale_socket(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        old = os.umask(0o077)  # root-only: whoever can talk to it can change the network
        try:
            super().__init__(path, _Handler)
        finally:
            os.umask(old)

    def log(self, message: str) -> None:
        print(f"nsnet docker-plugin: {message}", file=sys.stderr, flush=True)

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)


def _remove_stale_socket(path: str) -> None:
    """A socket left by a plugin that was killed is replaced; a live one is not."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise Conflict(f"another plugin is listening on {path}; nothing was changed")


def serve(path: str, driver: Driver, ready: threading.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT; the socket is removed on the way out."""
    for line in driver.recover():
        print(f"nsnet docker-plugin: {line}", file=sys.stderr, flush=True)
    server = PluginServer(path, driver)

    def stop(_sig: int, _frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    print(f"nsnet docker-plugin: listening on {path}", file=sys.stderr, flush=True)
    if ready:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
