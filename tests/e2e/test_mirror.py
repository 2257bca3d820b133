"""dproxy as a transparent `docker.io` mirror, and the imagePullSecret route, with real
runtimes: containerd (`hosts.toml`, `override_path`), skopeo and podman (`registries.conf`
mirrors with a path).

Every configuration comes from docs/kubernetes.md (`tests.support.docs`): the tests replace
only the documented placeholders, so the page cannot drift from what works.

Nothing may leave this machine. The Docker Hub fallback of every configuration (`server` in
`hosts.toml`, the `[[registry]]` `location`) is replaced by a closed port on 127.0.0.1, and each
configuration is checked to name loopback hosts only before a runtime reads it: a runtime that
gives up on the mirror then fails on 127.0.0.1 instead of looking up registry-1.docker.io.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import subprocess
import sysconfig
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.conftest import USER, Images, start_dproxy
from tests.support import UpstreamRegistry
from tests.support.containerd import Containerd
from tests.support.docs import DOCS, examples, parse_curl, send_curl, shell_words, substitute
from tests.support.dproxy import DproxyServer
from tests.support.podman import Podman, private_podman
from tests.support.skopeo import copy_to_dir, dir_manifest, run_skopeo
from tests.support.upstream import free_port

pytestmark = pytest.mark.e2e

DOC = DOCS / "kubernetes.md"
IMAGE = "docker.io/library/alpine:latest"
# The placeholders of docs/kubernetes.md.
DOC_HOST = "dproxy.example.com"
DOC_GROUP = "mygroup"
DOC_HUB_SERVER = "https://registry-1.docker.io"  # containerd's fallback
DOC_HUB_LOCATION = 'location = "docker.io"'  # registries.conf's fallback
DOC_HOSTS_DIR = "/etc/containerd/certs.d"

_groups = itertools.count(1)
_ACCESS_LINE = re.compile(
    r'^INFO: +\S+ - "(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})', re.M
)


@pytest.fixture(scope="module")
def doc() -> dict[str, str]:
    return examples(DOC)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamRegistry
) -> Iterator[DproxyServer]:
    """One dproxy for the module (each test has a group of its own), logging every request:
    its access log is how the tests see what a runtime really sent."""
    dproxy = start_dproxy(
        tmp_path_factory.mktemp("mirror-dproxy"), upstream.url, env={"DPROXY_LOG_LEVEL": "info"}
    )
    yield dproxy
    dproxy.stop()


@dataclass
class Mirror:
    """A fresh group on the module's dproxy, with alice a Guest of it."""

    server: DproxyServer
    group: str
    log_offset: int
    hub: str  # 127.0.0.1:<closed port>, standing in for Docker Hub as the fallback

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, target, status) of what dproxy served since the test began, from uvicorn's
        access log (`INFO:     127.0.0.1:PORT - "GET /v2/…?ns=docker.io HTTP/1.1" 200 OK`)."""
        text = self.server.log()[self.log_offset :]
        return [(m["method"], m["target"], int(m["status"])) for m in _ACCESS_LINE.finditer(text)]

    def cached_manifests(self) -> list[dict[str, Any]]:
        group_id = self.server.group_ids[self.group]
        rows = self.server.api("GET", f"/groups/{group_id}/dependency_proxy/manifests")
        assert isinstance(rows, list)
        return rows

    def deploy_token(self, doc: dict[str, str]) -> tuple[str, str]:
        """A deploy token of the group, made with the documented request."""
        command = substitute(
            doc["create-deploy-token"],
            {
                f"https://{DOC_HOST}": self.server.url,
                f"/groups/{DOC_GROUP}/": f"/groups/{self.group}/",
            },
        )
        created = send_curl(parse_curl(command, {"OWNER_TOKEN": self.server.root_token}))
        assert isinstance(created, dict)
        documented = json.loads(doc["deploy-token-response"])
        assert created.keys() == documented.keys()
        assert created["scopes"] == documented["scopes"] == ["read_registry"]
        return str(created["username"]), str(created["token"])


@pytest.fixture
def mirror(server: DproxyServer) -> Mirror:
    group = f"mirror-{next(_groups)}"
    server.add_group(group)
    server.add_member(group, USER[0])
    return Mirror(server, group, len(server.log()), f"127.0.0.1:{free_port()}")


def credentials(mirror: Mirror, doc: dict[str, str], kind: str) -> dict[str, str]:
    """The documented `$DEPLOY_USER` / `$DEPLOY_TOKEN`: a deploy token (the imagePullSecret
    case), or alice's own password (a developer's `ctr --user`)."""
    user, secret = mirror.deploy_token(doc) if kind == "deploy-token" else USER
    return {"DEPLOY_USER": user, "DEPLOY_TOKEN": secret}


def assert_served(mirror: Mirror, images: Images, repository: str = "library/alpine") -> None:
    """dproxy, not a fallback, served the image: by its access log (under the group) and by
    the group's cached manifests (the API)."""
    prefix = f"/v2/{mirror.group}/dependency_proxy/containers/{repository}/"
    served = {(m, urlsplit(t).path) for m, t, status in mirror.requests() if status == 200}
    # The tag resolved (containerd HEADs it, then GETs the manifest by digest), the manifest
    # and every blob fetched.
    tag, digest = prefix + "manifests/latest", f"{prefix}manifests/{images.oci.digest}"
    assert served & {("HEAD", tag), ("GET", tag)}, mirror.requests()
    assert served & {("GET", tag), ("GET", digest)}, mirror.requests()
    for blob in images.oci.blobs:
        assert ("GET", f"{prefix}blobs/{blob.digest}") in served, blob
    cached = {row["digest"] for row in mirror.cached_manifests()}
    assert images.oci.digest in cached, cached


