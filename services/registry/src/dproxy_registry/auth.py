"""Bearer-token checks for `/v2`, and the 401 challenge that starts the Docker token flow."""

from __future__ import annotations

from dproxy_shared import access
from dproxy_shared.jwt_tokens import Claims, InvalidToken
from dproxy_shared.models import Group
from dproxy_shared.oci.errors import ErrorCode, RegistryError
from dproxy_shared.runtime import Runtime, TokenVerifier
from dproxy_shared.settings import Settings

SERVICE = "dependency_proxy"


def challenge(settings: Settings, repository: str | None) -> dict[str, str]:
    value = f'Bearer realm="{settings.external_url}/jwt/auth",service="{SERVICE}"'
    if repository is not None:
        value += f',scope="repository:{repository}:pull"'
    return {"WWW-Authenticate": value}


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def authenticate(
    verifier: TokenVerifier, settings: Settings, authorization: str | None, repository: str | None
) -> tuple[Claims, str]:
    token = bearer_token(authorization)
    if token is None:
        raise RegistryError(
            ErrorCode.UNAUTHORIZED,
            "authentication required",
            headers=challenge(settings, repository),
        )
    try:
        return await verifier.verify(token, issuer=settings.jwt_issuer), token
    except InvalidToken as exc:
        raise RegistryError(
            ErrorCode.UNAUTHORIZED,
            f"invalid or expired token: {exc}",
            headers=challenge(settings, repository),
        ) from exc


def name_unknown(repository: str) -> RegistryError:
    """One answer for a missing group, a disabled proxy and a denied caller: no leak."""
    return RegistryError(
        ErrorCode.NAME_UNKNOWN,
        "repository name not known to registry: the group does not exist, its dependency "
        "proxy is disabled, or the credentials used cannot read it (pulling needs at least "
        "the Guest role on the group, or a deploy token of the group or an ancestor)",
        detail={"name": repository},
    )


async def recheck_actor(runtime: Runtime, subject: str, group: Group, repository: str) -> None:
    """Is the credential behind the JWT still valid, and may it still read the group?

    The answer is cached for `actor_recheck_seconds` (at most 10), so a token revoked, expired
    or blocked after its JWT was issued stops working within that time, at one lookup per
    actor and group per period rather than one per request.
    """
    key = f"actor-check:{subject}:{group.id}"
    cache = runtime.coordination.cache
    verdict = await cache.get(key)
    if verdict is None:
        async with runtime.session() as session:
            actor = await access.from_subject(session, subject)
            if actor is None:
                verdict = "invalid"
            else:
                verdict = "ok" if await access.can_pull(session, actor, group) else "denied"
        if runtime.settings.actor_recheck_seconds > 0:
            await cache.set(key, verdict, ttl=runtime.settings.actor_recheck_seconds)
    if verdict == "invalid":
        raise RegistryError(
            ErrorCode.UNAUTHORIZED,
            "the credential behind this token was revoked, has expired, or its user is blocked",
            headers=challenge(runtime.settings, repository),
        )
    if verdict == "denied":
        raise name_unknown(repository)
