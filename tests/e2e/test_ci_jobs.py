"""CI jobs: a runner starts a job, and the job pulls with nothing but the predefined variables.

The runner is simulated the way GitLab Runner behaves: it writes `DOCKER_AUTH_CONFIG` into the
job's auth file and pulls `${CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX}/alpine:latest` (here with
skopeo), then ends the job, after which its token is refused.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GROUP, Images, start_dproxy
from tests.support import UpstreamRegistry
from tests.support.dproxy import DproxyServer
from tests.support.podman import private_podman
from tests.support.skopeo import copy_to_dir, dir_manifest

pytestmark = pytest.mark.e2e

SUBGROUP = f"{GROUP}/team"
MEMBER = ("carol", "carol-password")  # Guest of the subgroup only
OUTSIDER = ("dave", "dave-password")  # no membership at all


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamRegistry
) -> Iterator[DproxyServer]:
    # Re-check credentials quickly, so an ended job is refused on /v2 within a second.
    dproxy = start_dproxy(
        tmp_path_factory.mktemp("dproxy"),
        upstream.url,
        env={"DPROXY_ACTOR_RECHECK_SECONDS": "1"},
    )
    dproxy.add_group(SUBGROUP)
    for user in (MEMBER, OUTSIDER):
        dproxy.add_user(*user)
    dproxy.add_member(SUBGROUP, MEMBER[0])
    yield dproxy
    dproxy.stop()


def call(dproxy: DproxyServer, method: str, path: str, token: str | None, **kw: Any) -> Any:
    headers = {"PRIVATE-TOKEN": token} if token else {}
    return httpx.request(method, f"{dproxy.api_url}{path}", headers=headers, timeout=30, **kw)


@pytest.fixture(scope="module")
def runner_token(server: DproxyServer) -> str:
    created = call(server, "POST", "/user/runners", server.root_token, json={"description": "ci-1"})
    assert created.status_code == 201, created.text
    token: str = created.json()["token"]
    assert token.startswith("glrt-")
    return token


def start_job(dproxy: DproxyServer, runner: str, group: str, user: str) -> dict[str, Any]:
    response = call(
        dproxy,
        "POST",
        "/ci/jobs",
        runner,
        json={"group_id": dproxy.group_ids[group], "user_id": dproxy.user_ids[user]},
    )
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def job_login_status(dproxy: DproxyServer, token: str) -> int:
    """How `/jwt/auth` answers a job token's login."""
    login = httpx.get(
        dproxy.token_url,
        params={"service": "dependency_proxy"},
        auth=("gitlab-ci-token", token),
        timeout=10,
    )
    return login.status_code


def pull_as_runner(
    variables: dict[str, str], image: str, workdir: Path, *, check: bool = True
) -> bool:
    """What a runner does with a job's variables: DOCKER_AUTH_CONFIG becomes the auth file,
    and the image name is built from a prefix variable, never typed by hand."""
    workdir.mkdir(parents=True, exist_ok=True)
    auth = workdir / "auth.json"
    auth.write_text(variables["DOCKER_AUTH_CONFIG"])
    result = copy_to_dir(
        f"{image}:latest",
        workdir / "image",
        authfile=auth,
        check=check,
    )
    return result.ok