def loopback_only(urls: list[str]) -> None:
    """The safety net: every host a runtime may contact is this machine."""
    assert urls
    for url in urls:
        host = urlsplit(url if "://" in url else f"//{url}").hostname
        assert host == "127.0.0.1", f"{url} would leave this machine"


# -- containerd -----------------------------------------------------------------------------


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Containerd]:
    # One daemon per test: containerd shares content between namespaces, and each test must
    # see a runtime that has never pulled the image.
    with Containerd(tmp_path / "containerd") as daemon:
        yield daemon


def hosts_dir(mirror: Mirror, doc: dict[str, str], root: Path) -> Path:
    """DIR/docker.io/hosts.toml from the doc, for `ctr --hosts-dir DIR`."""
    text = substitute(
        doc["containerd-hosts"],
        {
            DOC_HUB_SERVER: f"http://{mirror.hub}",
            f"https://{DOC_HOST}": mirror.server.url,
            f"/v2/{DOC_GROUP}/": f"/v2/{mirror.group}/",
        },
    )
    config = tomllib.loads(text)
    loopback_only([config["server"], *config["host"]])
    assert [h["override_path"] for h in config["host"].values()] == [True]
    path = root / "certs.d" / "docker.io" / "hosts.toml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return root / "certs.d"


@pytest.mark.parametrize("kind", ["password", "deploy-token"])
def test_containerd_pulls_docker_hub_names_through_the_mirror(
    mirror: Mirror,
    containerd: Containerd,
    images: Images,
    doc: dict[str, str],
    tmp_path: Path,
    kind: str,
) -> None:
    certs = hosts_dir(mirror, doc, tmp_path)
    command = substitute(doc["ctr-pull"], {DOC_HOSTS_DIR: str(certs)})
    argv = shell_words(command, credentials(mirror, doc, kind))
    assert argv[:3] == ["ctr", "images", "pull"] and argv[-1] == IMAGE
    pulled = containerd.ctr(*argv[1:], timeout=120)
    assert "unpacking linux/amd64" in pulled.stdout, pulled.stdout  # unpacked: a usable image

    listed = containerd.ctr("images", "ls", timeout=30).stdout
    assert re.search(rf"^{re.escape(IMAGE)}\s+\S+\s+{images.oci.digest}\s", listed, re.M), listed
    assert_served(mirror, images)
    mirror_requests = [t for _, t, _ in mirror.requests() if t.startswith(f"/v2/{mirror.group}/")]
    assert mirror_requests
    for target in mirror_requests:
        assert parse_qs(urlsplit(target).query) == {"ns": ["docker.io"]}, target
    # containerd's token request with credentials: the OAuth2 password grant, answered at once
    # (a 4xx would have made it fall back to GET).
    token_requests = [(m, s) for m, t, s in mirror.requests() if t.startswith("/jwt/auth")]
    assert token_requests and token_requests[0] == ("POST", 200), token_requests


