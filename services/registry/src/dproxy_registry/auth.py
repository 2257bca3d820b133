"""Bearer-token checks for `/v2`, and the 401 challenge that starts the Docker token flow."""

from __future__ import annotations

from dproxy_shared.jwt_tokens import Claims, InvalidToken
from dproxy_shared.oci.errors import ErrorCode, RegistryError
from dproxy_shared.runtime import TokenVerifier
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
