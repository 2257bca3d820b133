"""GitLab CI's predefined Dependency Proxy variables (SPEC §7), computed from the external URL.

Docker keys stored credentials by the exact server string in the image name. GitLab puts the
port into `CI_DEPENDENCY_PROXY_SERVER` and both image prefixes, even when it is the scheme's
default, so that `docker login $CI_DEPENDENCY_PROXY_SERVER` and a pull of
`$CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX/alpine` use the same key; dproxy does the same.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlsplit

from dproxy_auth.tokens import JOB_TOKEN_USERNAME
from dproxy_shared.oci.reference import PROXY_INFIX

DEFAULT_PORTS = {"http": 80, "https": 443}
# Seconds a job token lives unless the job ends first: GitLab's default job timeout, and its
# longest (a month).
DEFAULT_JOB_TIMEOUT = 3600
MIN_JOB_TIMEOUT = 60
MAX_JOB_TIMEOUT = 30 * 24 * 3600


def registry_server(external_url: str) -> str:
    """`host:port` of the external URL, the port always present, the host lowercase."""
    parts = urlsplit(external_url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 443)
    return f"{host}:{port}"


def image_prefix(server: str, group_full_path: str) -> str:
    return f"{server}/{group_full_path.lower()}/{PROXY_INFIX}"


def docker_auth_config(server: str, username: str, password: str) -> str:
    """What a runner reads from `DOCKER_AUTH_CONFIG`: the `auths` section of a config.json."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {server: {"auth": auth}}}, separators=(",", ":"))


def job_variables(*, external_url: str, group_full_path: str, job_token: str) -> dict[str, str]:
    """The variables of a job running in the group `group_full_path`."""
    server = registry_server(external_url)
    root_path = group_full_path.split("/", 1)[0]
    return {
        "CI_DEPENDENCY_PROXY_USER": JOB_TOKEN_USERNAME,
        "CI_DEPENDENCY_PROXY_PASSWORD": job_token,
        "CI_DEPENDENCY_PROXY_SERVER": server,
        "CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX": image_prefix(server, root_path),
        "CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX": image_prefix(server, group_full_path),
        "DOCKER_AUTH_CONFIG": docker_auth_config(server, JOB_TOKEN_USERNAME, job_token),
    }
