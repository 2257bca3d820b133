"""The Docker token flow: challenges, credentials, and who may read which group."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from dproxy_shared.jwt_tokens import SigningKey
from dproxy_shared.oci.reference import Scope
from tests.conftest import GROUP, USER
from tests.support.dproxy import DproxyServer
from tests.support.skopeo import copy_to_dir

pytestmark = pytest.mark.e2e

# The core suite runs on the embedded default and on the split production topology.
TOPOLOGIES = ("embedded", "split")


@pytest.fixture
def dproxy(module_dproxy: DproxyServer) -> DproxyServer:
    return module_dproxy


REPOSITORY = f"{GROUP}/dependency_proxy/containers/alpine"
SCOPE = f"repository:{REPOSITORY}:pull"


def manifest(
    dproxy: DproxyServer, token: str | None, repository: str = REPOSITORY
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{dproxy.url}/v2/{repository}/manifests/latest", headers=headers)


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["errors"][0]["code"]
    return code


def test_requests_without_a_token_get_the_challenge(dproxy: DproxyServer) -> None:
    ping = httpx.get(f"{dproxy.url}/v2/")
    assert ping.status_code == 401
    assert ping.headers["www-authenticate"] == (
        f'Bearer realm="{dproxy.token_url}",service="dependency_proxy"'
    )
    assert ping.headers["docker-distribution-api-version"] == "registry/2.0"
    response = manifest(dproxy, None)
    assert response.status_code == 401
    assert error_code(response) == "UNAUTHORIZED"
    assert response.headers["www-authenticate"].endswith(f',scope="{SCOPE}"')
    token = dproxy.registry_token(*USER, SCOPE)
    assert httpx.get(f"{dproxy.url}/v2/", headers={"Authorization": f"Bearer {token}"}).json() == {}


def test_token_endpoint_answers_with_the_docker_token_shape(dproxy: DproxyServer) -> None:
    response = httpx.get(
        dproxy.token_url,
        params={"service": "dependency_proxy", "scope": SCOPE},
        auth=USER,
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 15 * 60
    header = json.loads(base64.urlsafe_b64decode(body["token"].split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"]
    jwks = httpx.get(f"{dproxy.auth_url or dproxy.url}/jwt/jwks.json").json()
    assert [key["kid"] for key in jwks["keys"]] == [header["kid"]]


def test_wrong_password_is_refused(dproxy: DproxyServer, tmp_path: Path) -> None:
    response = httpx.get(
        dproxy.token_url,
        params={"service": "dependency_proxy", "scope": SCOPE},
        auth=(USER[0], "not-the-password"),
    )
    assert response.status_code == 401
    assert error_code(response) == "UNAUTHORIZED"
    assert response.json()["errors"][0]["message"].startswith("HTTP Basic: Access denied")
    result = copy_to_dir(
        dproxy.image(GROUP, "alpine:latest"),
        tmp_path / "out",
        creds=(USER[0], "not-the-password"),
        check=False,
    )
    assert not result.ok


def test_unknown_service_is_404(dproxy: DproxyServer) -> None:
    response = httpx.get(dproxy.token_url, params={"service": "other"}, auth=USER)
    assert response.status_code == 404


def test_containerd_password_grant(dproxy: DproxyServer) -> None:
    form = {
        "grant_type": "password",
        "username": USER[0],
        "password": USER[1],
        "service": "dependency_proxy",
        "scope": SCOPE,
        "client_id": "containerd-client",
    }
    response = httpx.post(dproxy.token_url, data=form)
    assert response.status_code == 200
    assert manifest(dproxy, response.json()["token"]).status_code == 200
    refresh = httpx.post(
        dproxy.token_url, data={"grant_type": "refresh_token", "refresh_token": "x"}
    )
    assert refresh.status_code == 400  # containerd then falls back to GET


def test_non_member_gets_name_unknown(dproxy: DproxyServer) -> None:
    dproxy.add_user("mallory", "mallory-password")
    token = dproxy.registry_token("mallory", "mallory-password", SCOPE)
    response = manifest(dproxy, token)
    assert response.status_code == 404
    assert error_code(response) == "NAME_UNKNOWN"
    assert "Guest" in response.json()["errors"][0]["message"]
    anonymous = httpx.get(dproxy.token_url, params={"service": "dependency_proxy", "scope": SCOPE})
    assert anonymous.status_code == 200
    assert manifest(dproxy, anonymous.json()["token"]).status_code == 404


def test_a_token_for_one_group_cannot_read_another(dproxy: DproxyServer) -> None:
    dproxy.add_group("other")
    other = "other/dependency_proxy/containers/alpine"
    # alice is not a member of `other`: asking for it grants nothing ...
    token = dproxy.registry_token(*USER, SCOPE, f"repository:{other}:pull")
    assert manifest(dproxy, token).status_code == 200
    response = manifest(dproxy, token, other)
    assert response.status_code == 404 and error_code(response) == "NAME_UNKNOWN"
    # ... and a group that does not exist looks exactly the same.
    missing = manifest(dproxy, token, "nosuchgroup/dependency_proxy/containers/alpine")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["message"] == response.json()["errors"][0]["message"]


def test_expired_and_tampered_tokens_are_refused(dproxy: DproxyServer) -> None:
    key = SigningKey.load_or_create(dproxy.data_dir / "jwt-signing-key.pem")
    expired, _ = key.issue(
        issuer="dproxy",
        subject="user:2",
        access=[Scope(REPOSITORY, ("pull",))],
        lifetime_seconds=-120,  # beyond the 60 s leeway
    )
    assert manifest(dproxy, expired).status_code == 401

    valid = dproxy.registry_token(*USER, SCOPE)
    header, payload, signature = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["access"][0]["name"] = "other/dependency_proxy/containers/alpine"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    response = manifest(dproxy, f"{header}.{forged}.{signature}", claims["access"][0]["name"])
    assert response.status_code == 401 and error_code(response) == "UNAUTHORIZED"


def test_personal_access_tokens_pull_with_a_registry_scope(dproxy: DproxyServer) -> None:
    alice = dproxy.user_ids[USER[0]]
    for scopes, allowed in ((["read_registry"], True), (["api"], True), (["read_api"], False)):
        created = dproxy.api(
            "POST", f"/users/{alice}/personal_access_tokens", {"name": "t", "scopes": scopes}
        )
        assert isinstance(created, dict) and created["token"].startswith("glpat-")
        response = httpx.get(
            dproxy.token_url,
            params={"service": "dependency_proxy", "scope": SCOPE},
            auth=("anything", created["token"]),
        )
        assert (response.status_code == 200) is allowed, scopes
