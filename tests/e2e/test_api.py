"""The management REST API (`/api/v4`): GitLab's paths, shapes, status codes, pagination and
permissions, against a real `dproxy serve` (and the split topology on Postgres)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import GROUP, USER
from tests.support.dproxy import DproxyServer

pytestmark = pytest.mark.e2e

TOPOLOGIES = ("embedded", "split")

_names = itertools.count()


def unique(prefix: str) -> str:
    """Names are unique per module: the tests share one server."""
    return f"{prefix}{next(_names)}"


class Api:
    """An API client with one caller's token; `call` asserts the status."""

    def __init__(self, dproxy: DproxyServer, token: str | None) -> None:
        headers = {"PRIVATE-TOKEN": token} if token else {}
        self.token = token
        self.client = httpx.Client(
            base_url=f"{dproxy.auth_url or dproxy.url}/api/v4", headers=headers, timeout=30
        )

    def call(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        assert response.status_code == status, (method, path, response.text)
        if status >= 400:
            assert "message" in response.json()
        return response.json() if response.content else None

    def get(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        return self.call("GET", path, status, **kwargs)

    def post(self, path: str, body: object = None, status: int = 201) -> Any:
        return self.call("POST", path, status, json=body)

    def put(self, path: str, body: object, status: int = 200) -> Any:
        return self.call("PUT", path, status, json=body)

    def delete(self, path: str, status: int = 204) -> Any:
        return self.call("DELETE", path, status)


@pytest.fixture(scope="module")
def dproxy(module_dproxy: DproxyServer) -> DproxyServer:
    return module_dproxy


@pytest.fixture(scope="module")
def root(dproxy: DproxyServer) -> Iterator[Api]:
    api = Api(dproxy, dproxy.root_token)
    yield api
    api.client.close()


def new_user(
    dproxy: DproxyServer, root: Api, prefix: str = "user", scopes: tuple[str, ...] = ("api",)
) -> tuple[dict[str, Any], Api]:
    """A user and an API client holding one of their tokens."""
    user = root.post("/users", {"username": unique(prefix), "password": "password-123"})
    token = root.post(
        f"/users/{user['id']}/personal_access_tokens", {"name": "t", "scopes": list(scopes)}
    )
    return user, Api(dproxy, token["token"])


def new_group(root: Api, parent: dict[str, Any] | None = None) -> dict[str, Any]:
    path = unique("g")
    body: dict[str, Any] = {"name": path.upper(), "path": path}
    if parent:
        body["parent_id"] = parent["id"]
    group: dict[str, Any] = root.post("/groups", body)
    return group


def encoded(group: dict[str, Any]) -> str:
    return str(group["full_path"]).replace("/", "%2F")


# -- authentication -------------------------------------------------------------------------


def test_callers_authenticate_with_a_token(dproxy: DproxyServer, root: Api) -> None:
    me = root.get("/user")
    assert me["username"] == "root" and me["is_admin"] is True
    assert Api(dproxy, None).get("/user", 401) == {"message": "401 Unauthorized"}
    Api(dproxy, "glpat-not-a-token").get("/user", 401)
    bearer = httpx.get(
        f"{dproxy.auth_url or dproxy.url}/api/v4/user",
        headers={"Authorization": f"Bearer {root.token}"},
    )
    assert bearer.status_code == 200 and bearer.json()["id"] == me["id"]


def test_read_api_tokens_only_read(dproxy: DproxyServer, root: Api) -> None:
    _user, reader = new_user(dproxy, root, scopes=("read_api",))
    assert reader.get("/user")["username"].startswith("user")
    reader.post("/user/personal_access_tokens", {"name": "x", "scopes": ["api"]}, 403)
    _user, registry_only = new_user(dproxy, root, scopes=("read_registry",))
    registry_only.get("/user", 401)


# -- users ----------------------------------------------------------------------------------


def test_admins_manage_users(dproxy: DproxyServer, root: Api) -> None:
    username = unique("Carol")
    created = root.post(
        "/users",
        {
            "username": username,
            "name": "Carol C",
            "email": "c@example.com",
            "password": "pw-carol-1",
        },
    )
    assert created["username"] == username.lower() and created["state"] == "active"
    assert created["email"] == "c@example.com" and created["is_admin"] is False
    assert "password" not in created and "password_hash" not in created
    conflict = root.post("/users", {"username": username.upper(), "password": "x" * 8}, 409)
    assert conflict == {"message": "Username has already been taken"}
    assert [u["id"] for u in root.get("/users", params={"username": username})] == [created["id"]]
    assert root.get(f"/users/{created['id']}")["email"] == "c@example.com"

    _user, other = new_user(dproxy, root)
    other.get("/users", 403)
    other.post("/users", {"username": unique("x"), "password": "x" * 8}, 403)
    public = other.get(f"/users/{created['id']}")
    assert public["username"] == created["username"]
    assert "email" not in public and "is_admin" not in public
    assert other.get(f"/users/{_user['id']}")["is_admin"] is False  # their own record

    root.delete(f"/users/{created['id']}")
    assert root.get(f"/users/{created['id']}", 404) == {"message": "404 User Not Found"}
    root.delete(f"/users/{created['id']}", 404)


def test_user_input_is_validated(root: Api) -> None:
    too_long = root.post("/users", {"username": "u" * 256, "password": "x" * 8}, 400)
    assert too_long == {"message": {"username": ["String should have at most 255 characters"]}}
    root.post("/users", {"username": "-starts-with-dash", "password": "x" * 8}, 400)
    root.post("/users", {"username": unique("short"), "password": "1234567"}, 400)
    root.post("/users", {"username": "gitlab-ci-token", "password": "x" * 8}, 400)
    root.post("/users", {"username": unique("nul"), "name": "a\u0000b"}, 400)
    response = root.client.post(
        "/users", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "message" in response.json()


def test_blocking_a_user_stops_their_tokens(dproxy: DproxyServer, root: Api) -> None:
    user, api = new_user(dproxy, root)
    assert root.post(f"/users/{user['id']}/block") is True
    api.get("/user", 401)
    assert root.get(f"/users/{user['id']}")["state"] == "blocked"
    assert root.post(f"/users/{user['id']}/unblock") is True
    assert api.get("/user")["state"] == "active"
    me = root.get("/user")
    assert "own account" in root.post(f"/users/{me['id']}/block", status=403)["message"]
    root.delete(f"/users/{me['id']}", 403)
    root.post("/users/2147483647/block", status=404)


# -- pagination -----------------------------------------------------------------------------


def test_lists_are_paginated_like_gitlab(dproxy: DproxyServer, root: Api) -> None:
    prefix = unique("page")
    ids = [root.post("/users", {"username": f"{prefix}x{i}"})["id"] for i in range(5)]
    response = root.client.get("/users", params={"search": prefix, "per_page": 2, "page": 2})
    assert response.status_code == 200
    assert [user["id"] for user in response.json()] == ids[2:4]
    headers = response.headers
    assert (headers["x-total"], headers["x-total-pages"]) == ("5", "3")
    assert (headers["x-page"], headers["x-per-page"]) == ("2", "2")
    assert (headers["x-next-page"], headers["x-prev-page"]) == ("3", "1")
    links = {rel: url for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', headers["link"])}
    assert set(links) == {"next", "prev", "first", "last"}
    base = dproxy.auth_url or dproxy.url
    assert links["next"].startswith(f"{base}/api/v4/users?")
    assert "page=3" in links["next"] and f"search={prefix}" in links["next"]
    assert "page=3" in links["last"] and "page=1" in links["first"]
    follow = root.client.get(links["next"])
    assert [user["id"] for user in follow.json()] == ids[4:]
    assert follow.headers["x-next-page"] == "" and 'rel="next"' not in follow.headers["link"]

    clamped = root.client.get("/users", params={"search": prefix, "per_page": 1000})
    assert clamped.headers["x-per-page"] == "100" and len(clamped.json()) == 5
    empty = root.client.get("/users", params={"search": unique("nobody")})
    assert empty.json() == [] and empty.headers["x-total-pages"] == "1"
    root.get("/users", 400, params={"page": 0})
    root.get("/users", 400, params={"per_page": "many"})


# -- personal access tokens -----------------------------------------------------------------


def test_token_values_are_shown_once(dproxy: DproxyServer, root: Api) -> None:
    user, api = new_user(dproxy, root)
    created = root.post(
        f"/users/{user['id']}/personal_access_tokens",
        {"name": "ci", "scopes": ["read_registry", "api"], "expires_at": "2099-01-01"},
    )
    assert created["token"].startswith("glpat-")
    assert created["scopes"] == ["api", "read_registry"] and created["expires_at"] == "2099-01-01"
    assert created["user_id"] == user["id"] and created["active"] and not created["revoked"]
    listed = api.get("/personal_access_tokens")
    assert {t["id"] for t in listed} >= {created["id"]}
    assert all(t["user_id"] == user["id"] and "token" not in t for t in listed)
    assert "token" not in api.get(f"/personal_access_tokens/{created['id']}")

    own = api.post("/user/personal_access_tokens", {"name": "mine", "scopes": ["read_api"]})
    assert own["user_id"] == user["id"] and own["token"].startswith("glpat-")
    assert api.get("/personal_access_tokens/self")["id"] != own["id"]
    assert Api(dproxy, own["token"]).get("/personal_access_tokens/self")["id"] == own["id"]


def test_token_requests_are_validated(dproxy: DproxyServer, root: Api) -> None:
    user, _api = new_user(dproxy, root)
    path = f"/users/{user['id']}/personal_access_tokens"
    root.post(path, {"name": "x", "scopes": ["sudo"]}, 400)
    root.post(path, {"name": "x", "scopes": []}, 400)
    root.post(path, {"name": "x", "scopes": ["api"], "expires_at": "2001-01-01"}, 400)
    root.post(path, {"name": "x" * 256, "scopes": ["api"]}, 400)
    root.post("/users/2147483647/personal_access_tokens", {"name": "x", "scopes": ["api"]}, 404)


def test_tokens_are_private_to_their_owner(dproxy: DproxyServer, root: Api) -> None:
    alice, alice_api = new_user(dproxy, root)
    _bob, bob_api = new_user(dproxy, root)
    token = alice_api.get("/personal_access_tokens/self")
    bob_api.get(f"/personal_access_tokens/{token['id']}", 404)
    bob_api.delete(f"/personal_access_tokens/{token['id']}", 404)
    bob_api.post(f"/personal_access_tokens/{token['id']}/rotate", status=404)
    bob_api.get("/personal_access_tokens", 403, params={"user_id": alice["id"]})
    bob_api.post(
        f"/users/{alice['id']}/personal_access_tokens", {"name": "x", "scopes": ["api"]}, 403
    )
    seen = root.get("/personal_access_tokens", params={"user_id": alice["id"]})
    assert [t["id"] for t in seen] == [token["id"]]


def test_rotating_revokes_the_old_token(dproxy: DproxyServer, root: Api) -> None:
    user, api = new_user(dproxy, root)
    old = api.get("/personal_access_tokens/self")
    rotated = root.post(f"/personal_access_tokens/{old['id']}/rotate", status=200)
    assert rotated["id"] != old["id"] and rotated["token"].startswith("glpat-")
    assert (rotated["name"], rotated["scopes"], rotated["user_id"]) == (
        old["name"],
        old["scopes"],
        user["id"],
    )
    assert rotated["expires_at"]  # a week by default, as in GitLab
    api.get("/user", 401)
    assert root.get(f"/personal_access_tokens/{old['id']}")["revoked"] is True
    root.post(f"/personal_access_tokens/{old['id']}/rotate", status=400)  # already revoked

    fresh = Api(dproxy, rotated["token"])
    again = fresh.post("/personal_access_tokens/self/rotate", {"expires_at": "2099-12-31"}, 200)
    assert again["expires_at"] == "2099-12-31"
    fresh.get("/user", 401)
    Api(dproxy, again["token"]).get("/user")


def test_revoking_a_token(dproxy: DproxyServer, root: Api) -> None:
    _user, api = new_user(dproxy, root)
    second = api.post("/user/personal_access_tokens", {"name": "second", "scopes": ["api"]})
    api.delete(f"/personal_access_tokens/{second['id']}")
    Api(dproxy, second["token"]).get("/user", 401)
    assert api.get(f"/personal_access_tokens/{second['id']}")["active"] is False
    revoked = api.get("/personal_access_tokens", params={"revoked": True})
    assert [t["id"] for t in revoked] == [second["id"]]
    api.delete("/personal_access_tokens/self")
    api.get("/user", 401)
    root.delete("/personal_access_tokens/2147483647", 404)


# -- groups ---------------------------------------------------------------------------------


def test_groups_by_id_or_encoded_path(root: Api) -> None:
    top = new_group(root)
    sub = new_group(root, top)
    assert sub["full_path"] == f"{top['path']}/{sub['path']}" and sub["parent_id"] == top["id"]
    assert root.get(f"/groups/{sub['id']}") == sub
    assert root.get(f"/groups/{encoded(sub)}") == sub
    assert root.get(f"/groups/{encoded(sub).upper()}")["id"] == sub["id"]  # case-insensitive
    assert root.get(f"/groups/{encoded(top)}%2Fnope", 404) == {"message": "404 Group Not Found"}
    root.get("/groups/99999999999999999999", 404)
    root.get("/groups/%C2%B2", 404)  # a digit to str.isdigit(), not to int()
    # An unencoded slash is not a group path: GitLab needs `%2F` too.
    unencoded = root.client.get(f"/groups/{top['path']}/{sub['path']}")
    assert unencoded.status_code == 404
    assert [g["id"] for g in root.get(f"/groups/{encoded(top)}/subgroups")] == [sub["id"]]


def test_a_subgroup_named_like_a_route(root: Api) -> None:
    top = new_group(root)
    members = root.post("/groups", {"name": "m", "path": "members", "parent_id": top["id"]})
    assert root.get(f"/groups/{encoded(members)}")["id"] == members["id"]
    listed = root.get(f"/groups/{top['id']}/members")
    assert [m["username"] for m in listed] == ["root"]  # the creator is the Owner
    assert listed[0]["access_level"] == 50


def test_group_creation_rules(dproxy: DproxyServer, root: Api) -> None:
    top = new_group(root)
    taken = root.post("/groups", {"name": "x", "path": top["path"].upper()}, 400)
    assert "has already been taken" in taken["message"]
    root.post("/groups", {"name": "x", "path": "-bad"}, 400)
    root.post("/groups", {"name": "x", "path": "a..b"}, 400)
    root.post("/groups", {"name": "x", "path": "p" * 256}, 400)
    root.post("/groups", {"name": "x", "path": unique("p"), "parent_id": 2147483647}, 404)
    proxy = root.post("/groups", {"name": "x", "path": "dependency_proxy", "parent_id": top["id"]})
    root.post("/groups", {"name": "x", "path": "containers", "parent_id": proxy["id"]}, 400)

    owner, owner_api = new_user(dproxy, root)
    owner_api.post("/groups", {"name": "x", "path": unique("p")}, 403)
    root.post(f"/groups/{top['id']}/members", {"user_id": owner["id"], "access_level": 50})
    mine = owner_api.post("/groups", {"name": "x", "path": unique("p"), "parent_id": top["id"]})
    assert [
        (m["id"], m["access_level"]) for m in owner_api.get(f"/groups/{mine['id']}/members")
    ] == [(owner["id"], 50)]
    guest, guest_api = new_user(dproxy, root)
    root.post(f"/groups/{top['id']}/members", {"user_id": guest["id"], "access_level": 10})
    guest_api.post("/groups", {"name": "x", "path": unique("p"), "parent_id": top["id"]}, 403)


def test_group_visibility_and_ownership(dproxy: DproxyServer, root: Api) -> None:
    top = new_group(root)
    sub = new_group(root, top)
    other = new_group(root)
    member, member_api = new_user(dproxy, root)
    _outsider, outsider_api = new_user(dproxy, root)
    root.post(f"/groups/{top['id']}/members", {"user_id": member["id"], "access_level": 30})

    visible = {g["id"] for g in member_api.get("/groups", params={"per_page": 100})}
    assert {top["id"], sub["id"]} <= visible and other["id"] not in visible
    assert {g["id"] for g in member_api.get("/groups", params={"top_level_only": True})} == {
        top["id"]
    }
    assert member_api.get(f"/groups/{encoded(sub)}")["id"] == sub["id"]
    member_api.get(f"/groups/{other['id']}", 404)
    outsider_api.get(f"/groups/{top['id']}", 404)
    assert outsider_api.get("/groups") == []
    admin_view = {g["id"] for g in root.get("/groups", params={"search": other["path"]})}
    assert admin_view == {other["id"]}

    member_api.put(f"/groups/{top['id']}", {"name": "Renamed"}, 403)
    member_api.delete(f"/groups/{top['id']}", 403)
    outsider_api.put(f"/groups/{top['id']}", {"name": "Renamed"}, 404)
    assert root.put(f"/groups/{top['id']}", {"name": "Renamed"})["name"] == "Renamed"
    assert root.get(f"/groups/{top['id']}")["name"] == "Renamed"


def test_deleting_a_group_takes_its_subgroups(dproxy: DproxyServer, root: Api) -> None:
    top = new_group(root)
    sub = new_group(root, top)
    bot = root.post(f"/groups/{sub['id']}/access_tokens", {"name": "bot", "scopes": ["api"]})
    assert root.delete(f"/groups/{encoded(top)}", 202) == {"message": "202 Accepted"}
    root.get(f"/groups/{top['id']}", 404)
    root.get(f"/groups/{sub['id']}", 404)
    root.get(f"/users/{bot['user_id']}", 404)
    Api(dproxy, bot["token"]).get("/user", 401)


# -- members --------------------------------------------------------------------------------


def test_owners_manage_members(dproxy: DproxyServer, root: Api) -> None:
    top = new_group(root)
    user, user_api = new_user(dproxy, root)
    path = f"/groups/{top['id']}/members"
    added = root.post(path, {"user_id": user["id"], "access_level": 30, "expires_at": "2099-01-01"})
    assert (added["id"], added["username"], added["access_level"]) == (
        user["id"],
        user["username"],
        30,
    )
    assert added["expires_at"] == "2099-01-01" and added["state"] == "active"
    assert root.post(path, {"user_id": user["id"], "access_level": 10}, 409) == {
        "message": "Member already exists"
    }
    root.post(path, {"user_id": 2147483647, "access_level": 10}, 404)
    root.post(path, {"user_id": user["id"], "access_level": 35}, 400)
    root.post(path, {"user_id": user["id"], "access_level": 10, "expires_at": "2001-01-01"}, 400)

    # A Developer may look but not change.
    assert user_api.get(f"{path}/{user['id']}")["access_level"] == 30
    _other, other_api = new_user(dproxy, root)
    user_api.post(path, {"user_id": _other["id"], "access_level": 10}, 403)
    user_api.put(f"{path}/{user['id']}", {"access_level": 50}, 403)
    other_api.get(path, 404)

    changed = root.put(f"{path}/{user['id']}", {"access_level": 40})
    assert changed["access_level"] == 40 and changed["expires_at"] == "2099-01-01"
    cleared = root.put(f"{path}/{user['id']}", {"access_level": 40, "expires_at": None})
    assert cleared["expires_at"] is None
    root.delete(f"{path}/{user['id']}")
    root.get(f"{path}/{user['id']}", 404)
    user_api.get(f"/groups/{top['id']}", 404)
    root.delete(f"{path}/{user['id']}", 404)


def test_inherited_members_at_their_highest_level(dproxy: DproxyServer, root: Api) -> None:
    top = new_group(root)
    sub = new_group(root, top)
    dev, _ = new_user(dproxy, root)
    guest, _ = new_user(dproxy, root)
    root.post(f"/groups/{top['id']}/members", {"user_id": dev["id"], "access_level": 30})
    root.post(f"/groups/{sub['id']}/members", {"user_id": dev["id"], "access_level": 10})
    root.post(f"/groups/{sub['id']}/members", {"user_id": guest["id"], "access_level": 10})

    direct = {m["id"]: m["access_level"] for m in root.get(f"/groups/{sub['id']}/members")}
    assert direct[dev["id"]] == 10 and direct[guest["id"]] == 10
    everyone = {m["id"]: m["access_level"] for m in root.get(f"/groups/{sub['id']}/members/all")}
    assert everyone[dev["id"]] == 30 and everyone[guest["id"]] == 10
    assert root.get(f"/groups/{sub['id']}/members/all/{dev['id']}")["access_level"] == 30
    assert root.get(f"/groups/{top['id']}/members/all/{guest['id']}", 404)
    paged = root.client.get(f"/groups/{sub['id']}/members/all", params={"per_page": 1})
    assert paged.headers["x-total"] == str(len(everyone)) and len(paged.json()) == 1


# -- deploy tokens --------------------------------------------------------------------------


def test_group_deploy_tokens(dproxy: DproxyServer, root: Api) -> None:
    group = new_group(root)
    path = f"/groups/{encoded(group)}/deploy_tokens"
    default = root.post(path, {"name": "pull", "scopes": ["read_registry"]})
    assert default["username"] == f"gitlab+deploy-token-{default['id']}"
    assert default["token"].startswith("gldt-")
    assert (default["revoked"], default["expired"], default["expires_at"]) == (False, False, None)
    username = unique("deployer")
    named = root.post(
        path,
        {
            "name": "named",
            "username": username,
            "scopes": ["read_registry", "write_registry"],
            "expires_at": "2099-01-01T00:00:00Z",
        },
    )
    assert named["username"] == username and named["expires_at"].startswith("2099-01-01T00:00:00")
    listed = root.get(path)
    assert [t["id"] for t in listed] == [default["id"], named["id"]]
    assert all("token" not in t for t in listed)
    assert root.get(f"{path}/{named['id']}")["name"] == "named"

    root.post(path, {"name": "x", "username": username, "scopes": ["read_registry"]}, 409)
    root.post(path, {"name": "x", "scopes": ["api"]}, 400)
    root.post(path, {"name": "x", "scopes": []}, 400)
    root.post(path, {"name": "x", "scopes": ["read_registry"], "expires_at": "2001-01-01"}, 400)
    root.post(path, {"name": "x", "username": "gitlab-ci-token", "scopes": ["read_registry"]}, 400)

    root.delete(f"{path}/{default['id']}")
    assert root.get(f"{path}/{default['id']}")["revoked"] is True
    assert [t["id"] for t in root.get(path, params={"active": True})] == [named["id"]]
    other = new_group(root)
    root.get(f"/groups/{other['id']}/deploy_tokens/{named['id']}", 404)
    root.delete(f"/groups/{other['id']}/deploy_tokens/{named['id']}", 404)

    developer, developer_api = new_user(dproxy, root)
    root.post(f"/groups/{group['id']}/members", {"user_id": developer["id"], "access_level": 40})
    developer_api.get(path, 403)
    developer_api.post(path, {"name": "x", "scopes": ["read_registry"]}, 403)
    developer_api.delete(f"{path}/{named['id']}", 403)


# -- group access tokens --------------------------------------------------------------------


def test_group_access_tokens(dproxy: DproxyServer, root: Api) -> None:
    group = new_group(root)
    path = f"/groups/{group['id']}/access_tokens"
    created = root.post(path, {"name": "automation", "scopes": ["api"], "expires_at": "2099-01-01"})
    assert created["access_level"] == 40 and created["token"].startswith("glpat-")
    assert created["active"] and created["expires_at"] == "2099-01-01"
    bot = root.get(f"/users/{created['user_id']}")
    assert bot["bot"] is True and re.fullmatch(
        rf"group_{group['id']}_bot_[0-9a-f]{{32}}", bot["username"]
    )
    member = root.get(f"/groups/{group['id']}/members/{bot['id']}")
    assert member["access_level"] == 40 and member["bot"] is True

    # The token acts as its bot: a Maintainer of the group, so it may read but not manage it.
    bot_api = Api(dproxy, created["token"])
    assert bot_api.get("/user")["id"] == bot["id"]
    bot_api.get(f"/groups/{group['id']}")
    bot_api.get(path, 403)

    owner_token = root.post(path, {"name": "owner", "scopes": ["api"], "access_level": 50})
    assert Api(dproxy, owner_token["token"]).get(path)
    listed = root.get(path)
    assert [(t["id"], t["access_level"]) for t in listed] == [
        (created["id"], 40),
        (owner_token["id"], 50),
    ]
    assert all("token" not in t for t in listed)
    assert root.get(f"{path}/{created['id']}")["name"] == "automation"
    root.post(path, {"name": "x", "scopes": ["api"], "access_level": 60}, 400)
    root.post(path, {"name": "x", "scopes": ["nope"]}, 400)
    personal = root.get("/personal_access_tokens/self")
    root.get(f"{path}/{personal['id']}", 404)  # not a token of this group

    rotated = root.post(f"{path}/{created['id']}/rotate", status=200)
    assert rotated["access_level"] == 40 and rotated["user_id"] == bot["id"]
    bot_api.get("/user", 401)
    rotated_api = Api(dproxy, rotated["token"])
    assert rotated_api.get("/user")["id"] == bot["id"]

    root.delete(f"{path}/{rotated['id']}")
    rotated_api.get("/user", 401)
    assert root.get(f"/users/{bot['id']}")["state"] == "blocked"
    assert root.get(f"{path}/{rotated['id']}")["active"] is False


# -- application settings -------------------------------------------------------------------


def test_application_settings(dproxy: DproxyServer, root: Api) -> None:
    initial = root.get("/application/settings")
    assert initial == {
        "container_registry_token_expire_delay": 15,
        "dependency_proxy_enabled": True,
    }
    _user, user_api = new_user(dproxy, root)
    user_api.get("/application/settings", 403)
    user_api.put("/application/settings", {"dependency_proxy_enabled": False}, 403)
    root.put("/application/settings", {"container_registry_token_expire_delay": 0}, 400)
    changed = root.put("/application/settings", {"container_registry_token_expire_delay": 5})
    assert changed["container_registry_token_expire_delay"] == 5
    try:
        login = httpx.get(
            f"{dproxy.auth_url or dproxy.url}/jwt/auth",
            params={"service": "dependency_proxy"},
            auth=USER,
        )
        assert login.json()["expires_in"] == 300
    finally:
        root.put("/application/settings", {"container_registry_token_expire_delay": 15})
    assert root.get("/application/settings") == initial


def test_fixture_group_is_reachable_by_path(root: Api) -> None:
    group = root.get(f"/groups/{GROUP}")
    assert group["full_path"] == GROUP
    usernames = [m["username"] for m in root.get(f"/groups/{GROUP}/members")]
    assert USER[0] in usernames


# -- limits ---------------------------------------------------------------------------------


def test_limits_are_answered_with_400_never_500(dproxy: DproxyServer, root: Api) -> None:
    group = new_group(root)
    longest = "n" * 255
    assert root.put(f"/groups/{group['id']}", {"name": longest})["name"] == longest
    root.put(f"/groups/{group['id']}", {"name": longest + "n"}, 400)
    root.put(f"/groups/{group['id']}", {"name": "x" * 1_000_000}, 400)
    tokens = f"/groups/{group['id']}/deploy_tokens"
    far = root.post(
        tokens, {"name": longest, "scopes": ["read_registry"], "expires_at": "9999-12-31"}
    )
    assert far["expires_at"].startswith("9999-12-31")
    root.post(
        tokens,
        {"name": "x", "scopes": ["read_registry"], "expires_at": "9999-12-31T23:59:59-01:00"},
        400,
    )
    root.post(tokens, {"name": "x", "scopes": ["read_registry"] * 11}, 400)
    user, _api = new_user(dproxy, root)
    pat = root.post(
        f"/users/{user['id']}/personal_access_tokens",
        {"name": longest, "scopes": ["api"], "expires_at": "9999-12-31"},
    )
    assert pat["expires_at"] == "9999-12-31"
    for path in ("/users/0", "/users/-1", "/users/2147483648", "/users/1e3", "/users/abc"):
        root.get(path, 400)
    root.get("/personal_access_tokens/99999999999999999999999", 400)
    root.get("/groups", 400, params={"page": 10**9})
    root.get("/groups", 400, params={"search": "s" * 256})
    assert root.get("/groups", params={"search": "%_\\"}) == []  # LIKE wildcards are literal
    root.put("/application/settings", {"container_registry_token_expire_delay": 10**12}, 400)
