"""A stand-in for auth.docker.io: a Docker registry v2 bearer-token server.

Runs a stdlib ThreadingHTTPServer in a daemon thread, so it never blocks the tests' asyncio
event loop (requests are served on their own threads).

  GET  /token?service=S&scope=repository:library/x:pull[&scope=...]   (Basic auth optional)
  POST /token   OAuth2 form (grant_type=password|refresh_token), which containerd uses
  GET  /healthz

Tokens are RS256 JWTs that distribution 2.8 accepts: it verifies the signature with the
key from the `x5c` certificate chain (which must chain to `auth.token.rootcertbundle`), or,
without x5c, looks the libtrust key id in `kid` up among the bundle's public keys.  It then
checks `iss` == issuer, `aud` == service (a plain string: 2.8 does not take a list), and
exp/nbf, and reads the granted actions from the `access` claim.

Policy (Docker Hub-like): anonymous callers may pull every repository outside the private
namespaces; a user may pull and push in the namespace named after them; admins may do
anything.  Actions that are not granted are left out of `access`, and the registry then
answers 401/403, just like Docker Hub.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

SignMode = Literal["x5c", "kid", "both"]
DEFAULT_USERS: Mapping[str, str] = {"alice": "alice-secret", "admin": "admin-secret"}


@dataclass
class TokenStats:
    tokens_issued: int = 0
    anonymous: int = 0
    authenticated: int = 0
    auth_failures: int = 0  # bad Basic credentials / bad refresh tokens
    injected_failures: int = 0  # answered with `fail_with`
    by_scope: dict[str, int] = field(default_factory=dict)  # "repository:x:pull" -> count
    by_user: dict[str, int] = field(default_factory=dict)  # "" for anonymous


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """docker/libtrust key id: base32 of the first 240 bits of sha256(DER SPKI), in groups
    of 4 separated by ':'.  distribution 2.8 indexes the rootcertbundle keys by this."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """`repository:library/x:pull,push` -> ("repository", "library/x", ["pull", "push"]).
    Names may hold a ':' (host:port/name), so split on the first and the last colon."""
    if scope.count(":") < 2:
        return None
    kind, rest = scope.split(":", 1)
    name, actions = rest.rsplit(":", 1)
    kind = kind.split("(", 1)[0]  # "repository(plugin)" -> "repository"
    return kind, name, [a for a in actions.split(",") if a]


def _self_signed(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        # CA so that Go's x509 accepts it as the root of the x5c chain it verifies
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


class TokenServer:
    """Bearer-token server on 127.0.0.1.  Use as a context manager or start()/stop()."""

    def __init__(
        self,
        workdir: Path | str,
        *,
        service: str = "registry.docker.io",
        issuer: str = "dproxy-test-token-issuer",
        users: Mapping[str, str] = DEFAULT_USERS,
        admins: Iterable[str] = ("admin",),
        private_namespaces: Iterable[str] = ("alice",),
        expires_in: int = 300,
        sign_mode: SignMode = "both",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.service = service
        self.issuer = issuer
        self.users = dict(users)
        self.admins = set(admins)
        self.private_namespaces = set(private_namespaces)
        self.expires_in = expires_in
        self.sign_mode: SignMode = sign_mode
        self.host = host
        self._port = port
        # Set to an HTTP status to make every /token request fail with it (an auth outage).
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        self._stats = TokenStats()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._refresh_secret = secrets.token_bytes(32)

        self.key_path = self.workdir / "token.key"
        self.cert_path = self.workdir / "token.crt"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _self_signed(self._key, issuer)
        self.key_path.write_bytes(
            self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._cert_b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.kid = libtrust_key_id(self._key.public_key())

    # ---- lifecycle ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("token server not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    def start(self) -> TokenServer:
        if self._server is not None:
            return self
        server = _Server((self.host, self._port), _Handler)
        server.owner = self
        self._server = server
        self._port = server.server_address[1]  # keep the port across stop()/start()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"token-server:{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def registry_auth_config(self) -> dict[str, Any]:
        """The `auth:` section of a distribution config that trusts this server."""
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.cert_path),
            }
        }

    # ---- counters ----------------------------------------------------------------------
    def stats(self) -> TokenStats:
        """A snapshot copy of the counters."""
        with self._lock:
            s = self._stats
            return TokenStats(
                s.tokens_issued,
                s.anonymous,
                s.authenticated,
                s.auth_failures,
                s.injected_failures,
                dict(s.by_scope),
                dict(s.by_user),
            )

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = TokenStats()

    # ---- policy and minting ------------------------------------------------------------
    def check_password(self, user: str, password: str) -> bool:
        want = self.users.get(user)
        return want is not None and hmac.compare_digest(want.encode(), password.encode())

    def grant(self, user: str | None, kind: str, name: str, actions: list[str]) -> list[str]:
        if user is not None and user in self.admins:
            return list(actions)
        if kind != "repository":
            return []  # registry:catalog:* is admin-only, as on Docker Hub
        namespace = name.split("/", 1)[0] if "/" in name else "library"
        owner = user is not None and user == namespace
        granted = []
        for action in actions:
            if owner or (action == "pull" and namespace not in self.private_namespaces):
                granted.append(action)
        return granted

    def issue(self, user: str | None, scopes: Iterable[str], service: str | None = None) -> str:
        """Mint a token (counted in stats).  Tests may call this directly."""
        access = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, actions = parsed
            access.append(
                {"type": kind, "name": name, "actions": self.grant(user, kind, name, actions)}
            )
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": service or self.service,
            "exp": now + self.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        headers: dict[str, Any] = {"typ": "JWT"}
        if self.sign_mode in ("x5c", "both"):
            headers["x5c"] = [self._cert_b64]
        if self.sign_mode in ("kid", "both"):
            headers["kid"] = self.kid
        token = jwt.encode(claims, self._key, algorithm="RS256", headers=headers)
        with self._lock:
            st = self._stats
            st.tokens_issued += 1
            if user is None:
                st.anonymous += 1
            else:
                st.authenticated += 1
            st.by_user[user or ""] = st.by_user.get(user or "", 0) + 1
            for a in access:
                k = f"{a['type']}:{a['name']}:{','.join(a['actions']) or '-'}"
                st.by_scope[k] = st.by_scope.get(k, 0) + 1
        return token

    def make_refresh_token(self, user: str) -> str:
        mac = hmac.new(self._refresh_secret, user.encode(), hashlib.sha256).hexdigest()
        return base64.urlsafe_b64encode(f"{user}:{mac}".encode()).decode()

    def check_refresh_token(self, token: str) -> str | None:
        try:
            user, _, mac = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        good = hmac.new(self._refresh_secret, user.encode(), hashlib.sha256).hexdigest()
        return user if hmac.compare_digest(good, mac) else None

    def _count(self, attr: str) -> None:
        with self._lock:
            setattr(self._stats, attr, getattr(self._stats, attr) + 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: TokenServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients expect
    server_version = "dproxy-test-token-server/1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus delayed
        # ACKs add ~40 ms to each token on a keep-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: pytest output stays readable; stats() tells what happened

    def _json(self, status: int, obj: object) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _basic(self) -> tuple[str, str] | None:
        value = self.headers.get("Authorization", "")
        if not value.lower().startswith("basic "):
            return None
        try:
            user, _, password = base64.b64decode(value[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ("", "")
        return user, password

    def _answer(
        self, user: str | None, service: str, scopes: list[str], oauth: bool, offline: bool
    ) -> None:
        ts = self.server.owner
        if service and service != ts.service:
            self._json(400, {"details": f"unknown service {service!r}"})
            return
        token = ts.issue(user, scopes, service or None)
        issued = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        doc: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": ts.expires_in,
            "issued_at": issued,
        }
        if oauth:
            doc["scope"] = " ".join(scopes)
        if offline and user:
            doc["refresh_token"] = ts.make_refresh_token(user)
        self._json(200, doc)

    def _injected_failure(self) -> bool:
        ts = self.server.owner
        status = ts.fail_with
        if status is None:
            return False
        ts._count("injected_failures")
        self._json(status, {"details": "injected failure"})
        return True

    def do_GET(self) -> None:
        u = urllib.parse.urlsplit(self.path)
        if u.path == "/healthz":
            self._json(200, {"ok": True})
            return
        if u.path != "/token":
            self._json(404, {"details": "not found"})
            return
        if self._injected_failure():
            return
        q = urllib.parse.parse_qs(u.query)
        scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
        user = None
        cred = self._basic()
        if cred is not None:
            if not self.server.owner.check_password(*cred):
                self.server.owner._count("auth_failures")
                self._json(401, {"details": "incorrect username or password"})
                return
            user = cred[0]
        offline = q.get("offline_token", [""])[0] == "true"
        self._answer(user, q.get("service", [""])[0], scopes, oauth=False, offline=offline)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        u = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if u.path != "/token":
            self._json(404, {"details": "not found"})
            return
        if self._injected_failure():
            return
        form = urllib.parse.parse_qs(raw.decode())

        def f(k: str) -> str:
            return form.get(k, [""])[0]

        ts = self.server.owner
        grant = f("grant_type")
        user: str | None
        if grant == "password":
            user = f("username")
            if not ts.check_password(user, f("password")):
                ts._count("auth_failures")
                self._json(401, {"details": "incorrect username or password"})
                return
        elif grant == "refresh_token":
            user = ts.check_refresh_token(f("refresh_token"))
            if user is None:
                ts._count("auth_failures")
                self._json(401, {"details": "invalid refresh token"})
                return
        else:
            self._json(400, {"details": f"unsupported grant_type {grant!r}"})
            return
        scopes = [s for s in f("scope").split(" ") if s]
        self._answer(user, f("service"), scopes, oauth=True, offline=f("access_type") == "offline")
