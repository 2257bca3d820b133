"""The registry vocabulary: names, tags, digests, scopes, media types and error envelopes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from dproxy_shared.oci import media_types
from dproxy_shared.oci.digest import Digest
from dproxy_shared.oci.errors import ErrorCode, RegistryError, envelope
from dproxy_shared.oci.media_types import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_ARTIFACT,
    OCI_INDEX,
    OCI_MANIFEST,
)
from dproxy_shared.oci.reference import (
    ImageName,
    Reference,
    Scope,
    parse_registry_path,
)

P = "dependency_proxy/containers"
HEX256 = hashlib.sha256(b"x").hexdigest()
HEX512 = hashlib.sha512(b"x").hexdigest()
FIVE = "one/two/three/four/five"


def assert_error(call: Callable[[], object], code: ErrorCode, status: int) -> RegistryError:
    """`call()` raises a RegistryError with this code and HTTP status."""
    with pytest.raises(RegistryError) as caught:
        call()
    assert caught.value.code is code, caught.value.message
    assert caught.value.status == status
    return caught.value


# ---- image names ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "group", "image", "upstream"),
    [
        (f"grp/{P}/alpine", "grp", "alpine", "library/alpine"),
        (f"grp/{P}/bitnami/redis", "grp", "bitnami/redis", "bitnami/redis"),
        (f"grp/{P}/a/b/c", "grp", "a/b/c", "a/b/c"),
        (f"grp/{P}/a/b/c/d", "grp", "a/b/c/d", "a/b/c/d"),
        (f"grp/{P}/one/two/three/four/five", "grp", FIVE, FIVE),
        (f"MyGroup/{P}/alpine", "mygroup", "alpine", "library/alpine"),
        (f"Top/Sub.Group/my_team/{P}/alpine", "top/sub.group/my_team", "alpine", "library/alpine"),
        (f"grp-1/{P}/my-image", "grp-1", "my-image", "library/my-image"),
        (f"grp/{P}/a--b", "grp", "a--b", "library/a--b"),
        (f"grp/{P}/a.b_c__d", "grp", "a.b_c__d", "library/a.b_c__d"),
        (f"_grp/{P}/9", "_grp", "9", "library/9"),
    ],
)
def test_valid_image_names(name: str, group: str, image: str, upstream: str) -> None:
    parsed = ImageName.parse(name)
    assert parsed.group_path == group
    assert parsed.image == image
    assert parsed.upstream_repository == upstream
    assert parsed.repository == f"{group}/{P}/{image}"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(f"grp/{P}/a/b/c/d/e/f", id="six-image-segments"),
        pytest.param(f"grp/{P}/Alpine", id="uppercase-image"),
        pytest.param(f"grp/{P}/library/Alpine", id="uppercase-image-segment"),
        pytest.param(f"grp/{P}/", id="empty-image"),
        pytest.param(f"grp/{P}/a//b", id="empty-image-segment"),
        pytest.param(f"grp/{P}/alpine/", id="trailing-slash"),
        pytest.param(f"grp//sub/{P}/alpine", id="empty-group-segment"),
        pytest.param(f"/grp/{P}/alpine", id="leading-slash"),
        pytest.param(f"/{P}/alpine", id="empty-group"),
        pytest.param(f"grp/{P}/../alpine", id="dotdot-image"),
        pytest.param(f"grp/../{P}/alpine", id="dotdot-group"),
        pytest.param(f"g..x/{P}/alpine", id="dotdot-inside-group"),
        pytest.param(f"grp/{P}/a..b", id="dotdot-inside-image"),
        pytest.param(f"./{P}/alpine", id="dot-group"),
        pytest.param(f".grp/{P}/alpine", id="group-starts-with-dot"),
        pytest.param(f"-grp/{P}/alpine", id="group-starts-with-dash"),
        pytest.param(f"grp/{P}/-alpine", id="image-starts-with-separator"),
        pytest.param(f"grp/{P}/alpine-", id="image-ends-with-separator"),
        pytest.param(f"grp/{P}/a___b", id="three-underscores"),
        pytest.param(f"grp/{P}/a\\b", id="backslash-image"),
        pytest.param(f"g\\x/{P}/alpine", id="backslash-group"),
        pytest.param(f"grp/{P}/a%2fb", id="percent-image"),
        pytest.param(f"g%2e/{P}/alpine", id="percent-group"),
        pytest.param(f"grp/{P}/al pine", id="space-image"),
        pytest.param(f"my group/{P}/alpine", id="space-group"),
        pytest.param(f"grp/{P}/alpine\n", id="newline"),
        pytest.param(f"grp/{P}/al\x00pine", id="nul"),
        pytest.param(f"grp/{P}/alpine:latest", id="colon"),
    ],
)
def test_invalid_image_names(name: str) -> None:
    error = assert_error(lambda: ImageName.parse(name), ErrorCode.NAME_INVALID, 400)
    assert error.envelope()["errors"][0]["code"] == "NAME_INVALID"


@pytest.mark.parametrize(
    "name", ["grp/alpine", f"{P}/alpine", "grp/dependency_proxy/alpine", "library/alpine"]
)
def test_names_outside_the_proxy_space_are_unknown(name: str) -> None:
    assert_error(lambda: ImageName.parse(name), ErrorCode.NAME_UNKNOWN, 404)


def test_invalid_name_detail_is_bounded() -> None:
    name = f"grp/{P}/" + "A" * 1000
    with pytest.raises(RegistryError) as caught:
        ImageName.parse(name)
    assert caught.value.detail == {"name": name[:255]}


# ---- tags ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "tag", ["latest", "1", "1.2.3", "v1_2-rc.1", "Latest", "_private", "a" * 128]
)
def test_valid_tags(tag: str) -> None:
    ref = Reference.parse(tag)
    assert ref.tag == tag
    assert ref.digest is None
    assert str(ref) == tag


@pytest.mark.parametrize(
    "tag",
    [
        pytest.param(".INVALID", id="leading-dot"),
        pytest.param("-dash", id="leading-dash"),
        pytest.param("a" * 129, id="129-chars"),
        pytest.param("", id="empty"),
        pytest.param("with space", id="space"),
        pytest.param("a/b", id="slash"),
        pytest.param("t\u00e0g", id="non-ascii"),
        pytest.param("tag+meta", id="plus"),
        pytest.param("latest\n", id="trailing-newline"),
    ],
)
def test_invalid_tags_are_manifest_unknown(tag: str) -> None:
    assert_error(lambda: Reference.parse(tag), ErrorCode.MANIFEST_UNKNOWN, 404)


# ---- digests -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "algorithm", "hex_"),
    [(f"sha256:{HEX256}", "sha256", HEX256), (f"sha512:{HEX512}", "sha512", HEX512)],
)
def test_valid_digests(value: str, algorithm: str, hex_: str) -> None:
    digest = Digest.parse(value)
    assert (digest.algorithm, digest.hex) == (algorithm, hex_)
    assert str(digest) == value
    ref = Reference.parse(value)
    assert ref.digest == digest
    assert ref.tag is None
    assert str(ref) == value


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("sha256:totallywrong", id="not-hex"),
        pytest.param(f"sha256:{HEX256[:-1]}", id="63-hex"),
        pytest.param(f"sha256:{HEX256}0", id="65-hex"),
        pytest.param(f"sha256:{HEX256.upper()}", id="uppercase-hex"),
        pytest.param(f"SHA256:{HEX256}", id="uppercase-algorithm"),
        pytest.param(f"sha512:{HEX256}", id="sha512-with-64-hex"),
        pytest.param(f"sha384:{hashlib.sha384(b'x').hexdigest()}", id="sha384"),
        pytest.param(f"md5:{hashlib.md5(b'x').hexdigest()}", id="md5"),
        pytest.param("sha256:", id="empty-hex"),
        pytest.param(f" sha256:{HEX256}", id="leading-space"),
        pytest.param(f"sha256:{HEX256}\n", id="trailing-newline"),
        pytest.param(f"sha256:{HEX256}/x", id="trailing-path"),
    ],
)
def test_invalid_digests(value: str) -> None:
    assert_error(lambda: Digest.parse(value), ErrorCode.DIGEST_INVALID, 400)


def test_a_reference_with_a_colon_is_a_digest_and_must_be_valid() -> None:
    assert_error(lambda: Reference.parse("sha256:totallywrong"), ErrorCode.DIGEST_INVALID, 400)
    assert_error(lambda: Reference.parse("latest:tag"), ErrorCode.DIGEST_INVALID, 400)


def test_digest_of_and_matches() -> None:
    digest = Digest.of(b"hello")
    assert str(digest) == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert Digest.of(b"hello", "sha512").hex == hashlib.sha512(b"hello").hexdigest()
    hasher = digest.hasher()
    hasher.update(b"hel")
    assert not digest.matches(hasher)
    hasher.update(b"lo")
    assert digest.matches(hasher)


# ---- whole registry paths ------------------------------------------------------------------
def test_registry_path_manifest_by_tag() -> None:
    path = parse_registry_path(f"Grp/{P}/alpine/manifests/3.19")
    assert path.kind == "manifests"
    assert path.name.group_path == "grp"
    assert path.name.upstream_repository == "library/alpine"
    assert path.reference == Reference(tag="3.19")


def test_registry_path_manifest_and_blob_by_digest() -> None:
    manifest = parse_registry_path(f"grp/{P}/bitnami/redis/manifests/sha256:{HEX256}")
    assert manifest.kind == "manifests"
    assert manifest.name.upstream_repository == "bitnami/redis"
    assert manifest.reference.digest == Digest("sha256", HEX256)
    blob = parse_registry_path(f"grp/{P}/alpine/blobs/sha512:{HEX512}")
    assert blob.kind == "blobs"
    assert blob.reference.digest == Digest("sha512", HEX512)


def test_registry_path_image_named_like_a_route() -> None:
    path = parse_registry_path(f"grp/{P}/manifests/manifests/latest")
    assert path.name.image == "manifests"
    assert path.reference.tag == "latest"


@pytest.mark.parametrize(
    ("path", "code", "status"),
    [
        (f"grp/{P}/alpine/blobs/latest", ErrorCode.DIGEST_INVALID, 400),
        (f"grp/{P}/alpine/blobs/sha256:totallywrong", ErrorCode.DIGEST_INVALID, 400),
        (f"grp/{P}/alpine/manifests/.INVALID", ErrorCode.MANIFEST_UNKNOWN, 404),
        pytest.param(
            f"grp/{P}/alpine/manifests/latest\n",
            ErrorCode.MANIFEST_UNKNOWN,
            404,
            id="tag-with-trailing-newline",
        ),
        (f"grp/{P}/alpine/tags/list", ErrorCode.NAME_UNKNOWN, 404),
        (f"grp/{P}/alpine/manifests/", ErrorCode.NAME_UNKNOWN, 404),
        (f"grp/{P}/alpine/_catalog", ErrorCode.NAME_UNKNOWN, 404),
        (f"grp/{P}/../etc/manifests/latest", ErrorCode.NAME_INVALID, 400),
        (f"grp/{P}/Alpine/manifests/latest", ErrorCode.NAME_INVALID, 400),
        (f"grp/{P}/a/b/c/d/e/f/manifests/latest", ErrorCode.NAME_INVALID, 400),
    ],
)
def test_invalid_registry_paths(path: str, code: ErrorCode, status: int) -> None:
    assert_error(lambda: parse_registry_path(path), code, status)


# ---- token scopes --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "repository", "actions"),
    [
        (f"repository:grp/{P}/alpine:pull", f"grp/{P}/alpine", ("pull",)),
        ("repository:library/alpine:pull,push", "library/alpine", ("pull", "push")),
        ("repository:x:*", "x", ("*",)),
        ("repository:x:pull,", "x", ("pull",)),
    ],
)
def test_scope_parse(value: str, repository: str, actions: tuple[str, ...]) -> None:
    scope = Scope.parse(value)
    assert scope == Scope(repository, actions)


@pytest.mark.parametrize(
    "value",
    [
        "registry:catalog:*",
        "repository:alpine",
        "repository::pull",
        "repository:x:PULL",
        "repository:x:pull push",
        "",
        "repository:x:",
    ],
)
def test_scope_parse_rejects(value: str) -> None:
    assert Scope.parse(value) is None


def test_scope_round_trips_through_str() -> None:
    text = f"repository:grp/{P}/alpine:pull,push"
    scope = Scope.parse(text)
    assert scope is not None
    assert str(scope) == text
    assert Scope.parse(str(scope)) == scope


# ---- media types ---------------------------------------------------------------------------
def _doc(**fields: Any) -> bytes:
    return json.dumps({"schemaVersion": 2, **fields}, indent=3).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_doc(mediaType=DOCKER_MANIFEST, config={}, layers=[]), DOCKER_MANIFEST),
        (_doc(mediaType=DOCKER_MANIFEST_LIST, manifests=[]), DOCKER_MANIFEST_LIST),
        (_doc(mediaType=OCI_MANIFEST, config={}, layers=[]), OCI_MANIFEST),
        (_doc(mediaType=OCI_INDEX, manifests=[]), OCI_INDEX),
        (_doc(mediaType=OCI_ARTIFACT, blobs=[]), OCI_ARTIFACT),
        (_doc(manifests=[]), OCI_INDEX),  # OCI allows omitting mediaType
        (_doc(config={}, layers=[]), OCI_MANIFEST),
        (_doc(mediaType="application/x-unknown", layers=[]), OCI_MANIFEST),
        (json.dumps({"schemaVersion": 1, "fsLayers": []}).encode(), None),  # schema1
        (b"[1, 2]", None),
        (b"not json", None),
        (b"\xff\xfe\x00", None),
        (b"", None),
    ],
)
def test_sniff(body: bytes, expected: str | None) -> None:
    assert media_types.sniff(body) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        ("", ""),
        (f"{OCI_INDEX}; charset=utf-8", OCI_INDEX),
        ("  Application/VND.OCI.Image.Index.v1+JSON ", OCI_INDEX),
    ],
)
def test_normalize(value: str | None, expected: str) -> None:
    assert media_types.normalize(value) == expected


@pytest.mark.parametrize(
    ("media_type", "accept", "expected"),
    [
        (OCI_INDEX, None, True),
        (OCI_INDEX, "", True),
        (OCI_INDEX, "*/*", True),
        (OCI_INDEX, f"{DOCKER_MANIFEST}, */*;q=0.1", True),
        (OCI_INDEX, OCI_INDEX, True),
        (OCI_INDEX, f"{OCI_INDEX};q=0.5", True),
        (OCI_INDEX, OCI_INDEX.upper(), True),
        (OCI_MANIFEST, f"{DOCKER_MANIFEST}, {OCI_MANIFEST}", True),
        (OCI_MANIFEST, media_types.UPSTREAM_ACCEPT, True),
        (DOCKER_MANIFEST_LIST, media_types.UPSTREAM_ACCEPT, True),
        # No manifest type listed at all (a plain HTTP client): served as is.
        (OCI_INDEX, "application/json", True),
        # Manifest types listed, but not this one: 404, like docker-registry does.
        (OCI_INDEX, DOCKER_MANIFEST, False),
        (OCI_MANIFEST, f"{DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}", False),
        (DOCKER_MANIFEST, OCI_MANIFEST, False),
    ],
)
def test_accepted_by(media_type: str, accept: str | None, expected: bool) -> None:
    assert media_types.accepted_by(media_type, accept) is expected


def test_upstream_accept_lists_every_manifest_type() -> None:
    listed = {media_types.normalize(p) for p in media_types.UPSTREAM_ACCEPT.split(",")}
    assert listed == {DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX, OCI_ARTIFACT}


# ---- errors --------------------------------------------------------------------------------
EXPECTED_STATUS = {
    ErrorCode.BLOB_UNKNOWN: 404,
    ErrorCode.DIGEST_INVALID: 400,
    ErrorCode.MANIFEST_UNKNOWN: 404,
    ErrorCode.MANIFEST_INVALID: 400,
    ErrorCode.NAME_INVALID: 400,
    ErrorCode.NAME_UNKNOWN: 404,
    ErrorCode.TAG_INVALID: 400,
    ErrorCode.SIZE_INVALID: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.DENIED: 403,
    ErrorCode.UNSUPPORTED: 405,
    ErrorCode.TOOMANYREQUESTS: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.BAD_GATEWAY: 502,
    ErrorCode.GATEWAY_TIMEOUT: 504,
}


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.value)
def test_every_error_code_has_its_status(code: ErrorCode) -> None:
    assert code.status == EXPECTED_STATUS[code]
    error = RegistryError(code, "message")
    assert error.status == EXPECTED_STATUS[code]


def test_envelope_without_detail() -> None:
    body = envelope(ErrorCode.BLOB_UNKNOWN, "blob unknown to registry")
    assert body == {"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry"}]}


def test_envelope_with_detail_is_json() -> None:
    error = RegistryError(
        ErrorCode.NAME_UNKNOWN,
        "repository name not known to registry",
        detail={"name": "grp/x"},
    )
    body = json.loads(json.dumps(error.envelope()))
    assert body == {
        "errors": [
            {
                "code": "NAME_UNKNOWN",
                "message": "repository name not known to registry",
                "detail": {"name": "grp/x"},
            }
        ]
    }
    assert str(error) == "repository name not known to registry"


def test_registry_error_status_and_header_overrides() -> None:
    error = RegistryError(
        ErrorCode.UNAUTHORIZED,
        "authentication required",
        headers={"WWW-Authenticate": 'Bearer realm="https://x/jwt/auth"'},
    )
    assert error.status == 401
    assert error.headers == {"WWW-Authenticate": 'Bearer realm="https://x/jwt/auth"'}
    throttled = RegistryError(ErrorCode.TOOMANYREQUESTS, "slow down", status=503)
    assert throttled.status == 503
    assert throttled.headers == {}
    assert throttled.envelope()["errors"][0]["code"] == "TOOMANYREQUESTS"