def test_node_configs_agree_with_the_tested_examples(doc: dict[str, str]) -> None:
    """The CRI plugin cannot run here (no kubelet, no CNI), so its part is checked against the
    other examples: `config_path` is the directory `hosts.toml` lives in, and the credentials
    are keyed by the mirror's host, the key containerd looks them up by."""
    cri = tomllib.loads(doc["containerd-cri"])["plugins"]["io.containerd.grpc.v1.cri"]
    hosts_comment = doc["containerd-hosts"].splitlines()[0]
    assert hosts_comment == f"# {cri['registry']['config_path']}/docker.io/hosts.toml"
    assert f"--hosts-dir {cri['registry']['config_path']}" in doc["ctr-pull"]
    (mirror_url,) = tomllib.loads(doc["containerd-hosts"])["host"]
    (host,) = cri["registry"]["configs"]
    assert host == urlsplit(mirror_url).netloc == DOC_HOST
    assert set(cri["registry"]["configs"][host]["auth"]) == {"username", "password"}
    assert tomllib.loads(doc["crio-conf"])["crio"]["image"]["global_auth_file"].endswith(
        "/auth.json"
    )


# -- registries.conf: skopeo and podman -----------------------------------------------------


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    with private_podman(tmp_path / "podman") as client:
        yield client


def registries_conf(mirror: Mirror, doc: dict[str, str], path: Path) -> Path:
    prefix = f"{mirror.server.address}/{mirror.group}"
    mirror_location = f'location = "{prefix}/dependency_proxy/containers"'
    text = substitute(
        doc["registries-conf"],
        {
            DOC_HUB_LOCATION: f'location = "{mirror.hub}"',
            f'location = "{DOC_HOST}/{DOC_GROUP}/': f'location = "{prefix}/',
        },
    )
    # dproxy speaks plain HTTP here: the one line the doc says to add for that.
    text = substitute(text, {mirror_location: f"{mirror_location}\ninsecure = true"})
    (registry,) = tomllib.loads(text)["registry"]
    loopback_only([registry["location"], *(m["location"] for m in registry["mirror"])])
    path.write_text(text)
    return path


def auth_json(mirror: Mirror, doc: dict[str, str], login: dict[str, str], directory: Path) -> Path:
    """auth.json written by the documented command, run by bash as a reader would."""
    script = substitute(doc["auth-json"], {DOC_HOST: mirror.server.address})
    env = {"PATH": os.environ["PATH"], **login}
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=directory, env=env, timeout=30, check=True
    )
    return directory / "auth.json"


def effective_registries(podman: Podman, env: dict[str, str]) -> dict[str, Any]:
    """The registries configuration the containers tools will really use (drop-ins in
    /etc/containers/registries.conf.d merged), before any of them pulls."""
    info = json.loads(podman("info", "--format", "json", env=env, timeout=60))
    registries: dict[str, Any] = info["registries"]
    registries.pop("search", None)
    return registries


