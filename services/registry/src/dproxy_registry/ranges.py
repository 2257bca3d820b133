"""Single `Range: bytes=…` requests on cached blobs (RFC 9110 §14)."""

from __future__ import annotations

import re

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class UnsatisfiableRange(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive, or None to send the whole blob (absent or multi-range)."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if not match:
        return None  # multiple or malformed ranges: ignoring the header is allowed
    first_raw, last_raw = match.groups()
    if not first_raw and not last_raw:
        return None
    if not first_raw:  # suffix: the last N bytes
        length = int(last_raw)
        if length == 0 or size == 0:
            raise UnsatisfiableRange
        return max(0, size - length), size - 1
    first = int(first_raw)
    last = min(int(last_raw), size - 1) if last_raw else size - 1
    if first >= size or last < first:
        raise UnsatisfiableRange
    return first, last
