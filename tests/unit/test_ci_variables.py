"""CI_DEPENDENCY_PROXY_* from the external URL: the port is always there (Docker keys stored
credentials by the exact server string), hosts and group paths are lowercase."""

from __future__ import annotations

import base64
import json

import pytest

from dproxy_auth.ci import job_variables, registry_server


@pytest.mark.parametrize(
    ("external_url", "server"),
    [
        ("https://GitLab.Example.com", "gitlab.example.com:443"),
        ("https://gitlab.example.com/", "gitlab.example.com:443"),
        ("http://proxy.internal", "proxy.internal:80"),
        ("https://proxy.internal:8443", "proxy.internal:8443"),
        ("http://127.0.0.1:5000", "127.0.0.1:5000"),
        ("https://[2001:DB8::1]", "[2001:db8::1]:443"),
        ("http://[::1]:5000", "[::1]:5000"),
    ],
)
def test_the_server_always_carries_its_port(external_url: str, server: str) -> None:
    assert registry_server(external_url) == server


def test_prefixes_name_the_root_group_and_the_jobs_own_group() -> None:
    variables = job_variables(
        external_url="https://dproxy.example.com",
        group_full_path="top/sub/leaf",
        job_token="glcbt-secret",
    )
    assert variables["CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX"] == (
        "dproxy.example.com:443/top/dependency_proxy/containers"
    )
    assert variables["CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX"] == (
        "dproxy.example.com:443/top/sub/leaf/dependency_proxy/containers"
    )
    auths = json.loads(variables["DOCKER_AUTH_CONFIG"])["auths"]
    assert list(auths) == ["dproxy.example.com:443"]
    decoded = base64.b64decode(auths["dproxy.example.com:443"]["auth"]).decode()
    assert decoded == "gitlab-ci-token:glcbt-secret"
