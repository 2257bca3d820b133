"""The web pages' building blocks: the session cookie, redirects, filters and templates."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from itsdangerous import URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from dproxy_auth.web import rendering
from dproxy_auth.web.admin import UpstreamBudget
from dproxy_auth.web.routing import safe_redirect_target
from dproxy_auth.web.sessions import COOKIE_NAME, LIFETIME_SECONDS, SessionCodec, WebSession
from dproxy_shared.coordination import MemoryCache
from dproxy_shared.jwt_tokens import SigningKey
from dproxy_shared.models import ApplicationSetting, User
from dproxy_shared.ratelimit import RateLimitState

SECRET = b"k" * 32


def _request(cookie: str | None = None) -> Request:
    headers = [(b"cookie", f"{COOKIE_NAME}={cookie}".encode())] if cookie else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def _stored(codec: SessionCodec, session: WebSession) -> tuple[str, Any]:
    response = Response()
    codec.store(response, session)
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    return cookie[COOKIE_NAME].value, cookie[COOKIE_NAME]


def _user(password_hash: str = "$argon2id$a") -> User:
    return User(id=7, username="alice", password_hash=password_hash)


def test_a_session_survives_the_round_trip_through_the_cookie() -> None:
    codec = SessionCodec(SECRET, secure=False, cache=MemoryCache())
    session = WebSession.anonymous()
    session.sign_in(_user())
    session.set_flash("success", "Saved.")
    value, _ = _stored(codec, session)
    loaded = codec.load(_request(value))
    assert (loaded.sid, loaded.csrf, loaded.user_id) == (session.sid, session.csrf, 7)
    assert loaded.fingerprint == session.fingerprint
    assert loaded.pop_flash() == ("success", "Saved.") and loaded.dirty


def test_another_key_a_forged_or_an_expired_cookie_is_an_anonymous_session() -> None:
    codec = SessionCodec(SECRET, secure=False, cache=MemoryCache())
    session = WebSession.anonymous()
    session.sign_in(_user())
    value, _ = _stored(codec, session)
    other = SessionCodec(b"o" * 32, secure=False, cache=MemoryCache())
    assert other.load(_request(value)).user_id is None
    assert codec.load(_request(value[:-2] + "xx")).user_id is None
    old = URLSafeTimedSerializer(SECRET, salt="dproxy.web.session")
    stale = old.dumps(session.to_payload())
    assert codec.load(_request(stale)).user_id == 7
    later = time.time() + LIFETIME_SECONDS + 5
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "time", lambda: later)
        assert codec.load(_request(stale)).user_id is None


def test_cookie_flags_follow_the_external_url() -> None:
    session = WebSession.anonymous()
    _, plain = _stored(SessionCodec(SECRET, secure=False, cache=MemoryCache()), session)
    _, tls = _stored(SessionCodec(SECRET, secure=True, cache=MemoryCache()), session)
    for cookie in (plain, tls):
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "lax"
        assert cookie["path"] == "/"
        assert 0 < int(cookie["max-age"]) <= LIFETIME_SECONDS
    assert not plain["secure"] and tls["secure"] is True


async def test_signing_out_revokes_the_session_id() -> None:
    codec = SessionCodec(SECRET, secure=False, cache=MemoryCache())
    session = WebSession.anonymous()
    session.sign_in(_user())
    assert not await codec.revoked(session)
    await codec.revoke(session)
    assert await codec.revoked(session)
    old_sid = session.sid
    session.sign_out()
    assert session.sid != old_sid and session.user_id is None
    assert not await codec.revoked(session)


def test_sign_in_rotates_the_id_and_the_csrf_token() -> None:
    session = WebSession.anonymous()
    before = (session.sid, session.csrf)
    session.sign_in(_user())
    assert session.sid != before[0] and session.csrf != before[1]
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(before[1])
    assert not session.csrf_matches("")
    assert not session.csrf_matches(None)


def test_a_password_change_changes_the_fingerprint() -> None:
    first, second = WebSession.anonymous(), WebSession.anonymous()
    first.sign_in(_user("$argon2id$one"))
    second.sign_in(_user("$argon2id$two"))
    assert first.fingerprint != second.fingerprint
    assert "$argon2id$one" not in str(first.to_payload())


def test_the_derived_secret_is_stable_per_key_and_purpose(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path / "key.pem")
    again = SigningKey.load_or_create(tmp_path / "key.pem")  # another replica, same key file
    other = SigningKey.load_or_create(tmp_path / "other.pem")
    assert key.derive_secret("web-session") == again.derive_secret("web-session")
    assert key.derive_secret("web-session") != key.derive_secret("something-else")
    assert key.derive_secret("web-session") != other.derive_secret("web-session")
    assert len(key.derive_secret("web-session")) == 32


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/groups/a/-/dependency_proxy", "/groups/a/-/dependency_proxy"),
        (
            "/-/user_settings/personal_access_tokens?page=2",
            "/-/user_settings/personal_access_tokens?page=2",
        ),
        ("", "/"),
        (None, "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("/ok\r\nSet-Cookie: x", "/"),
    ],
)
def test_redirects_after_sign_in_stay_on_this_site(target: str | None, expected: str) -> None:
    assert safe_redirect_target(target) == expected


def test_filters_read_like_gitlab() -> None:
    assert rendering.filesize(0) == "0 B"
    assert rendering.filesize(1023) == "1023 B"
    assert rendering.filesize(1536) == "1.5 KiB"
    assert rendering.filesize(2 * 1024**2 + 1) == "2.0 MiB"
    assert rendering.filesize(150 * 1024**3) == "150 GiB"
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert rendering.timeago(now - timedelta(seconds=3), now) == "just now"
    assert rendering.timeago(now - timedelta(minutes=1), now) == "1 minute ago"
    assert rendering.timeago(now - timedelta(hours=5), now) == "5 hours ago"
    assert rendering.timeago(now - timedelta(days=40), now) == "1 month ago"
    assert rendering.timeago(None) == "never"
    assert rendering.short_digest("sha256:" + "a" * 64) == "sha256:" + "a" * 12
    assert rendering.seconds_human(21600) == "6.0 h"
    assert rendering.seconds_human(90) == "90 s"


def _admin_page(upstream: UpstreamBudget) -> str:
    context: dict[str, Any] = {
        "request": _request(),
        "viewer": None,
        "csrf_token": "t",
        "flash": None,
        "nav": "admin",
        "setting": ApplicationSetting(),
        "upstreams": [upstream],
        "reserve": 10,
        "errors": {},
        "values": {},
    }
    return bytes(rendering.render("admin_settings.html", context).body).decode()


def test_the_admin_page_shows_an_upstream_budget_and_a_429() -> None:
    state = RateLimitState(
        host="registry-1.docker.io",
        limit=100,
        remaining=3,
        window_seconds=21600,
        source="203.0.113.7",
        retry_after_seconds=120.0,
        observed_at=time.time() - 300,
    )
    html = _admin_page(UpstreamBudget("https://registry-1.docker.io", state.host, state, 900.0))
    for text in ("registry-1.docker.io", ">100<", ">3<", "6.0 h", "Retry after 2 min"):
        assert text in html, text
    assert "5 minutes ago" in html and "Saving pulls" in html
    unknown = _admin_page(UpstreamBudget("http://up", "up", None, None))
    assert "No report yet" in unknown and "Unknown" in unknown


def test_pages_carry_no_inline_script_or_style() -> None:
    """The Content-Security-Policy forbids both; a template that used them would break."""
    for name in rendering._templates:
        source = (Path(rendering.__file__).parent / "templates" / name).read_text()
        assert "<script>" not in source and "style=" not in source and "<style" not in source
        assert " on" + "click=" not in source
