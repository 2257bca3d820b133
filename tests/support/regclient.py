"""A small synchronous Docker Registry HTTP API v2 client (stdlib only).

Used to seed upstream registries byte-exactly and to poke at registries (or the proxy)
directly from tests.  It speaks plain HTTP only, answers Bearer challenges the way
docker/skopeo do (GET realm?service=&scope= with optional Basic credentials) and caches
one token per scope.  It is deliberately independent of the product code under test.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from tests.support.images import ALL_MANIFEST_TYPES, Blob, Image

_BLOCK = 1024 * 1024
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(RuntimeError):
    def __init__(self, method: str, url: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {url} -> {status}: {body[:300]!r}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # lower-cased names
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> object:
        return json.loads(self.body)


def parse_bearer_challenge(value: str) -> dict[str, str] | None:
    """`Bearer realm="..",service="..",scope=".."` -> dict, or None if not a Bearer challenge."""
    scheme, _, params = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return dict(_CHALLENGE_PARAM.findall(params))


def basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class RegistryClient:
    """Talks to `base_url` (e.g. http://127.0.0.1:5000).  `credentials` are only sent to the
    token realm, never to the registry itself (like Docker Hub clients)."""

    def __init__(
        self, base_url: str, credentials: tuple[str, str] | None = None, timeout: float = 60.0
    ) -> None:
        u = urllib.parse.urlsplit(base_url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"plain http URL expected, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.host = u.hostname
        self.port = u.port or 80
        self.credentials = credentials
        self.timeout = timeout
        self._tokens: dict[str, str] = {}  # scope -> token

    # ---- low level ---------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | BinaryIO | None = None,
        *,
        scope: str | None = None,
        check: bool = False,
    ) -> Response:
        """One request, plus one retry after a Bearer challenge.  `path` may be an absolute
        URL on the same host (upload Locations are).  A file body must be seekable."""
        hdrs = dict(headers or {})
        token = self._tokens.get(scope or "")
        start = body.tell() if body is not None and not isinstance(body, bytes) else 0
        resp = self._send(method, path, hdrs, body, token)
        if resp.status == 401:
            challenge = parse_bearer_challenge(resp.header("www-authenticate"))
            if challenge and "realm" in challenge:
                token = self.fetch_token(challenge)
                self._tokens[challenge.get("scope", scope or "")] = token
                if scope is not None:
                    self._tokens[scope] = token
                if body is not None and not isinstance(body, bytes):
                    body.seek(start)
                resp = self._send(method, path, hdrs, body, token)
        if check and resp.status >= 300:
            raise RegistryError(method, path, resp.status, resp.body)
        return resp

    def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | BinaryIO | None,
        token: str | None,
    ) -> Response:
        u = urllib.parse.urlsplit(path)
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        hdrs = dict(headers)
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        if body is None and method in ("PUT", "POST", "PATCH"):
            hdrs.setdefault("Content-Length", "0")
        # blocksize: http.client streams file bodies in blocks of this size (default 8 KiB)
        # An absolute URL (upload Location, blob redirect) may name another host.
        host, port = (u.hostname, u.port or 80) if u.hostname else (self.host, self.port)
        conn = http.client.HTTPConnection(host, port, timeout=self.timeout, blocksize=_BLOCK)
        try:
            conn.request(method, target, body=body, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            conn.close()

    def fetch_token(self, challenge: Mapping[str, str]) -> str:
        """The token dance: GET realm?service=..&scope=.. (Basic auth if we have credentials)."""
        query = {k: v for k, v in challenge.items() if k in ("service", "scope")}
        url = challenge["realm"] + ("?" + urllib.parse.urlencode(query) if query else "")
        u = urllib.parse.urlsplit(url)
        headers = {}
        if self.credentials:
            headers["Authorization"] = basic_auth_header(*self.credentials)
        conn = http.client.HTTPConnection(u.hostname or "", u.port or 80, timeout=self.timeout)
        try:
            conn.request("GET", f"{u.path}?{u.query}", headers=headers)
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        if r.status != 200:
            raise RegistryError("GET", url, r.status, data)
        doc = json.loads(data)
        return str(doc.get("token") or doc["access_token"])

    # ---- reads -------------------------------------------------------------------------
    def get_manifest(
        self, repository: str, reference: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES
    ) -> Response:
        return self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            {"Accept": ", ".join(accept)},
            scope=f"repository:{repository}:pull",
        )

    def head_manifest(
        self, repository: str, reference: str, accept: tuple[str, ...] = ALL_MANIFEST_TYPES
    ) -> Response:
        return self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            {"Accept": ", ".join(accept)},
            scope=f"repository:{repository}:pull",
        )

    def get_blob(self, repository: str, digest: str) -> Response:
        """Whole blob in memory: use on small blobs only.  Follows one redirect."""
        r = self.request(
            "GET", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull"
        )
        if r.status in (301, 302, 307, 308) and r.header("location"):
            r = self.request("GET", r.header("location"))
        return r

    def blob_exists(self, repository: str, digest: str) -> bool:
        r = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull"
        )
        return r.status == 200

    # ---- writes ------------------------------------------------------------------------
    def push_blob(self, repository: str, blob: Blob) -> None:
        """Monolithic upload: POST to open a session, PUT ?digest= with the file streamed."""
        scope = f"repository:{repository}:pull,push"
        if self.blob_exists(repository, blob.digest):
            return
        r = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, check=True)
        location = r.header("location")
        if not location:
            raise RegistryError("POST", repository, r.status, b"upload without Location")
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}digest={urllib.parse.quote(blob.digest)}"
        with blob.open() as fh:
            self.request(
                "PUT",
                url,
                {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
                fh,
                scope=scope,
                check=True,
            )

    def push_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT the exact bytes; returns the Docker-Content-Digest the registry computed."""
        r = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            {"Content-Type": media_type},
            data,
            scope=f"repository:{repository}:pull,push",
            check=True,
        )
        return r.header("docker-content-digest")

    def push_image(self, image: Image, repository: str, tag: str | None = None) -> None:
        """Blobs, then child manifests by digest, then the top manifest by tag (or digest)."""
        for blob in image.blobs:
            self.push_blob(repository, blob)
        for child in image.children:
            got = self.push_manifest(repository, child.digest, child.manifest, child.media_type)
            _check_digest(got, child.digest)
        got = self.push_manifest(repository, tag or image.digest, image.manifest, image.media_type)
        _check_digest(got, image.digest)

    def delete_manifest(self, repository: str, digest: str) -> None:
        self.request(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            scope=f"repository:{repository}:delete",
            check=True,
        )


def _check_digest(got: str, want: str) -> None:
    if got and got != want:
        raise AssertionError(f"registry computed digest {got}, expected {want}")
