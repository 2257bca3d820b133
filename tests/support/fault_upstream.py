"""A fault-injecting HTTP proxy in front of the real upstream registry (one per test).

    fault = FaultUpstream(upstream.url).start()
    fault.inject("status", status=429, headers={"Retry-After": "7"}, match="/manifests/")
    fault.ratelimit = {"ratelimit-remaining": "5;w=60"}   # added to every answer
    ...
    fault.count("GET", "/manifests/")                     # requests that reached the proxy

Faults (each for requests whose method is in `methods` and whose path contains `match`, the
first `times` of them, or all when `times` is None):
    status      answer `status` with `headers` and a registry error body, upstream not asked
    delay       wait `delay` seconds, then proxy (beyond dproxy's read timeout: a timeout)
    reset       send the headers and half the body, then reset the connection
    drip        send the body in `chunk`-byte pieces, `delay` seconds apart
    corrupt     send the body with one byte flipped (same length: only the digest tells)
    missing401  answer Docker Hub's 401 where upstream says 404
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

FaultKind = Literal["status", "delay", "reset", "drip", "corrupt", "missing401"]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


@dataclass
class Fault:
    kind: FaultKind
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunk: int = 1024
    match: str = ""
    methods: tuple[str, ...] = ("GET", "HEAD")
    times: int | None = None

    def applies(self, method: str, path: str) -> bool:
        return method in self.methods and self.match in path and self.times != 0


class FaultUpstream:
    def __init__(self, upstream_url: str) -> None:
        target = urlsplit(upstream_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 80)
        self.faults: list[Fault] = []
        self.ratelimit: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._stopped = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FaultUpstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, and reset the connections clients keep alive."""
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()

    def inject(self, kind: FaultKind, **options: object) -> Fault:
        fault = Fault(kind, **options)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def count(self, method: str, match: str = "") -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if m == method and match in p)

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for fault in self.faults:
                if fault.applies(method, path):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_HEAD(self) -> None:
                self._handle()

            def _handle(self) -> None:
                try:
                    proxy._serve(self)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        return Handler

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        if self._stopped:
            _reset(handler)
            return
        fault = self._take(method, path)
        if fault is not None and fault.kind == "status":
            body = json.dumps(
                {"errors": [{"code": "FAULT", "message": f"injected {fault.status}"}]}
            ).encode()
            self._reply(handler, fault.status, fault.headers, body, head=method == "HEAD")
            return
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay)
        status, headers, body = self._forward(handler)
        if fault is not None and fault.kind == "missing401" and status == 404:
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED"}]}).encode()
            self._reply(handler, 401, {}, body, head=method == "HEAD")
            return
        if fault is not None and fault.kind == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if fault is not None and fault.kind == "reset" and body and method == "GET":
            self._reply(handler, status, headers, body[: len(body) // 2], length=len(body))
            _reset(handler)
            return
        if fault is not None and fault.kind == "drip" and method == "GET":
            self._reply(handler, status, headers, b"", length=len(body))
            for start in range(0, len(body), fault.chunk):
                handler.wfile.write(body[start : start + fault.chunk])
                handler.wfile.flush()
                time.sleep(fault.delay)
            return
        self._reply(handler, status, headers, body, head=method == "HEAD")

    def _forward(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection(*self._target, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(handler.command, handler.path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            out = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
            if handler.command == "HEAD" and response.getheader("content-length"):
                out["Content-Length"] = response.getheader("content-length", "0")
            return response.status, out, body
        finally:
            connection.close()

    def _reply(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        body: bytes,
        *,
        head: bool = False,
        length: int | None = None,
    ) -> None:
        handler.send_response(status)
        all_headers = {**headers, **self.ratelimit}
        if "Content-Length" not in all_headers or not head:
            all_headers["Content-Length"] = str(len(body) if length is None else length)
        for name, value in all_headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if not head and body:
            handler.wfile.write(body)
        handler.wfile.flush()


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dying peer does."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True
