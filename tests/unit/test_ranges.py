"""`Range: bytes=…` on cached blobs (RFC 9110 §14): what a resuming client gets back."""

from __future__ import annotations

import itertools

import pytest

from dproxy_registry.ranges import UnsatisfiableRange, parse_range

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-0", (0, 0)),
        ("bytes=0-499", (0, 499)),
        ("bytes=500-999", (500, 999)),
        ("bytes=0-999", (0, 999)),
        ("bytes=500-", (500, 999)),
        ("bytes=999-", (999, 999)),
        ("bytes=999-999", (999, 999)),
        ("bytes=0-", (0, 999)),
        ("bytes=10-5000", (10, 999)),  # last past the end: clamped
        ("bytes=-1", (999, 999)),  # suffix: the last byte
        ("bytes=-200", (800, 999)),
        ("bytes=-1000", (0, 999)),
        ("bytes=-5000", (0, 999)),  # suffix longer than the blob: all of it
        ("  bytes=1-2  ", (1, 2)),
        ("bytes=0-99999999999999999999", (0, 999)),
    ],
)
def test_satisfiable_ranges(header: str, expected: tuple[int, int]) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="absent"),
        pytest.param("", id="empty"),
        pytest.param("bytes=-", id="no-numbers"),
        pytest.param("bytes=0-1,5-6", id="multi-range"),
        pytest.param("bytes=0-1, 5-6", id="multi-range-space"),
        pytest.param("items=0-1", id="other-unit"),
        pytest.param("bytes=abc", id="garbage"),
        pytest.param("bytes=1-2-3", id="two-dashes"),
        pytest.param("bytes=-1-2", id="negative"),
        pytest.param("bytes=0x10-", id="hex"),
        pytest.param("bytes 0-1", id="no-equals"),
    ],
)
def test_absent_or_malformed_ranges_mean_the_whole_blob(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize(
    ("header", "size"),
    [
        pytest.param("bytes=1000-", SIZE, id="first-at-size"),
        pytest.param("bytes=1000-1000", SIZE, id="first-and-last-at-size"),
        pytest.param("bytes=1500-2000", SIZE, id="past-the-end"),
        pytest.param("bytes=-0", SIZE, id="empty-suffix"),
        pytest.param("bytes=5-3", SIZE, id="last-before-first"),
        pytest.param("bytes=0-", 0, id="empty-blob-open"),
        pytest.param("bytes=0-0", 0, id="empty-blob-first-byte"),
        pytest.param("bytes=-5", 0, id="empty-blob-suffix"),
    ],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(UnsatisfiableRange):
        parse_range(header, size)


def _headers(limit: int) -> list[str]:
    numbers = [""] + [str(n) for n in range(limit)]
    return [f"bytes={a}-{b}" for a, b in itertools.product(numbers, repeat=2)]


@pytest.mark.parametrize("size", range(6))
def test_every_answer_lies_inside_the_blob(size: int) -> None:
    """Whatever the header, a range handed to storage and to Content-Range is in bounds."""
    for header in _headers(8):
        try:
            result = parse_range(header, size)
        except UnsatisfiableRange:
            continue
        if result is None:
            continue
        first, last = result
        assert 0 <= first <= last < size, (header, size, result)
