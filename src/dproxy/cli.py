"""`dproxy`: run the services and administer users, groups and tokens."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, timedelta
from typing import get_args

from sqlmodel.ext.asyncio.session import AsyncSession

from dproxy_auth import ci, service
from dproxy_shared.db import migrate
from dproxy_shared.models import AccessLevel, Group, User
from dproxy_shared.repositories import groups, tokens, users
from dproxy_shared.runtime import Runtime
from dproxy_shared.settings import ServiceName, Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, Settings())
    except (service.ValidationFailed, service.Conflict, LookupError) as exc:
        print(f"dproxy: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dproxy", description=__doc__)
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run dproxy (all services, or one)")
    serve.add_argument("--service", choices=get_args(ServiceName), help="run only this service")
    serve.set_defaults(handler=_serve)

    commands.add_parser("migrate", help="apply database migrations").set_defaults(handler=_migrate)

    tokens = commands.add_parser("tokens", help="personal access tokens").add_subparsers()
    create = tokens.add_parser("create", help="create a token; prints only the token")
    create.add_argument("--user", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, dest="scopes")
    create.add_argument("--expires-at", type=date.fromisoformat)
    create.set_defaults(handler=_run(_create_token))
    revoke = tokens.add_parser("revoke", help="revoke a personal access token")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, help="the token's id")
    which.add_argument("--token", help="the token itself (read from stdin with -)")
    revoke.set_defaults(handler=_run(_revoke_token))

    user_commands = commands.add_parser("users", help="users").add_subparsers()
    create = user_commands.add_parser("create", help="create a user")
    create.add_argument("--username", required=True)
    create.add_argument("--password")
    create.add_argument("--name", default="")
    create.add_argument("--email")
    create.add_argument("--admin", action="store_true")
    create.set_defaults(handler=_run(_create_user))
    user_commands.add_parser("list", help="list users").set_defaults(handler=_run(_list_users))

    group_commands = commands.add_parser("groups", help="groups").add_subparsers()
    create = group_commands.add_parser("create", help="create a group or subgroup")
    create.add_argument("--path", required=True, help="full path, e.g. top/sub")
    create.add_argument("--name", default="")
    create.set_defaults(handler=_run(_create_group))
    group_commands.add_parser("list", help="list groups").set_defaults(handler=_run(_list_groups))
    member = group_commands.add_parser("add-member", help="add or change a membership")
    member.add_argument("--group", required=True, help="full path")
    member.add_argument("--user", required=True)
    member.add_argument(
        "--access-level",
        required=True,
        type=_access_level,
        help="guest, reporter, developer, maintainer, owner (or 10..50)",
    )
    member.set_defaults(handler=_run(_add_member))

    ci_commands = commands.add_parser("ci", help="CI jobs and runners").add_subparsers()
    env = ci_commands.add_parser(
        "env", help="start a CI job; print its CI_DEPENDENCY_PROXY_* variables as export lines"
    )
    env.add_argument("--group", required=True, help="the job's group, full path")
    env.add_argument("--user", required=True, help="the user the job runs as")
    env.add_argument(
        "--timeout",
        type=_seconds,
        default=ci.DEFAULT_JOB_TIMEOUT,
        help="seconds until the token expires",
    )
    env.set_defaults(handler=_run(_ci_env))
    runner = ci_commands.add_parser(
        "create-runner", help="create an instance runner; prints only its token"
    )
    runner.add_argument("--description", default="")
    runner.set_defaults(handler=_run(_create_runner))
    return parser


def _seconds(value: str) -> int:
    if not value.isdigit() or not ci.MIN_JOB_TIMEOUT <= int(value) <= ci.MAX_JOB_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"a number of seconds from {ci.MIN_JOB_TIMEOUT} to {ci.MAX_JOB_TIMEOUT}"
        )
    return int(value)


def _access_level(value: str) -> int:
    if value.isdigit():
        return int(value)
    try:
        return int(AccessLevel[value.upper()])
    except KeyError as exc:
        raise argparse.ArgumentTypeError(f"unknown access level {value!r}") from exc


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from dproxy.app import ALL_SERVICES, configure_logging, create_app

    configure_logging(settings.log_level)
    services = frozenset({args.service}) if args.service else ALL_SERVICES
    if args.service is None:
        # The embedded default manages its own SQLite schema; split deployments run
        # `dproxy migrate` once, as a job, before the services start.
        migrate(settings.database_url)
    app = create_app(settings, services)
    uvicorn.run(
        app,
        host=settings.listen_host,
        port=settings.listen_port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    return 0


def _migrate(_args: argparse.Namespace, settings: Settings) -> int:
    migrate(settings.database_url)
    print("dproxy: database is up to date", file=sys.stderr)
    return 0


Command = Callable[[argparse.Namespace, Runtime], Awaitable[int]]


def _run(command: Command) -> Callable[[argparse.Namespace, Settings], int]:
    """Run an administrative command against the configured database."""

    def handler(args: argparse.Namespace, settings: Settings) -> int:
        async def body() -> int:
            runtime = Runtime.open(settings)
            try:
                password = await service.ensure_root(runtime)
                if password:
                    print(f"dproxy: created user root with password: {password}", file=sys.stderr)
                return await command(args, runtime)
            finally:
                await runtime.close()

        if settings.database_url.startswith("sqlite"):
            migrate(settings.database_url)
        return asyncio.run(body())

    return handler


async def _create_token(args: argparse.Namespace, runtime: Runtime) -> int:
    async with runtime.session() as session:
        user = await users.get_by_username(session, args.user)
        if user is None:
            raise LookupError(f"no user {args.user!r}")
        _token, secret = await service.create_personal_access_token(
            session, user=user, name=args.name, scopes=args.scopes, expires_at=args.expires_at
        )
    print(secret)
    return 0


async def _revoke_token(args: argparse.Namespace, runtime: Runtime) -> int:
    secret = sys.stdin.readline().strip() if args.token == "-" else args.token
    async with runtime.session() as session:
        token = (
            await tokens.get_personal_access_token(session, args.id)
            if args.id is not None
            else await tokens.find_personal_access_token(session, secret)
        )
        if token is None:
            raise LookupError("no such personal access token")
        await tokens.revoke_personal_access_token(session, token)
    print(f"dproxy: revoked personal access token {token.id} ({token.name})", file=sys.stderr)
    return 0


async def _group_and_user(
    session: AsyncSession, group_path: str, username: str
) -> tuple[Group, User]:
    group = await groups.get_by_full_path(session, group_path)
    user = await users.get_by_username(session, username)
    if group is None or user is None:
        raise LookupError(f"no group {group_path!r}" if group is None else f"no user {username!r}")
    return group, user


async def _ci_env(args: argparse.Namespace, runtime: Runtime) -> int:
    async with runtime.session() as session:
        group, user = await _group_and_user(session, args.group, args.user)
        job, secret = await service.start_ci_job(
            session, group=group, user=user, timeout=timedelta(seconds=args.timeout)
        )
    variables = ci.job_variables(
        external_url=runtime.settings.external_url,
        group_full_path=group.full_path,
        job_token=secret,
    )
    print(f"# dproxy CI job {job.id}, until {job.expires_at.isoformat(timespec='seconds')}")
    for name, value in variables.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


async def _create_runner(args: argparse.Namespace, runtime: Runtime) -> int:
    async with runtime.session() as session:
        _runner, secret = await service.create_runner(session, description=args.description)
    print(secret)
    return 0


async def _create_user(args: argparse.Namespace, runtime: Runtime) -> int:
    async with runtime.session() as session:
        user = await service.create_user(
            session,
            username=args.username,
            password=args.password,
            name=args.name,
            email=args.email,
            admin=args.admin,
        )
    print(user.id)
    return 0


async def _list_users(_args: argparse.Namespace, runtime: Runtime) -> int:
    async with runtime.session() as session:
        for user in await users.list_all(session):
            print(f"{user.id}\t{user.username}\t{'admin' if user.admin else ''}\t{user.state}")
    return 0


async def _create_group(args: argparse.Namespace, runtime: Runtime) -> int:
    parent_path, _, path = args.path.strip("/").rpartition("/")
    async with runtime.session() as session:
        parent = await groups.get_by_full_path(session, parent_path) if parent_path else None
        if parent_path and parent is None:
            raise LookupError(f"no group {parent_path!r}")
        group = await service.create_group(session, name=args.name, path=path, parent=parent)
    print(group.id)
    return 0


async def _list_groups(_args: argparse.Namespace, runtime: Runtime) -> int:
    async with runtime.session() as session:
        for group in await groups.list_all(session):
            print(f"{group.id}\t{group.full_path}")
    return 0


async def _add_member(args: argparse.Namespace, runtime: Runtime) -> int:
    async with runtime.session() as session:
        group, user = await _group_and_user(session, args.group, args.user)
        await service.add_member(session, group=group, user=user, access_level=args.access_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
