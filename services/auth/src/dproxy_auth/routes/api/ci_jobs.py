"""CI jobs: a runner (or an admin) starts a job for a user in a group and gets the job's token
and GitLab's predefined `CI_DEPENDENCY_PROXY_*` variables; ending the job ends the token.

These routes take a runner token (`glrt-…`) as well as an admin's personal access token, so
they are mounted outside the personal-access-token guard of the rest of `/api/v4`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends

from dproxy_auth import ci, service
from dproxy_auth.deps import JobIssuerDep, RuntimeDep, SessionDep
from dproxy_auth.routes.api._routing import resource_router
from dproxy_auth.routes.api.lookups import IdPath, not_found
from dproxy_auth.routes.api.schemas import CiJobCreate, CiJobOut, NewCiJob
from dproxy_shared.models import CiJobToken
from dproxy_shared.repositories import groups, tokens, users

router = resource_router("ci jobs")


@router.post("/ci/jobs", status_code=201, summary="Start a CI job (runner or admin)")
async def start_job(
    issuer: JobIssuerDep, body: CiJobCreate, session: SessionDep, runtime: RuntimeDep
) -> NewCiJob:
    group = await groups.get(session, body.group_id)
    if group is None:
        raise not_found("Group")
    user = await users.get(session, body.user_id)
    if user is None:
        raise not_found("User")
    job, secret = await service.start_ci_job(
        session,
        group=group,
        user=user,
        timeout=timedelta(seconds=body.timeout),
        runner=issuer.runner,
    )
    variables = ci.job_variables(
        external_url=runtime.settings.external_url,
        group_full_path=group.full_path,
        job_token=secret,
    )
    return NewCiJob.create(job, secret, variables)


async def _job(issuer: JobIssuerDep, job_id: IdPath, session: SessionDep) -> CiJobToken:
    """A runner sees only the jobs it started; an admin sees every job."""
    job = await tokens.get_job_token(session, job_id)
    if job is None or (issuer.runner is not None and job.runner_id != issuer.runner.id):
        raise not_found("Job")
    return job


PathJob = Annotated[CiJobToken, Depends(_job)]


@router.get("/ci/jobs/{job_id}", summary="A CI job's state")
async def get_job(job: PathJob) -> CiJobOut:
    return CiJobOut.of(job)


@router.delete(
    "/ci/jobs/{job_id}", status_code=204, summary="End a CI job; its token stops working"
)
async def end_job(job: PathJob, session: SessionDep) -> None:
    await tokens.finish_job(session, job)
