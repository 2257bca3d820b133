"""The permission matrix: every kind of actor against every operation, each cell asserted.

Target group `mx/team`; `mx` is its parent, `mx/other` a sibling, `elsewhere` unrelated.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import start_dproxy
from tests.support import UpstreamRegistry
from tests.support.dproxy import DproxyServer

pytestmark = pytest.mark.e2e

TARGET = "mx/team"
REPOSITORY = f"{TARGET}/dependency_proxy/containers/alpine"
SCOPE = f"repository:{REPOSITORY}:pull"

PULL_OK = "pulls"
PULL_DENIED = "404"  # a token without access, then NAME_UNKNOWN
LOGIN_REFUSED = "401"  # /jwt/auth refuses the credentials


@dataclass
class Actor:
    pull: tuple[str, str] | None  # Basic credentials for /jwt/auth; None = anonymous
    api: str | None  # PRIVATE-TOKEN; None = no token
    expect_pull: str
    expect_api: int  # status of the Owner-only operations; 2xx means allowed


@dataclass
class World:
    dproxy: DproxyServer
    target_id: int
    actors: dict[str, Actor]


def _user(dproxy: DproxyServer, name: str, *, admin: bool = False) -> tuple[str, str, int]:
    password = f"pw-{name}-123456"
    created = dproxy.api("POST", "/users", {"username": name, "password": password, "admin": admin})
    assert isinstance(created, dict)
    dproxy.user_ids[name] = int(created["id"])
    return name, password, int(created["id"])


def _pat(dproxy: DproxyServer, user_id: int, scopes: list[str]) -> dict[str, object]:
    token = dproxy.api(
        "POST", f"/users/{user_id}/personal_access_tokens", {"name": "m", "scopes": scopes}
    )
    assert isinstance(token, dict)
    return token


def _deploy_token(dproxy: DproxyServer, group: str) -> dict[str, object]:
    token = dproxy.api(
        "POST",
        f"/groups/{dproxy.group_ids[group]}/deploy_tokens",
        {"name": "matrix", "scopes": ["read_registry"]},
    )
    assert isinstance(token, dict)
    return token


def _job_token(dproxy: DproxyServer, group: str, user: str, *, finished: bool) -> str:
    """A CI job's token, stored as `POST /ci/jobs` stores it (a `glcbt-` secret's digest).
    Written directly: the API refuses a job for a non-member, which a user who lost the
    membership after the job started is; `test_ci_jobs` covers the API itself."""
    secret = f"glcbt-{secrets.token_urlsafe(15)}"
    now = datetime.now(UTC)
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    with sqlite3.connect(dproxy.data_dir / "dproxy.db") as db:
        db.execute(
            "INSERT INTO ci_job_tokens (group_id, user_id, token_digest, expires_at, finished_at,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                dproxy.group_ids[group],
                dproxy.user_ids[user],
                hashlib.sha256(secret.encode()).hexdigest(),
                (now + timedelta(hours=1)).strftime(fmt),
                now.strftime(fmt) if finished else None,
                now.strftime(fmt),
            ),
        )
    return secret


def _age(dproxy: DproxyServer, table: str, token_id: object, value: str) -> None:
    """Let time pass for one token: its expiry moves into the past."""
    with sqlite3.connect(dproxy.data_dir / "dproxy.db") as db:
        db.execute(f"UPDATE {table} SET expires_at = ? WHERE id = ?", (value, token_id))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamRegistry) -> Iterator[World]:
    dproxy = start_dproxy(
        tmp_path_factory.mktemp("matrix"),
        upstream.url,
        # Many refusals come from one address here: keep the brute-force ban out of the way.
        env={"DPROXY_AUTH_FAILURE_LIMIT": "100000", "DPROXY_ACTOR_RECHECK_SECONDS": "0"},
    )
    for path in ("mx", "mx/team", "mx/other", "elsewhere"):
        dproxy.add_group(path)
    actors: dict[str, Actor] = {}

    def member(name: str, group: str, level: int, expect_pull: str, expect_api: int) -> None:
        username, password, user_id = _user(dproxy, name)
        dproxy.add_member(group, username, level)
        token = _pat(dproxy, user_id, ["api"])["token"]
        actors[name] = Actor((username, password), str(token), expect_pull, expect_api)

    member("owner", TARGET, 50, PULL_OK, 0)
    member("maintainer", TARGET, 40, PULL_OK, 403)
    member("developer", TARGET, 30, PULL_OK, 403)
    member("reporter", TARGET, 20, PULL_OK, 403)
    member("guest", TARGET, 10, PULL_OK, 403)
    member("ancestor-developer", "mx", 30, PULL_OK, 403)
    member("ancestor-owner", "mx", 50, PULL_OK, 0)
    member("sibling-owner", "mx/other", 50, PULL_DENIED, 404)
    member("blocked", TARGET, 50, LOGIN_REFUSED, 401)
    dproxy.api("POST", f"/users/{dproxy.user_ids['blocked']}/block")
    username, password, user_id = _user(dproxy, "outsider")
    actors["non-member"] = Actor(
        (username, password), str(_pat(dproxy, user_id, ["api"])["token"]), PULL_DENIED, 404
    )
    username, password, user_id = _user(dproxy, "admin2", admin=True)
    actors["admin"] = Actor(
        (username, password), str(_pat(dproxy, user_id, ["api"])["token"]), PULL_OK, 0
    )
    actors["anonymous"] = Actor(None, None, PULL_DENIED, 401)

    for name, group, expect in (
        ("deploy token of the group", TARGET, PULL_OK),
        ("deploy token of an ancestor", "mx", PULL_OK),
        ("deploy token of another group", "elsewhere", PULL_DENIED),
        ("revoked deploy token", TARGET, LOGIN_REFUSED),
        ("expired deploy token", TARGET, LOGIN_REFUSED),
    ):
        token = _deploy_token(dproxy, group)
        actors[name] = Actor(
            (str(token["username"]), str(token["token"])), str(token["token"]), expect, 401
        )
        if name.startswith("revoked"):
            dproxy.api("DELETE", f"/groups/{dproxy.group_ids[group]}/deploy_tokens/{token['id']}")
        if name.startswith("expired"):
            # SQLAlchemy's SQLite format for (UTC) datetimes.
            past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S.%f")
            _age(dproxy, "deploy_tokens", token["id"], past)

    for level in (10, 20, 30, 40, 50):
        token = dproxy.api(
            "POST",
            f"/groups/{dproxy.group_ids[TARGET]}/access_tokens",
            {"name": f"gat{level}", "scopes": ["api"], "access_level": level},
        )
        assert isinstance(token, dict)
        actors[f"group access token ({level})"] = Actor(
            ("any-name", str(token["token"])),
            str(token["token"]),
            PULL_OK,
            0 if level == 50 else 403,
        )

    owner_id = dproxy.user_ids["owner"]
    for scopes, expect_pull, expect_api in (
        (["api"], PULL_OK, 0),
        (["read_api"], LOGIN_REFUSED, 403),
        (["read_registry"], PULL_OK, 401),
        (["read_registry", "write_registry"], PULL_OK, 401),
        (["read_user"], LOGIN_REFUSED, 401),
    ):
        token = _pat(dproxy, owner_id, scopes)
        actors[f"PAT {'+'.join(scopes)}"] = Actor(
            ("owner", str(token["token"])), str(token["token"]), expect_pull, expect_api
        )
    expired = _pat(dproxy, owner_id, ["api"])
    _age(dproxy, "personal_access_tokens", expired["id"], "2020-01-01")
    actors["expired PAT"] = Actor(
        ("owner", str(expired["token"])), str(expired["token"]), LOGIN_REFUSED, 401
    )
    revoked = _pat(dproxy, owner_id, ["api"])
    dproxy.api("DELETE", f"/personal_access_tokens/{revoked['id']}")
    actors["revoked PAT"] = Actor(
        ("owner", str(revoked["token"])), str(revoked["token"]), LOGIN_REFUSED, 401
    )

    for name, finished, expect in (
        ("CI job token of a guest", False, PULL_OK),
        ("CI job token of a non-member", False, PULL_DENIED),
        ("finished CI job token", True, LOGIN_REFUSED),
    ):
        user = "outsider" if "non-member" in name else "guest"
        secret = _job_token(dproxy, TARGET, user, finished=finished)
        # Job tokens pull as `gitlab-ci-token`; they are no API credential.
        actors[name] = Actor(("gitlab-ci-token", secret), secret, expect, 401)

    yield World(dproxy, dproxy.group_ids[TARGET], actors)
    dproxy.stop()


ACTORS = [
    "owner",
    "maintainer",
    "developer",
    "reporter",
    "guest",
    "ancestor-developer",
    "ancestor-owner",
    "sibling-owner",
    "non-member",
    "admin",
    "blocked",
    "anonymous",
    "deploy token of the group",
    "deploy token of an ancestor",
    "deploy token of another group",
    "revoked deploy token",
    "expired deploy token",
    *(f"group access token ({level})" for level in (10, 20, 30, 40, 50)),
    "PAT api",
    "PAT read_api",
    "PAT read_registry",
    "PAT read_registry+write_registry",
    "PAT read_user",
    "expired PAT",
    "revoked PAT",
    "CI job token of a guest",
    "CI job token of a non-member",
    "finished CI job token",
]


def _api(world: World, actor: Actor, method: str, path: str, body: object = None) -> int:
    headers = {"PRIVATE-TOKEN": actor.api} if actor.api else {}
    response = httpx.request(method, f"{world.dproxy.api_url}{path}", headers=headers, json=body)
    assert "message" in response.json() if response.status_code >= 400 else True
    return response.status_code


def _expected(actor: Actor, allowed_status: int) -> int:
    return allowed_status if actor.expect_api == 0 else actor.expect_api


# API cells run before the pull cells: a purge of a group whose cache holds rows would be
# refused with 409 while it runs, which is not a permission answer.
@pytest.mark.parametrize("name", ACTORS)
def test_purge_the_cache(world: World, name: str) -> None:
    actor = world.actors[name]
    status = _api(world, actor, "DELETE", f"/groups/{world.target_id}/dependency_proxy/cache")
    assert status == _expected(actor, 202)


@pytest.mark.parametrize("name", ACTORS)
def test_change_proxy_settings(world: World, name: str) -> None:
    actor = world.actors[name]
    status = _api(
        world,
        actor,
        "PUT",
        f"/groups/{world.target_id}/dependency_proxy/settings",
        {"enabled": True},
    )
    assert status == _expected(actor, 200)


@pytest.mark.parametrize("name", ACTORS)
def test_create_group_tokens(world: World, name: str) -> None:
    actor = world.actors[name]
    status = _api(
        world,
        actor,
        "POST",
        f"/groups/{world.target_id}/deploy_tokens",
        {"name": "made-by-" + name.replace(" ", "-"), "scopes": ["read_registry"]},
    )
    assert status == _expected(actor, 201)


@pytest.mark.parametrize("name", ACTORS)
def test_pull(world: World, name: str) -> None:
    actor = world.actors[name]
    dproxy = world.dproxy
    login = httpx.get(
        dproxy.token_url,
        params={"service": "dependency_proxy", "scope": SCOPE},
        auth=actor.pull,
    )
    if actor.expect_pull == LOGIN_REFUSED:
        assert login.status_code == 401
        assert login.json()["errors"][0]["code"] == "UNAUTHORIZED"
        return
    assert login.status_code == 200
    response = httpx.get(
        f"{dproxy.url}/v2/{REPOSITORY}/manifests/latest",
        headers={"Authorization": f"Bearer {login.json()['token']}"},
    )
    if actor.expect_pull == PULL_OK:
        assert response.status_code == 200
        assert response.headers["docker-content-digest"].startswith("sha256:")
    else:
        assert response.status_code == 404
        assert response.json()["errors"][0]["code"] == "NAME_UNKNOWN"


def test_every_actor_is_in_the_matrix(world: World) -> None:
    assert sorted(world.actors) == sorted(ACTORS)
