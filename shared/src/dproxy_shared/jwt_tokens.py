"""Registry JWTs: issued by the auth service only, verified everywhere with public keys.

A token never carries a secret: `sub` names the actor (`user:12`, `deploy_token:3`), and
`access` lists the scopes the auth service granted at issue time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dproxy_shared.oci.reference import Scope

AUDIENCE = "dependency_proxy"
ALGORITHMS = ["ES256", "RS256"]  # never HS*: a public key must not double as an HMAC secret
LEEWAY_SECONDS = 60


class InvalidToken(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Claims:
    subject: str
    access: tuple[Scope, ...]
    expires_at: int
    token_id: str

    def allows(self, repository: str, action: str) -> bool:
        return any(
            scope.repository == repository and action in scope.actions for scope in self.access
        )


class SigningKey:
    """The auth service's EC P-256 key, kept in a PEM file (a Kubernetes Secret in production)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self._key = private_key
        self.public_jwk = _public_jwk(private_key.public_key())
        self.kid = self.public_jwk["kid"]

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # O_EXCL: when several processes start at once, one key wins and all use it.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(pem)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path}: expected an EC private key")
        return cls(key)

    def issue(
        self, *, issuer: str, subject: str, access: list[Scope], lifetime_seconds: int
    ) -> tuple[str, int]:
        """A signed token and its issue time."""
        now = int(time.time())
        payload = {
            "iss": issuer,
            "aud": AUDIENCE,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_seconds,
            "jti": uuid.uuid4().hex,
            "access": [
                {"type": "repository", "name": s.repository, "actions": list(s.actions)}
                for s in access
            ],
        }
        token = jwt.encode(payload, self._key, algorithm="ES256", headers={"kid": self.kid})
        return token, now

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def derive_secret(self, purpose: str) -> bytes:
        """A symmetric key for `purpose` (e.g. signing web session cookies), derived from the
        private key: every auth replica already shares this key, so whatever one signs with
        the derived secret the others accept, and no second secret needs distributing."""
        private = self._key.private_numbers().private_value.to_bytes(32, "big")
        return hmac.new(private, f"dproxy:{purpose}".encode(), hashlib.sha256).digest()


def _public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public_key))
    # RFC 7638 thumbprint as the key id: stable across restarts, no bookkeeping.
    members = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    digest = jwt.utils.base64url_encode(hashlib.sha256(members.encode()).digest()).decode()
    return {**jwk, "kid": digest, "use": "sig", "alg": "ES256"}


class KeySet:
    """Public keys that verify registry JWTs, from a JWKS document."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys: dict[str, Any] = {}
        for jwk in jwks.get("keys", []):
            if "kid" in jwk:
                self._keys[jwk["kid"]] = jwt.PyJWK.from_dict(jwk).key

    def verify(self, token: str, *, issuer: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(header.get("kid", ""))
            if key is None:
                raise InvalidToken("unknown signing key")
            payload = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=AUDIENCE,
                issuer=issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "nbf", "sub", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from exc
        return Claims(
            subject=str(payload["sub"]),
            access=_parse_access(payload.get("access")),
            expires_at=int(payload["exp"]),
            token_id=str(payload["jti"]),
        )


def _parse_access(raw: Any) -> tuple[Scope, ...]:
    scopes: list[Scope] = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and item.get("type") == "repository":
            actions = item.get("actions")
            if isinstance(item.get("name"), str) and isinstance(actions, list):
                scopes.append(Scope(item["name"], tuple(str(a) for a in actions)))
    return tuple(scopes)


class RemoteKeySet:
    """Split mode: the JWKS of the auth service, fetched over HTTP and refreshed on an unknown
    `kid` (at most every few seconds, so a flood of bad tokens cannot hammer the auth service)."""

    def __init__(self, jwks_url: str, client: httpx.AsyncClient, min_refresh: float = 5.0) -> None:
        self._url = jwks_url
        self._client = client
        self._keys = KeySet({"keys": []})
        self._fetched_at = 0.0
        self._min_refresh = min_refresh
        self._lock = asyncio.Lock()

    async def verify(self, token: str, *, issuer: str) -> Claims:
        try:
            return self._keys.verify(token, issuer=issuer)
        except InvalidToken:
            if time.monotonic() - self._fetched_at < self._min_refresh:
                raise
        async with self._lock:
            if time.monotonic() - self._fetched_at >= self._min_refresh:
                response = await self._client.get(self._url)
                response.raise_for_status()
                self._keys = KeySet(response.json())
                self._fetched_at = time.monotonic()
        return self._keys.verify(token, issuer=issuer)


class LocalKeySet:
    """Embedded default: verify with the signing key of this very process."""

    def __init__(self, signing_key: SigningKey) -> None:
        self._keys = KeySet(signing_key.jwks())

    async def verify(self, token: str, *, issuer: str) -> Claims:
        return self._keys.verify(token, issuer=issuer)
