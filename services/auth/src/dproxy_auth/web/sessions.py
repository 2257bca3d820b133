"""Web sessions: a signed cookie that any auth replica can read, with a CSRF token inside.

The cookie holds no secret, only who signed in and when, signed with a key derived from the
JWT signing key (which every auth replica shares), so sessions need no database table and
survive a request landing on another replica. Three things end a session early:

- signing out, which lists the session id as revoked in the shared cache (Redis in split
  mode) for the rest of its lifetime;
- a change of the user's password hash (the cookie carries a fingerprint of it);
- the user being blocked, deleted or turned into a bot (checked on every request).

Every session, signed in or not, carries a CSRF token; every form posts it back as
`authenticity_token` (GitLab's field name), and `routing.WebRoute` refuses unsafe requests
whose token does not match the cookie's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from dproxy_shared.coordination import KeyValueCache
from dproxy_shared.models import User

COOKIE_NAME = "_dproxy_session"
CSRF_FIELD = "authenticity_token"
# GitLab's default `session_expire_delay`: one week.
LIFETIME_SECONDS = 7 * 24 * 3600
_SALT = "dproxy.web.session"
_REVOKED_KEY = "web-session-revoked:{}"

FlashKind = Literal["success", "danger", "info"]


def password_fingerprint(user: User) -> str:
    """Changes whenever the password does; a short digest, so the cookie reveals nothing."""
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()[:16]


@dataclass(slots=True)
class WebSession:
    sid: str
    csrf: str
    issued_at: int
    user_id: int | None = None
    fingerprint: str | None = None
    flash: tuple[FlashKind, str] | None = None
    dirty: bool = field(default=False, compare=False)

    @classmethod
    def anonymous(cls) -> WebSession:
        return cls(
            sid=secrets.token_urlsafe(16),
            csrf=secrets.token_urlsafe(32),
            issued_at=int(time.time()),
            dirty=True,
        )

    def sign_in(self, user: User) -> None:
        """A new id and CSRF token at sign-in, so a session planted before it is worthless."""
        assert user.id is not None
        fresh = WebSession.anonymous()
        self.sid, self.csrf, self.issued_at = fresh.sid, fresh.csrf, fresh.issued_at
        self.user_id = user.id
        self.fingerprint = password_fingerprint(user)
        self.dirty = True

    def sign_out(self) -> None:
        """Back to a new anonymous session (a new id and CSRF token too)."""
        fresh = WebSession.anonymous()
        self.sid, self.csrf, self.issued_at = fresh.sid, fresh.csrf, fresh.issued_at
        self.user_id = self.fingerprint = self.flash = None
        self.dirty = True

    def csrf_matches(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf.encode(), (token or "").encode())

    def set_flash(self, kind: FlashKind, message: str) -> None:
        """A message for the next page (after a redirect)."""
        self.flash = (kind, message)
        self.dirty = True

    def pop_flash(self) -> tuple[FlashKind, str] | None:
        flash, self.flash = self.flash, None
        if flash is not None:
            self.dirty = True
        return flash

    def to_payload(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "csrf": self.csrf,
            "iat": self.issued_at,
            "uid": self.user_id,
            "fp": self.fingerprint,
            "flash": list(self.flash) if self.flash else None,
        }

    @classmethod
    def from_payload(cls, payload: Any) -> WebSession | None:
        if not isinstance(payload, dict):
            return None
        try:
            flash = payload.get("flash")
            return cls(
                sid=str(payload["sid"]),
                csrf=str(payload["csrf"]),
                issued_at=int(payload["iat"]),
                user_id=int(payload["uid"]) if payload.get("uid") is not None else None,
                fingerprint=str(payload["fp"]) if payload.get("fp") else None,
                flash=(flash[0], str(flash[1])) if flash else None,
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return None


class SessionCodec:
    """Reads and writes the session cookie, and keeps the list of revoked sessions."""

    def __init__(self, secret: bytes, *, secure: bool, cache: KeyValueCache) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self._secure = secure
        self._cache = cache

    def load(self, request: Request) -> WebSession:
        """The request's session; a new anonymous one when the cookie is missing or invalid."""
        raw = request.cookies.get(COOKIE_NAME)
        if raw:
            try:
                payload = self._serializer.loads(raw, max_age=LIFETIME_SECONDS)
            except BadSignature:  # also covers an expired signature
                payload = None
            session = WebSession.from_payload(payload)
            if session is not None:
                return session
        return WebSession.anonymous()

    def store(self, response: Response, session: WebSession) -> None:
        remaining = max(1, session.issued_at + LIFETIME_SECONDS - int(time.time()))
        response.set_cookie(
            COOKIE_NAME,
            self._serializer.dumps(session.to_payload()),
            max_age=remaining,
            path="/",
            httponly=True,  # scripts never need it: the CSRF token travels in the page
            samesite="lax",  # cross-site links keep the session; cross-site posts do not
            secure=self._secure,
        )

    async def revoked(self, session: WebSession) -> bool:
        return await self._cache.get(_REVOKED_KEY.format(session.sid)) is not None

    async def revoke(self, session: WebSession) -> None:
        remaining = session.issued_at + LIFETIME_SECONDS - time.time()
        if remaining > 0:
            await self._cache.set(_REVOKED_KEY.format(session.sid), "1", ttl=remaining)
