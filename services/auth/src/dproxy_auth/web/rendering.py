"""Templates, static assets and the headers every page carries.

Templates and assets are read once, when this module is imported (before the event loop
serves anything), so rendering a page never touches the disk. Jinja autoescapes everything.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse, Response

_HERE = Path(__file__).parent

_env = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a typo in a template is an error, not an empty string
    auto_reload=False,
    trim_blocks=True,
    lstrip_blocks=True,
)

# Pages show secrets once (new tokens) and per-user data: never cache or frame them, and
# allow scripts and styles from this origin only (no inline code anywhere).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _load_assets() -> dict[str, Asset]:
    types = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
    assets: dict[str, Asset] = {}
    for path in sorted((_HERE / "static").iterdir()):
        if path.suffix in types:
            body = path.read_bytes()
            etag = hashlib.sha256(body).hexdigest()[:16]
            assets[path.name] = Asset(body, types[path.suffix], etag)
    return assets


ASSETS = _load_assets()
ASSET_PREFIX = "/-/web/assets/"


def asset_url(name: str) -> str:
    """The asset's URL with its content hash, so browsers may cache it for good."""
    return f"{ASSET_PREFIX}{name}?v={ASSETS[name].etag}"


# -- filters --------------------------------------------------------------------------------


def filesize(size: int | None) -> str:
    """Binary units, as GitLab's `numberToHumanSize`: 512 B, 1.5 KiB, 20.3 MiB."""
    if size is None:
        return "—"
    if size < 1024:
        return f"{size} B"
    exponent = min(int(math.log(size, 1024)), 4)
    value = size / 1024**exponent
    unit = ("B", "KiB", "MiB", "GiB", "TiB")[exponent]
    return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def timeago(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "never"
    now = now or datetime.now(UTC)
    seconds = (now - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for limit, unit, size in (
        (60, "second", 1),
        (3600, "minute", 60),
        (86400, "hour", 3600),
        (30 * 86400, "day", 86400),
        (365 * 86400, "month", 30 * 86400),
        (math.inf, "year", 365 * 86400),
    ):
        if seconds < limit:
            count = int(seconds // size)
            if unit == "second" and count < 10:
                return "just now"
            text = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {text}" if future else f"{text} ago"
    raise AssertionError("unreachable")


def isoformat(moment: datetime | date | None) -> str:
    if moment is None:
        return ""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return moment.isoformat()


def longdate(moment: datetime | date | None) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, datetime):
        return moment.astimezone(UTC).strftime("%b %-d, %Y %H:%M UTC")
    return moment.strftime("%b %-d, %Y")


def short_digest(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"{algorithm}:{hex_digest[:12]}" if hex_digest else digest


def seconds_human(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    hours = seconds / 3600
    return f"{hours:.0f} h" if hours >= 10 else f"{hours:.1f} h"


_env.filters.update(
    filesize=filesize,
    timeago=timeago,
    isoformat=isoformat,
    longdate=longdate,
    short_digest=short_digest,
    seconds_human=seconds_human,
)
_env.globals.update(asset_url=asset_url)
# Compiled now, not on the first request.
_templates = {name: _env.get_template(name) for name in _env.list_templates(extensions="html")}


def render(template: str, context: dict[str, Any], *, status_code: int = 200) -> Response:
    html = _templates[template].render(context)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)
