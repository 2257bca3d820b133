"""Registry JWTs: what the auth service issues verifies everywhere; nothing forged does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dproxy_shared.jwt_tokens import (
    AUDIENCE,
    LEEWAY_SECONDS,
    InvalidToken,
    KeySet,
    LocalKeySet,
    SigningKey,
)
from dproxy_shared.oci.reference import Scope

ISSUER = "dproxy-auth"
REPO = "grp/dependency_proxy/containers/alpine"
OTHER = "grp/dependency_proxy/containers/x"
SECRET = "othergroup/dependency_proxy/containers/secret"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "signing.pem"


@pytest.fixture
def signing_key(key_path: Path) -> SigningKey:
    return SigningKey.load_or_create(key_path)


@pytest.fixture
def keyset(signing_key: SigningKey) -> KeySet:
    return KeySet(signing_key.jwks())


@pytest.fixture
def private_key(key_path: Path, signing_key: SigningKey) -> ec.EllipticCurvePrivateKey:
    """The very key the SigningKey uses, read from its file (to mint tokens with odd claims)."""
    del signing_key
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user:12",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "access": [{"type": "repository", "name": REPO, "actions": ["pull"]}],
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def mint(key: ec.EllipticCurvePrivateKey, kid: str, payload: dict[str, Any]) -> str:
    return jwt.encode(payload, key, algorithm="ES256", headers={"kid": kid})


# ---- the happy path ------------------------------------------------------------------------
def test_issue_and_verify_round_trip(signing_key: SigningKey, keyset: KeySet) -> None:
    before = int(time.time())
    token, issued_at = signing_key.issue(
        issuer=ISSUER,
        subject="user:12",
        access=[
            Scope(REPO, ("pull",)),
            Scope(OTHER, ("pull", "push")),
        ],
        lifetime_seconds=900,
    )
    verified = keyset.verify(token, issuer=ISSUER)

    assert before <= issued_at <= int(time.time())
    assert verified.subject == "user:12"
    assert verified.access == (
        Scope(REPO, ("pull",)),
        Scope(OTHER, ("pull", "push")),
    )
    assert verified.expires_at == issued_at + 900
    assert len(verified.token_id) >= 16
    assert verified.allows(REPO, "pull")
    assert not verified.allows(REPO, "push")
    assert not verified.allows("grp/dependency_proxy/containers/other", "pull")

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == signing_key.kid


def test_each_token_has_its_own_id(signing_key: SigningKey, keyset: KeySet) -> None:
    ids = {
        keyset.verify(
            signing_key.issue(issuer=ISSUER, subject="s", access=[], lifetime_seconds=60)[0],
            issuer=ISSUER,
        ).token_id
        for _ in range(5)
    }
    assert len(ids) == 5


async def test_local_key_set_verifies_this_process_tokens(signing_key: SigningKey) -> None:
    token, _ = signing_key.issue(
        issuer=ISSUER, subject="deploy_token:3", access=[], lifetime_seconds=60
    )
    verified = await LocalKeySet(signing_key).verify(token, issuer=ISSUER)
    assert verified.subject == "deploy_token:3"
    assert verified.access == ()


def test_jwks_publishes_only_the_public_key(signing_key: SigningKey) -> None:
    (jwk,) = signing_key.jwks()["keys"]
    assert jwk["kid"] == signing_key.kid
    assert {"kty", "crv", "x", "y"} <= jwk.keys()
    assert "d" not in jwk


def test_expiry_within_the_leeway_is_tolerated(
    private_key: ec.EllipticCurvePrivateKey, signing_key: SigningKey, keyset: KeySet
) -> None:
    now = int(time.time())
    token = mint(private_key, signing_key.kid, claims(iat=now - 600, nbf=now - 600, exp=now - 30))
    assert keyset.verify(token, issuer=ISSUER).subject == "user:12"


# ---- forgeries and stale tokens ------------------------------------------------------------
def test_alg_none_is_refused(signing_key: SigningKey, keyset: KeySet) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": signing_key.kid}
    token = f"{b64url_json(header)}.{b64url_json(claims())}."
    with pytest.raises(InvalidToken):
        keyset.verify(token, issuer=ISSUER)


def test_hs256_with_the_public_key_as_secret_is_refused(
    signing_key: SigningKey, keyset: KeySet, private_key: ec.EllipticCurvePrivateKey
) -> None:
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": signing_key.kid}
    signing_input = f"{b64url_json(header)}.{b64url_json(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidToken):
        keyset.verify(f"{signing_input}.{b64url(mac)}", issuer=ISSUER)


def test_unknown_kid_is_refused(keyset: KeySet) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    stranger_kid = SigningKey(stranger).kid
    with pytest.raises(InvalidToken):
        keyset.verify(mint(stranger, stranger_kid, claims()), issuer=ISSUER)


def test_other_key_claiming_our_kid_is_refused(signing_key: SigningKey, keyset: KeySet) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidToken):
        keyset.verify(mint(stranger, signing_key.kid, claims()), issuer=ISSUER)


def mint_with_header(key: ec.EllipticCurvePrivateKey, header: dict[str, Any]) -> str:
    """ES256-signed by `key`, with a header PyJWT itself would refuse to write."""
    signing_input = f"{b64url_json({'alg': 'ES256', **header})}.{b64url_json(claims())}"
    es256 = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
    return f"{signing_input}.{b64url(es256.sign(signing_input.encode(), key))}"


def test_our_own_header_crafting_verifies(
    private_key: ec.EllipticCurvePrivateKey, signing_key: SigningKey, keyset: KeySet
) -> None:
    token = mint_with_header(private_key, {"kid": signing_key.kid})
    assert keyset.verify(token, issuer=ISSUER).subject == "user:12"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({}, id="no-kid"),
        pytest.param({"kid": ""}, id="empty-kid"),
        pytest.param({"kid": ["a", "b"]}, id="list-kid"),
        pytest.param({"kid": 7}, id="int-kid"),
        pytest.param({"kid": {"k": "v"}}, id="object-kid"),
    ],
)
def test_missing_or_odd_kid_is_refused(
    private_key: ec.EllipticCurvePrivateKey, keyset: KeySet, header: dict[str, Any]
) -> None:
    with pytest.raises(InvalidToken):
        keyset.verify(mint_with_header(private_key, header), issuer=ISSUER)


Overrides = Callable[[int], dict[str, Any]]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(
            lambda now: {"iat": now - 900, "nbf": now - 900, "exp": now - LEEWAY_SECONDS - 30},
            id="expired-beyond-leeway",
        ),
        pytest.param(lambda now: {"nbf": now + LEEWAY_SECONDS + 120}, id="not-yet-valid"),
        pytest.param(lambda now: {"aud": "registry.docker.io"}, id="wrong-audience"),
        pytest.param(lambda now: {"aud": None}, id="no-audience"),
        pytest.param(lambda now: {"iss": "someone-else"}, id="wrong-issuer"),
        pytest.param(lambda now: {"exp": None}, id="no-exp"),
        pytest.param(lambda now: {"jti": None}, id="no-jti"),
        pytest.param(lambda now: {"sub": None}, id="no-sub"),
        pytest.param(lambda now: {"nbf": None}, id="no-nbf"),
    ],
)
def test_bad_claims_are_refused(
    private_key: ec.EllipticCurvePrivateKey,
    signing_key: SigningKey,
    keyset: KeySet,
    overrides: Overrides,
) -> None:
    # The control: the same key and claims without the override verify.
    assert keyset.verify(mint(private_key, signing_key.kid, claims()), issuer=ISSUER)
    token = mint(private_key, signing_key.kid, claims(**overrides(int(time.time()))))
    with pytest.raises(InvalidToken):
        keyset.verify(token, issuer=ISSUER)


def test_edited_access_claim_breaks_the_signature(signing_key: SigningKey, keyset: KeySet) -> None:
    token, _ = signing_key.issue(
        issuer=ISSUER, subject="user:12", access=[Scope(REPO, ("pull",))], lifetime_seconds=300
    )
    assert keyset.verify(token, issuer=ISSUER).allows(REPO, "pull")
    header, payload, signature = token.split(".")
    body = json.loads(unb64url(payload))
    body["access"] = [
        {
            "type": "repository",
            "name": "othergroup/dependency_proxy/containers/secret",
            "actions": ["pull"],
        }
    ]
    forged = f"{header}.{b64url_json(body)}.{signature}"
    with pytest.raises(InvalidToken):
        keyset.verify(forged, issuer=ISSUER)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "....", "eyJhbGciOiJFUzI1NiJ9.."])
def test_garbage_is_refused(keyset: KeySet, token: str) -> None:
    with pytest.raises(InvalidToken):
        keyset.verify(token, issuer=ISSUER)


# ---- the key file --------------------------------------------------------------------------
def test_key_file_is_private_and_stable(key_path: Path) -> None:
    first = SigningKey.load_or_create(key_path)
    assert key_path.exists()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    pem = key_path.read_bytes()
    second = SigningKey.load_or_create(key_path)
    assert second.kid == first.kid
    assert key_path.read_bytes() == pem, "an existing key is never replaced"

    # A token from before a restart still verifies after it.
    token, _ = first.issue(issuer=ISSUER, subject="user:1", access=[], lifetime_seconds=60)
    assert KeySet(second.jwks()).verify(token, issuer=ISSUER).subject == "user:1"


def test_different_key_files_give_different_kids(tmp_path: Path) -> None:
    one = SigningKey.load_or_create(tmp_path / "one.pem")
    two = SigningKey.load_or_create(tmp_path / "two.pem")
    assert one.kid != two.kid
    token, _ = one.issue(issuer=ISSUER, subject="user:1", access=[], lifetime_seconds=60)
    with pytest.raises(InvalidToken):
        KeySet(two.jwks()).verify(token, issuer=ISSUER)
