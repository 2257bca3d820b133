"""Instance runners (admin): GitLab's `POST /user/runners` flow. A runner's token (`glrt-…`)
may start and end CI jobs (`/ci/jobs`), and nothing else."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from dproxy_auth import service
from dproxy_auth.deps import AdminDep, SessionDep
from dproxy_auth.routes.api._routing import resource_router
from dproxy_auth.routes.api.lookups import IdPath, not_found
from dproxy_auth.routes.api.pagination import PaginationDep
from dproxy_auth.routes.api.schemas import NewRunner, RunnerCreate, RunnerOut
from dproxy_shared.models import CiRunner
from dproxy_shared.repositories import tokens

router = resource_router("runners")


@router.post("/user/runners", status_code=201, summary="Create an instance runner (admin)")
async def create_runner(_admin: AdminDep, body: RunnerCreate, session: SessionDep) -> NewRunner:
    runner, secret = await service.create_runner(session, description=body.description)
    assert runner.id is not None
    return NewRunner(id=runner.id, token=secret)


@router.get("/runners/all", summary="Every runner (admin)")
async def list_runners(
    _admin: AdminDep, session: SessionDep, pages: PaginationDep
) -> list[RunnerOut]:
    found, total = await tokens.runners_page(session, window=pages.window)
    pages.publish(total)
    return [RunnerOut.of(runner) for runner in found]


async def _runner(_admin: AdminDep, runner_id: IdPath, session: SessionDep) -> CiRunner:
    runner = await tokens.get_runner(session, runner_id)
    if runner is None:
        raise not_found("Runner")
    return runner


PathRunner = Annotated[CiRunner, Depends(_runner)]


@router.get("/runners/{runner_id}", summary="One runner (admin)")
async def get_runner(runner: PathRunner) -> RunnerOut:
    return RunnerOut.of(runner)


@router.delete(
    "/runners/{runner_id}", status_code=204, summary="Delete a runner; its jobs end with it"
)
async def delete_runner(runner: PathRunner, session: SessionDep) -> None:
    await tokens.delete_runner(session, runner)
