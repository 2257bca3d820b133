"""Schemathesis against the running dproxy's OpenAPI document, as root: no request the schema
allows may cause a 5xx, and the management API's answers must match what it documents.

Each operation gets examples with generated path parameters (mostly unknown ids: the 404
paths) and examples anchored to real resources made for it (a group with a member, a deploy
token, a group access token, a runner, a CI job), so bodies and queries are fuzzed where the
handlers do work.
Bounded and deterministic: a few derandomized examples per operation, no example database.
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.dproxy import DproxyServer

pytestmark = pytest.mark.e2e

GENERATED_EXAMPLES = 6
ANCHORED_EXAMPLES = 20
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Credentials are sent by the test, not generated: the document lists the token headers as
# parameters (see `dproxy_auth.deps.get_caller`).
AUTH_HEADERS = {"private-token", "authorization"}


class RootToken:
    """Root's API token, replaced whenever the fuzzer revokes it (`DELETE …/self` does).

    A spare token mints replacements quickly; the CLI is the last resort when the fuzzer has
    revoked that one too (tokens ids are small integers, which it tries early).
    """

    def __init__(self, dproxy: DproxyServer) -> None:
        self._dproxy = dproxy
        self.api = f"{dproxy.auth_url or dproxy.url}/api/v4"
        self._spare = self._mint_spare()
        self._current = self._mint(self._spare) or dproxy.root_token

    def _mint_spare(self) -> str:
        return self._dproxy.cli(
            "tokens", "create", "--user", "root", "--name", "spare", "--scope", "api"
        )

    def _mint(self, with_token: str) -> str | None:
        me = httpx.get(f"{self.api}/user", headers={"PRIVATE-TOKEN": with_token})
        if me.status_code != 200:
            return None
        created = httpx.post(
            f"{self.api}/users/{me.json()['id']}/personal_access_tokens",
            headers={"PRIVATE-TOKEN": with_token},
            json={"name": "fuzz", "scopes": ["api"]},
        )
        return str(created.json()["token"]) if created.status_code == 201 else None

    def valid(self) -> str:
        if httpx.get(f"{self.api}/user", headers={"PRIVATE-TOKEN": self._current}).is_success:
            return self._current
        minted = self._mint(self._spare)
        if minted is None:
            self._spare = self._mint_spare()
            minted = self._mint(self._spare)
        assert minted is not None
        self._current = minted
        return minted

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(
            f"{self.api}{path}", headers={"PRIVATE-TOKEN": self.valid()}, json=body
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


_worlds = itertools.count()


def anchors(root: RootToken, path: str) -> dict[str, str]:
    """Real values for the path parameters of `path`, on resources nobody else uses."""
    n = next(_worlds)
    group = root.post("/groups", {"name": f"Fuzz {n}", "path": f"fuzz{n}"})
    user = root.post("/users", {"username": f"fuzzer{n}", "password": "fuzzer-password"})
    root.post(f"/groups/{group['id']}/members", {"user_id": user["id"], "access_level": 30})
    if "/deploy_tokens" in path:
        token = root.post(
            f"/groups/{group['id']}/deploy_tokens", {"name": "d", "scopes": ["read_registry"]}
        )
    elif "/access_tokens" in path:
        token = root.post(f"/groups/{group['id']}/access_tokens", {"name": "a", "scopes": ["api"]})
    else:
        token = root.post(
            f"/users/{user['id']}/personal_access_tokens", {"name": "p", "scopes": ["api"]}
        )
    runner = root.post("/user/runners", {"description": f"fuzz {n}"})
    job = root.post("/ci/jobs", {"group_id": group["id"], "user_id": user["id"]})
    values = {
        "group_id": str(group["id"]),
        "user_id": str(user["id"]),
        "token_id": str(token["id"]),
        "runner_id": str(runner["id"]),
        "job_id": str(job["id"]),
    }
    return {name: values[name] for name in re.findall(r"{(\w+)}", path)}


def _without_auth_headers(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["parameters"] = [
                parameter
                for parameter in operation.get("parameters", [])
                if not (parameter["in"] == "header" and parameter["name"].lower() in AUTH_HEADERS)
            ]
    return document


@pytest.fixture(scope="module")
def root_token(module_dproxy: DproxyServer) -> RootToken:
    return RootToken(module_dproxy)


@pytest.fixture(scope="module")
def api_schema(module_dproxy: DproxyServer) -> Any:
    base = module_dproxy.auth_url or module_dproxy.url
    document = httpx.get(f"{base}/api/v4/openapi.json").raise_for_status().json()
    config = schemathesis.Config.from_dict(
        {"base-url": base, "generation": {"mode": "positive", "database": "none"}}
    )
    return schemathesis.openapi.from_dict(_without_auth_headers(document), config=config)


def _fuzz(operation: Any, root: RootToken, examples: int, **fixed: Any) -> None:
    # The management API documents every answer; other routes in the same document (the
    # registry token endpoint) are held to "no 5xx" only.
    managed = operation.path.startswith("/api/v4/")
    checks = CONFORMANCE if managed else [not_a_server_error]

    @given(case=operation.as_strategy(**fixed))
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers={"PRIVATE-TOKEN": root.valid()}, checks=checks)

    run()


# schemathesis' own pytest integration (`from_fixture` + `parametrize`) breaks on pytest 9.2
# (it reads `Node._nodeid`); one subtest per operation reports just as precisely.
def test_no_server_errors_and_documented_answers(
    api_schema: Any, root_token: RootToken, subtests: pytest.Subtests
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 40
    for operation in operations:
        with subtests.test(msg=operation.label):
            _fuzz(operation, root_token, GENERATED_EXAMPLES)
            if "{" in operation.path:
                fixed = anchors(root_token, operation.path)
                _fuzz(operation, root_token, ANCHORED_EXAMPLES, path_parameters=fixed)