def test_a_runner_job_pulls_with_the_predefined_variables_alone(
    server: DproxyServer, runner_token: str, images: Images, tmp_path: Path
) -> None:
    job = start_job(server, runner_token, GROUP, "alice")
    variables = job["variables"]
    address = f"127.0.0.1:{server.port}"
    prefix = f"{address}/grp/dependency_proxy/containers"
    basic = base64.b64encode(f"gitlab-ci-token:{job['token']}".encode()).decode()
    assert variables == {
        "CI_DEPENDENCY_PROXY_USER": "gitlab-ci-token",
        "CI_DEPENDENCY_PROXY_PASSWORD": job["token"],
        "CI_DEPENDENCY_PROXY_SERVER": address,
        "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX": prefix,
        "CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX": prefix,
        "DOCKER_AUTH_CONFIG": json.dumps(
            {"auths": {address: {"auth": basic}}}, separators=(",", ":")
        ),
    }
    assert job["token"].startswith("glcbt-") and job["status"] == "running"
    expires = datetime.fromisoformat(job["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=1))) < timedelta(minutes=1)

    pull_as_runner(variables, f"{prefix}/alpine", tmp_path / "job")
    assert dir_manifest(tmp_path / "job" / "image") == images.oci.manifest

    # The job ends: its token no longer logs in, and a registry token it already had stops
    # working within the re-check interval.
    bearer = server.registry_token(
        "gitlab-ci-token",
        job["token"],
        "repository:grp/dependency_proxy/containers/alpine:pull",
    )
    assert call(server, "DELETE", f"/ci/jobs/{job['id']}", runner_token).status_code == 204
    state = call(server, "GET", f"/ci/jobs/{job['id']}", runner_token).json()
    assert state["status"] == "finished" and state["finished_at"]
    assert not pull_as_runner(variables, f"{prefix}/alpine", tmp_path / "after", check=False)
    assert job_login_status(server, job["token"]) == 401
    manifest = f"{server.url}/v2/grp/dependency_proxy/containers/alpine/manifests/latest"
    deadline = time.monotonic() + 10
    status = 200
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        status = httpx.get(
            manifest, headers={"Authorization": f"Bearer {bearer}"}, timeout=10
        ).status_code
    assert status == 401


def test_podman_pulls_a_job_image_with_the_job_auth_config(
    server: DproxyServer, runner_token: str, images: Images, tmp_path: Path
) -> None:
    """podman, as a runner's shell executor would use it: `--authfile` holding the job's
    DOCKER_AUTH_CONFIG, the image named by the prefix variable."""
    variables = start_job(server, runner_token, GROUP, "alice")["variables"]
    auth = tmp_path / "auth.json"
    auth.write_text(variables["DOCKER_AUTH_CONFIG"])
    image = f"{variables['CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX']}/alpine:latest"
    with private_podman(tmp_path / "podman") as podman:
        env = dict(os.environ)
        podman("pull", "--tls-verify=false", "--authfile", str(auth), image, env=env)
        (listed,) = json.loads(podman("images", "--format", "json", env=env))
        assert listed["Digest"] == images.oci.digest


def test_a_subgroup_member_pulls_through_the_direct_prefix_only(
    server: DproxyServer, runner_token: str, tmp_path: Path
) -> None:
    job = start_job(server, runner_token, SUBGROUP, MEMBER[0])
    variables = job["variables"]
    address = variables["CI_DEPENDENCY_PROXY_SERVER"]
    assert variables["CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX"] == (
        f"{address}/grp/dependency_proxy/containers"
    )
    assert variables["CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX"] == (
        f"{address}/grp/team/dependency_proxy/containers"
    )
    direct = variables["CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX"]
    assert pull_as_runner(variables, f"{direct}/alpine", tmp_path / "direct")
    root = variables["CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX"]
    assert not pull_as_runner(variables, f"{root}/alpine", tmp_path / "root", check=False)


def test_dproxy_ci_env_prints_export_lines_that_work(
    server: DproxyServer, images: Images, tmp_path: Path
) -> None:
    out = server.cli("ci", "env", "--group", "GRP/Team", "--user", MEMBER[0])
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    variables = {}
    for line in lines:
        assert line.startswith("export ")
        # What a shell makes of the line: quoted values come back intact.
        name, _, value = shlex.split(line.removeprefix("export "))[0].partition("=")
        variables[name] = value
    assert json.loads(variables["DOCKER_AUTH_CONFIG"])["auths"].keys() == {
        variables["CI_DEPENDENCY_PROXY_SERVER"]
    }
    direct = variables["CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX"]
    assert direct.endswith("/grp/team/dependency_proxy/containers")
    assert pull_as_runner(variables, f"{direct}/alpine", tmp_path / "cli")
    assert dir_manifest(tmp_path / "cli" / "image") == images.oci.manifest


def test_who_may_start_and_end_jobs(server: DproxyServer, runner_token: str) -> None:
    body = {"group_id": server.group_ids[GROUP], "user_id": server.user_ids["alice"]}
    assert call(server, "POST", "/ci/jobs", None, json=body).status_code == 401
    assert call(server, "POST", "/ci/jobs", "glrt-not-a-runner", json=body).status_code == 401
    alice = call(
        server,
        "POST",
        f"/users/{server.user_ids['alice']}/personal_access_tokens",
        server.root_token,
        json={"name": "alice", "scopes": ["api"]},
    ).json()["token"]
    refused = call(server, "POST", "/ci/jobs", alice, json=body)
    assert refused.status_code == 403 and refused.json()["message"] == "403 Forbidden"
    # Runners are an admin's to create, too.
    assert call(server, "POST", "/user/runners", alice, json={}).status_code == 403

    # An admin may start jobs without a runner; a runner sees only its own jobs.
    by_admin = call(server, "POST", "/ci/jobs", server.root_token, json=body)
    assert by_admin.status_code == 201 and by_admin.json()["runner_id"] is None
    job_id = by_admin.json()["id"]
    assert call(server, "GET", f"/ci/jobs/{job_id}", runner_token).status_code == 404
    assert call(server, "DELETE", f"/ci/jobs/{job_id}", runner_token).status_code == 404
    assert call(server, "DELETE", f"/ci/jobs/{job_id}", server.root_token).status_code == 204


def test_bad_job_requests_get_a_message(server: DproxyServer, runner_token: str) -> None:
    group = server.group_ids[GROUP]
    for body, status in (
        ({"group_id": group}, 400),
        ({"group_id": group, "user_id": server.user_ids["alice"], "timeout": 5}, 400),
        ({"group_id": "grp", "user_id": server.user_ids["alice"]}, 400),
        ({"group_id": 999_999, "user_id": server.user_ids["alice"]}, 404),
        ({"group_id": group, "user_id": 999_999}, 404),
        # A job whose token could not pull from its own group is refused up front.
        ({"group_id": group, "user_id": server.user_ids[OUTSIDER[0]]}, 400),
    ):
        response = call(server, "POST", "/ci/jobs", runner_token, json=body)
        assert response.status_code == status, (body, response.text)
        assert "message" in response.json()
    assert call(server, "GET", "/ci/jobs/999999", runner_token).status_code == 404
    assert call(server, "DELETE", "/ci/jobs/0", runner_token).status_code == 400


def test_deleting_a_runner_ends_its_jobs(server: DproxyServer, tmp_path: Path) -> None:
    created = call(server, "POST", "/user/runners", server.root_token, json={}).json()
    listed = call(server, "GET", "/runners/all", server.root_token).json()
    assert created["id"] in {runner["id"] for runner in listed}
    job = start_job(server, created["token"], GROUP, "alice")
    prefix = job["variables"]["CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX"]
    assert pull_as_runner(job["variables"], f"{prefix}/alpine", tmp_path / "before")
    deleted = call(server, "DELETE", f"/runners/{created['id']}", server.root_token)
    assert deleted.status_code == 204
    assert call(server, "POST", "/ci/jobs", created["token"], json={}).status_code == 401
    assert job_login_status(server, job["token"]) == 401