@pytest.mark.parametrize("client", ["skopeo", "podman"])
@pytest.mark.parametrize("kind", ["password", "deploy-token"])
def test_registries_conf_mirror_with_a_path(
    mirror: Mirror,
    podman: Podman,
    images: Images,
    doc: dict[str, str],
    tmp_path: Path,
    client: str,
    kind: str,
) -> None:
    conf = registries_conf(mirror, doc, tmp_path / "registries.conf")
    login = credentials(mirror, doc, kind)
    auth = auth_json(mirror, doc, login, tmp_path)
    env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf), "REGISTRY_AUTH_FILE": str(auth)}
    registries = effective_registries(podman, env)
    assert set(registries) == {"docker.io"}, registries
    loopback_only(
        [
            registries["docker.io"]["Location"],
            *(m["Location"] for m in registries["docker.io"]["Mirrors"]),
        ]
    )

    if client == "skopeo":
        dest = tmp_path / "alpine"
        result = run_skopeo(
            [
                "--registries-conf",
                str(conf),
                "copy",
                "--quiet",
                "--src-authfile",
                str(auth),
                f"docker://{IMAGE}",
                f"dir:{dest}",
            ]
        )
        assert result.ok, result.stderr
        assert dir_manifest(dest) == images.oci.manifest
    else:
        words = shell_words(doc["podman-pull"], {})
        assignments = dict(w.split("=", 1) for w in itertools.takewhile(lambda w: "=" in w, words))
        command = words[len(assignments) :]
        assert command == ["podman", "pull", IMAGE]
        assert assignments == {"REGISTRY_AUTH_FILE": "auth.json"}
        # The doc's relative auth.json: podman runs in the directory the doc's command wrote.
        (podman.root / "auth.json").write_bytes(auth.read_bytes())
        podman(*command[1:], env={**env, **assignments})
        listed = json.loads(podman("images", "--format", "json", env=env))
        assert [(i["Names"], i["Digest"]) for i in listed] == [([IMAGE], images.oci.digest)]
    assert_served(mirror, images)
    # The token was asked for with the auth.json's credential (GET, Basic auth, `account=`).
    accounts = [
        parse_qs(urlsplit(t).query).get("account") for _, t, _ in mirror.requests() if "/jwt/" in t
    ]
    assert accounts and all(a == [login["DEPLOY_USER"]] for a in accounts), accounts


# -- imagePullSecret ------------------------------------------------------------------------


def kubectl() -> str:
    venv_kubectl = Path(sysconfig.get_path("scripts")) / "kubectl"
    return str(venv_kubectl) if venv_kubectl.is_file() else "kubectl"


def test_image_pull_secret_with_the_full_image_name(
    mirror: Mirror, images: Images, doc: dict[str, str], tmp_path: Path
) -> None:
    command = substitute(
        doc["pull-secret"],
        {f"--docker-server={DOC_HOST}": f"--docker-server={mirror.server.address}"},
    )
    argv = shell_words(command, credentials(mirror, doc, "deploy-token"))
    assert argv[0] == "kubectl"
    # Client-side only: the Secret kubectl would create, and no cluster to ask.
    rendered = subprocess.run(
        [kubectl(), *argv[1:], "--dry-run=client", "--output=json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "no-kubeconfig")},
        check=True,
    )
    secret = json.loads(rendered.stdout)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    auth = tmp_path / "config.json"
    auth.write_bytes(base64.b64decode(secret["data"][".dockerconfigjson"]))

    pod_text = substitute(
        doc["pod"],
        {f"{DOC_HOST}/{DOC_GROUP}/": f"{mirror.server.address}/{mirror.group}/"},
    )
    pod = yaml.safe_load(pod_text)
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    assert pod["spec"]["imagePullSecrets"] == [{"name": secret["metadata"]["name"]}]
    assert pod["metadata"]["namespace"] == secret["metadata"]["namespace"]
    (container,) = pod["spec"]["containers"]

    # The kubelet hands the runtime the secret's entry for the image's registry; skopeo reads
    # the very same Docker config.json.
    dest = tmp_path / "alpine"
    copy_to_dir(container["image"], dest, authfile=auth)
    assert dir_manifest(dest) == images.oci.manifest
    assert_served(mirror, images, repository="alpine")
