"""Credential lifecycle on `/v2`, forged tokens, and brute-force protection."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from dproxy_shared.jwt_tokens import SigningKey
from tests.conftest import GROUP, USER, DproxyFactory
from tests.support import UpstreamRegistry
from tests.support.dproxy import DproxyServer

pytestmark = pytest.mark.e2e

# The core suite runs on the embedded default and on the split production topology.
TOPOLOGIES = ("embedded", "split")

REPOSITORY = f"{GROUP}/dependency_proxy/containers/alpine"
SCOPE = f"repository:{REPOSITORY}:pull"


def manifest(dproxy: DproxyServer, token: str) -> httpx.Response:
    return httpx.get(
        f"{dproxy.url}/v2/{REPOSITORY}/manifests/latest",
        headers={"Authorization": f"Bearer {token}"},
    )


def test_a_revoked_token_stops_working_on_v2_within_10_seconds(dproxy: DproxyServer) -> None:
    created = dproxy.api(
        "POST",
        f"/users/{dproxy.user_ids[USER[0]]}/personal_access_tokens",
        {"name": "ci", "scopes": ["read_registry"]},
    )
    assert isinstance(created, dict)
    jwt_token = dproxy.registry_token("alice", created["token"], SCOPE)
    assert manifest(dproxy, jwt_token).status_code == 200
    dproxy.cli("tokens", "revoke", "--id", str(created["id"]))
    revoked_at = time.monotonic()
    while (response := manifest(dproxy, jwt_token)).status_code == 200:
        assert time.monotonic() - revoked_at < 10, "revoked token still accepted after 10 s"
        time.sleep(0.25)
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # And no new registry token can be had with it.
    with pytest.raises(httpx.HTTPStatusError):
        httpx.get(
            dproxy.token_url,
            params={"service": "dependency_proxy", "scope": SCOPE},
            auth=("alice", created["token"]),
        ).raise_for_status()


def _segment(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "dproxy",
        "aud": "dependency_proxy",
        "sub": "user:2",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "forged",
        "access": [{"type": "repository", "name": REPOSITORY, "actions": ["pull"]}],
    }
    claims.update(overrides)
    return claims


def forged_tokens(dproxy: DproxyServer) -> dict[str, str]:
    """Tokens an attacker might try, and some the auth service itself would never issue."""
    key_file = dproxy.data_dir / "jwt-signing-key.pem"
    kid = SigningKey.load_or_create(key_file).kid
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def es256(claims: dict[str, object], key_id: str = kid) -> str:
        return jwt.encode(claims, private, algorithm="ES256", headers={"kid": key_id})  # type: ignore[arg-type]

    header, payload, signature = dproxy.registry_token(*USER, SCOPE).split(".")
    widened = json.loads(base64.urlsafe_b64decode(payload + "=="))
    widened["access"][0]["actions"] = ["pull", "push"]
    widened["sub"] = "user:1"
    now = int(time.time())
    unsigned_header = _segment({"alg": "none", "typ": "JWT", "kid": kid})
    return {
        "alg none": f"{unsigned_header}.{_segment(_claims())}.",
        "HS256 keyed with the public key": _hs256(_claims(), public_pem, kid),
        "unknown kid": es256(_claims(), key_id="nope"),
        "expired": es256(_claims(iat=now - 900, nbf=now - 900, exp=now - 120)),
        "not yet valid": es256(_claims(nbf=now + 600, exp=now + 1200)),
        "other audience": es256(_claims(aud="container_registry")),
        "modified access claim": f"{header}.{_segment(widened)}.{signature}",
    }


def _hs256(claims: dict[str, object], secret: bytes, kid: str) -> str:
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_segment(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_forged_and_invalid_tokens_get_401(module_dproxy: DproxyServer) -> None:
    for name, token in forged_tokens(module_dproxy).items():
        response = manifest(module_dproxy, token)
        assert response.status_code == 401, name
        assert response.json()["errors"][0]["code"] == "UNAUTHORIZED", name
        assert response.headers["www-authenticate"].startswith("Bearer realm="), name


@pytest.fixture
def strict_dproxy(
    tmp_path: Path, upstream: UpstreamRegistry, dproxy_factory: DproxyFactory
) -> Iterator[DproxyServer]:
    server = dproxy_factory(
        tmp_path / "dproxy",
        upstream.url,
        env={"DPROXY_AUTH_FAILURE_LIMIT": "3", "DPROXY_AUTH_BAN_SECONDS": "3"},
    )
    yield server
    server.stop()


def test_repeated_failures_ban_the_address_for_a_while(strict_dproxy: DproxyServer) -> None:
    def login(password: str) -> httpx.Response:
        return httpx.get(
            strict_dproxy.token_url,
            params={"service": "dependency_proxy", "scope": SCOPE},
            auth=(USER[0], password),
        )

    assert login(USER[1]).status_code == 200
    for _ in range(3):
        assert login("wrong").status_code == 401
    banned = login(USER[1])
    assert banned.status_code == 429
    assert 1 <= int(banned.headers["retry-after"]) <= 3
    # The API is closed to the address too, even with a valid token.
    api = httpx.get(
        f"{strict_dproxy.api_url}/user", headers={"PRIVATE-TOKEN": strict_dproxy.root_token}
    )
    assert api.status_code == 429 and "message" in api.json()
    time.sleep(int(banned.headers["retry-after"]) + 0.5)
    assert login(USER[1]).status_code == 200
