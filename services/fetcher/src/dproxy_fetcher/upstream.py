"""A client for Docker Hub and any OCI distribution registry.

- Bearer token auth discovered from `WWW-Authenticate`, tokens cached per (credentials, scope)
  until `issued_at + expires_in - 30 s`, so a cache hit never costs a token request.
- Redirects (Docker Hub sends blobs to a CDN) are followed without the `Authorization` header.
- Every failure is classified (`UpstreamError.kind`) so callers can decide to serve stale.
- A circuit breaker per host stops calling an upstream that keeps failing (`breaker.py`), and
  the rate-limit headers of every answer are recorded (`dproxy_shared.ratelimit`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urljoin, urlsplit

import httpx

from dproxy_fetcher.breaker import CircuitBreaker, CircuitOpen
from dproxy_shared.coordination import KeyValueCache
from dproxy_shared.metrics import UPSTREAM_REQUESTS
from dproxy_shared.ratelimit import RateLimitBudget

TOKEN_SKEW_SECONDS = 30
DEFAULT_TOKEN_LIFETIME = 60  # the token spec's default when `expires_in` is absent
MAX_REDIRECTS = 5

# `open`: the circuit breaker refused the call without contacting upstream.
FailureKind = Literal["timeout", "connect", "status", "open"]


class UpstreamError(Exception):
    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str

    @property
    def fingerprint(self) -> str:
        """Identifies the credentials in cache keys without exposing them."""
        raw = f"{self.username}\0{self.password}".encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    @property
    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return f"Basic {base64.b64encode(raw).decode()}"


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str
    realm: str
    service: str | None

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        scheme, _, rest = header.strip().partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(rest))
        if scheme.lower() == "bearer" and "realm" in params:
            return cls("bearer", params["realm"], params.get("service"))
        if scheme.lower() == "basic":
            return cls("basic", params.get("realm", ""), None)
        return None


class UpstreamClient:
    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient,
        tokens: KeyValueCache,
        credentials: Credentials | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        budget: RateLimitBudget | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc
        self.breaker = breaker
        self.budget = budget
        self._http = http
        self._tokens = tokens
        self._credentials = credentials
        # Learned from the first 401; lets later requests fetch a token up front.
        self._challenge: Challenge | None = None

    @property
    def credentials_fingerprint(self) -> str:
        return self._credentials.fingerprint if self._credentials else "anonymous"

    def with_credentials(self, credentials: Credentials) -> UpstreamClient:
        """The same upstream (connections, token cache, breaker, budget), other credentials."""
        return UpstreamClient(
            self.base_url,
            self._http,
            self._tokens,
            credentials,
            breaker=self.breaker,
            budget=self.budget,
        )

    async def send(
        self,
        method: str,
        repository: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """One request to `/v2/<repository>/<path>`, authenticated; the caller closes it.

        Returns any HTTP status; transport failures raise `UpstreamError`.
        """
        if self.breaker is not None:
            try:
                self.breaker.check()
            except CircuitOpen as exc:
                raise UpstreamError(
                    "open", str(exc), status=503, retry_after=str(max(1, round(exc.retry_after)))
                ) from exc
        url = f"{self.base_url}/v2/{repository}/{path}"
        scope = f"repository:{repository}:pull"
        auth = await self._authorization(scope)
        response = await self._send(method, url, headers, auth, stream)
        if response.status_code == 401:
            challenge = Challenge.parse(response.headers.get("www-authenticate", ""))
            # Learn the challenge (first contact) or replace a token upstream refused; once.
            if challenge is not None:
                self._challenge = challenge
                await response.aclose()
                if auth is not None:  # upstream refused our token: do not reuse it
                    await self._tokens.delete(self._token_key(scope))
                auth = await self._authorization(scope)
                response = await self._send(method, url, headers, auth, stream)
        return response

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None,
        authorization: str | None,
        stream: bool,
    ) -> httpx.Response:
        request_headers = dict(headers or {})
        if authorization:
            request_headers["Authorization"] = authorization
        for _ in range(MAX_REDIRECTS + 1):
            request = self._http.build_request(method, url, headers=request_headers)
            response = await self._request(request, stream)
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
            location = response.headers.get("location")
            await response.aclose()
            if not location:
                raise UpstreamError("status", "redirect without Location", status=502)
            url = urljoin(url, location)
            # The redirect target (a CDN, a presigned URL) must not see our registry token.
            request_headers.pop("Authorization", None)
        raise UpstreamError("status", "too many redirects", status=502)

    async def _request(self, request: httpx.Request, stream: bool) -> httpx.Response:
        host = request.url.host
        try:
            response = await self._http.send(request, stream=stream)
        except httpx.TimeoutException as exc:
            UPSTREAM_REQUESTS.labels(host, request.method, "timeout").inc()
            self._report(failed=True)
            raise UpstreamError("timeout", f"{host}: timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            UPSTREAM_REQUESTS.labels(host, request.method, "error").inc()
            self._report(failed=True)
            raise UpstreamError("connect", f"{host}: {type(exc).__name__}: {exc}") from exc
        UPSTREAM_REQUESTS.labels(host, request.method, str(response.status_code)).inc()
        self._report(failed=response.status_code >= 500)
        if self.budget is not None and request.url.netloc.decode() == self.host:
            await self.budget.record(response.status_code, response.headers)
        return response

    def _report(self, *, failed: bool) -> None:
        if self.breaker is None:
            return
        if failed:
            self.breaker.failure()
        else:
            self.breaker.success()

    async def _authorization(self, scope: str) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if self._credentials is None:
                return None
            return self._credentials.basic_header
        key = self._token_key(scope)
        cached = await self._tokens.get(key)
        if cached is not None:
            return f"Bearer {cached}"
        token, ttl = await self._fetch_token(challenge, scope)
        if ttl > 0:
            await self._tokens.set(key, token, ttl)
        return f"Bearer {token}"

    def _token_key(self, scope: str) -> str:
        return f"upstream-token:{self.host}:{self.credentials_fingerprint}:{scope}"

    async def _fetch_token(self, challenge: Challenge, scope: str) -> tuple[str, float]:
        params = {"scope": scope}
        if challenge.service:
            params["service"] = challenge.service
        request = self._http.build_request("GET", challenge.realm, params=params)
        if self._credentials is not None:
            request.headers["Authorization"] = self._credentials.basic_header
        response = await self._request(request, stream=False)
        if response.status_code != 200:
            raise UpstreamError(
                "status",
                f"token endpoint answered {response.status_code}",
                status=response.status_code,
                retry_after=response.headers.get("retry-after"),
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (json.JSONDecodeError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise UpstreamError("status", "token endpoint sent no token", status=502)
        return token, _token_ttl(body)


def _token_ttl(body: dict[str, object]) -> float:
    expires_in = body.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) else DEFAULT_TOKEN_LIFETIME
    issued_at = time.time()
    raw_issued = body.get("issued_at")
    if isinstance(raw_issued, str):
        with contextlib.suppress(ValueError):
            issued_at = datetime.fromisoformat(raw_issued.replace("Z", "+00:00")).timestamp()
    return issued_at + lifetime - TOKEN_SKEW_SECONDS - time.time()
