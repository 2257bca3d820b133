"""docs/ci.md, run: each example block marked `<!-- test: NAME -->` is executed (shell), or
read the way its consumer reads it (a runner's `.gitlab-ci.yml` and `config.toml`), against a
real dproxy. The doc's host names are replaced by the test server's address; nothing else is
changed, so an example that stops working fails here."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml

from tests.conftest import GROUP, Images, start_dproxy
from tests.support import UpstreamRegistry
from tests.support.docs import DOCS, examples
from tests.support.dproxy import DPROXY, DproxyServer
from tests.support.skopeo import SKOPEO_BIN, copy_to_dir, dir_manifest

pytestmark = pytest.mark.e2e

DOC = DOCS / "ci.md"
DOC_SERVER = "dproxy.example.com:443"
SUBGROUP = f"{GROUP}/team"
CAROL = ("carol", "carol-password")  # Guest of the subgroup only


def example(name: str) -> str:
    return examples(DOC)[name]


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamRegistry
) -> Iterator[DproxyServer]:
    dproxy = start_dproxy(tmp_path_factory.mktemp("dproxy"), upstream.url)
    dproxy.add_group("mygroup")  # the doc's group, with the doc's user
    dproxy.add_member("mygroup", "alice")
    dproxy.add_group(SUBGROUP)
    dproxy.add_user(*CAROL)
    dproxy.add_member(SUBGROUP, CAROL[0])
    yield dproxy
    dproxy.stop()


def bash(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return result


def clean_env(server: DproxyServer, workdir: Path) -> dict[str, str]:
    """The dproxy host's environment (so `dproxy` reaches the same database), with an empty
    auth file of its own and the tools on PATH."""
    workdir.mkdir(parents=True, exist_ok=True)
    auth = workdir / "auth.json"
    auth.write_text("{}")
    tools = os.pathsep.join({str(Path(SKOPEO_BIN).parent), str(Path(DPROXY).parent)})
    return {
        **server.env,
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "REGISTRY_AUTH_FILE": str(auth),
        "WORKDIR": str(workdir),
    }


def start_job(server: DproxyServer, group: str, user: str) -> dict[str, str]:
    job = server.api(
        "POST",
        "/ci/jobs",
        {"group_id": server.group_ids[group], "user_id": server.user_ids[user]},
    )
    assert isinstance(job, dict)
    variables: dict[str, str] = job["variables"]
    return variables


def pull_with_auth_config(image: str, auth_config: str, workdir: Path) -> bytes:
    """What a runner does for a job image: DOCKER_AUTH_CONFIG becomes the pull's auth file."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "auth.json").write_text(auth_config)
    copy_to_dir(image, workdir / "image", authfile=workdir / "auth.json")
    return dir_manifest(workdir / "image")


def test_the_runner_api_example(server: DproxyServer, tmp_path: Path) -> None:
    env = {
        **clean_env(server, tmp_path),
        "DPROXY_URL": server.url,
        "ADMIN_TOKEN": server.root_token,
        "GROUP_ID": str(server.group_ids["mygroup"]),
        "USER_ID": str(server.user_ids["alice"]),
    }
    script = example("runner") + '\nprintf %s "$JOB" > "$WORKDIR/job.json"'
    bash(script, env, tmp_path)
    job: dict[str, Any] = json.loads((tmp_path / "job.json").read_text())
    assert job["variables"]["CI_DEPENDENCY_PROXY_PASSWORD"] == job["token"]
    ended = server.api("GET", f"/ci/jobs/{job['id']}")
    assert isinstance(ended, dict) and ended["status"] == "finished"


def test_the_ci_env_example(server: DproxyServer, images: Images, tmp_path: Path) -> None:
    bash(example("ci-env"), clean_env(server, tmp_path), tmp_path)
    assert dir_manifest(tmp_path / "alpine") == images.oci.manifest


def test_the_gitlab_ci_example(server: DproxyServer, images: Images, tmp_path: Path) -> None:
    jobs = yaml.safe_load(example("gitlab-ci"))
    runs_as = {
        "build": (GROUP, "alice"),
        "subgroup-member": (SUBGROUP, CAROL[0]),
        "pull-in-script": (GROUP, "alice"),
    }
    assert set(jobs) == set(runs_as)
    # No Docker engine here: the script's `docker login` and `docker pull` are run by skopeo,
    # with the same arguments.
    docker_shim = (
        'docker() { case "$1" in\n'
        '  login) shift; skopeo login --tls-verify=false "$@" ;;\n'
        '  pull) skopeo copy --src-tls-verify=false "docker://$2" "dir:$WORKDIR/pulled" ;;\n'
        "  *) return 2 ;;\n"
        "esac; }\n"
    )
    for name, job in jobs.items():
        group, user = runs_as[name]
        variables = start_job(server, group, user)
        image = Template(job["image"]).substitute(variables)
        workdir = tmp_path / name
        manifest = pull_with_auth_config(image, variables["DOCKER_AUTH_CONFIG"], workdir)
        assert manifest == images.oci.manifest, name
        env = {**clean_env(server, workdir), **variables}
        bash(docker_shim + "\n".join(job["script"]), env, workdir)
    assert dir_manifest(tmp_path / "pull-in-script" / "pulled") == images.oci.manifest


def test_the_runner_config_toml_example(
    server: DproxyServer, images: Images, tmp_path: Path
) -> None:
    deploy = server.api(
        "POST",
        f"/groups/{server.group_ids['mygroup']}/deploy_tokens",
        {"name": "runner", "scopes": ["read_registry"]},
    )
    assert isinstance(deploy, dict)
    basic = base64.b64encode(f"{deploy['username']}:{deploy['token']}".encode()).decode()
    text = (
        example("config-toml")
        .replace(DOC_SERVER, server.address)
        .replace("BASE64_OF_DEPLOY_USER_COLON_TOKEN", basic)
    )
    runner = tomllib.loads(text)["runners"][0]
    environment = dict(item.split("=", 1) for item in runner["environment"])
    manifest = pull_with_auth_config(
        runner["docker"]["image"], environment["DOCKER_AUTH_CONFIG"], tmp_path
    )
    assert manifest == images.oci.manifest
