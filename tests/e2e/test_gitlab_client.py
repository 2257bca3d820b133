"""The real python-gitlab client manages dproxy, and every credential it creates pulls an image
through skopeo; the ones it revokes are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gitlab
import pytest
from gitlab.const import AccessLevel

from tests.support.dproxy import DproxyServer
from tests.support.skopeo import copy_to_dir

pytestmark = pytest.mark.e2e

IMAGE = "alpine:latest"  # the upstream holds library/alpine:latest


@pytest.fixture(scope="module")
def gl(module_dproxy: DproxyServer) -> Iterator[gitlab.Gitlab]:
    base = module_dproxy.auth_url or module_dproxy.url
    with gitlab.Gitlab(base, private_token=module_dproxy.root_token) as client:
        client.auth()
        yield client


def pull(dproxy: DproxyServer, group: str, creds: tuple[str, str], dest: Path) -> bool:
    result = copy_to_dir(dproxy.image(group, IMAGE), dest, creds=creds, check=False)
    return result.ok


def test_python_gitlab_manages_identities_that_pull(
    module_dproxy: DproxyServer, gl: gitlab.Gitlab, tmp_path: Path
) -> None:
    assert gl.user is not None and gl.user.username == "root"

    user = gl.users.create(
        {"username": "dora", "name": "Dora", "email": "dora@example.com", "password": "dora-pw-1"}
    )
    assert gl.users.list(username="dora")[0].id == user.id
    team = gl.groups.create({"name": "Team", "path": "team"})
    sub = gl.groups.create({"name": "Sub", "path": "sub", "parent_id": team.id})
    assert gl.groups.get("team/sub").id == sub.id  # python-gitlab sends `team%2Fsub`
    assert [group.id for group in team.subgroups.list()] == [sub.id]
    assert {group.full_path for group in gl.groups.list(get_all=True)} >= {"team", "team/sub"}

    team.members.create({"user_id": user.id, "access_level": AccessLevel.GUEST})
    assert {m.username for m in team.members.list(get_all=True)} == {"root", "dora"}
    inherited = {m.username: m.access_level for m in sub.members_all.list(get_all=True)}
    assert inherited["dora"] == AccessLevel.GUEST

    pat = user.personal_access_tokens.create({"name": "pull", "scopes": ["read_registry"]})
    deploy = sub.deploytokens.create({"name": "ci", "scopes": ["read_registry"]})
    group_token = team.access_tokens.create(
        {"name": "bot", "scopes": ["read_registry"], "access_level": AccessLevel.REPORTER}
    )
    doomed = sub.deploytokens.create(
        {"name": "doomed", "username": "doomed-deployer", "scopes": ["read_registry"]}
    )
    assert pat.token.startswith("glpat-") and group_token.token.startswith("glpat-")
    assert (
        deploy.token.startswith("gldt-") and deploy.username == f"gitlab+deploy-token-{deploy.id}"
    )

    listed_pats = gl.personal_access_tokens.list(user_id=user.id, get_all=True)
    assert [t.id for t in listed_pats] == [pat.id]
    assert not hasattr(listed_pats[0], "token")  # shown once, on creation
    assert {t.id for t in sub.deploytokens.list(get_all=True)} == {deploy.id, doomed.id}
    assert [(t.id, t.access_level) for t in team.access_tokens.list(get_all=True)] == [
        (group_token.id, AccessLevel.REPORTER)
    ]

    sub.deploytokens.delete(doomed.id)
    assert sub.deploytokens.get(doomed.id).revoked is True

    # Rotation through the client: the new value works, the old one is revoked.
    rotated = gl.personal_access_tokens.get(pat.id)
    old_value = pat.token
    rotated.rotate()
    assert rotated.token != old_value and rotated.id != pat.id

    credentials = {
        "personal access token": ("dora", rotated.token),
        "deploy token": (deploy.username, deploy.token),
        "group access token": ("any-name", group_token.token),
    }
    for name, creds in credentials.items():
        assert pull(module_dproxy, "team/sub", creds, tmp_path / name), name
    # A new login checks the credential at once: revoked tokens are refused immediately.
    refused = {
        "revoked deploy token": ("doomed-deployer", doomed.token),
        "rotated-away personal access token": ("dora", old_value),
    }
    for name, creds in refused.items():
        assert not pull(module_dproxy, "team/sub", creds, tmp_path / name), name

    group_token.delete()  # revokes it; its bot is blocked
    assert not pull(module_dproxy, "team/sub", ("any-name", group_token.token), tmp_path / "gat")
    assert gl.users.get(group_token.user_id).state == "blocked"
