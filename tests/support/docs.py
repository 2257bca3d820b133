"""Examples taken from the documentation, so that a test runs the very text a reader copies.

A fenced block is an example when the line before its opening fence is `<!-- test: NAME -->`
(invisible once rendered). Tests substitute the documented placeholders (host, group, the
Docker Hub fallback) with `substitute()`, which fails when a placeholder is missing: renaming
one in the doc without updating the test cannot go unnoticed.
"""

from __future__ import annotations

import json
import re
import string
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"

_BLOCK = re.compile(
    r"^<!-- test: (?P<name>[a-z0-9-]+) -->\n```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)


def examples(path: Path) -> dict[str, str]:
    """Every marked block of a Markdown file, by name."""
    text = path.read_text()
    found: dict[str, str] = {}
    for match in _BLOCK.finditer(text):
        name = match["name"]
        assert name not in found, f"{path.name}: two examples named {name!r}"
        found[name] = match["body"]
    markers = len(re.findall(r"^<!-- test: ", text, re.MULTILINE))
    assert len(found) == markers, f"{path.name}: a `<!-- test:` marker is not before a fence"
    return found


def substitute(text: str, replacements: Mapping[str, str]) -> str:
    """Replace each placeholder, in order; each one must occur (a stale placeholder fails)."""
    for old, new in replacements.items():
        assert old in text, f"placeholder {old!r} is no longer in the example:\n{text}"
        text = text.replace(old, new)
    return text


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Shell-style `$NAME` / `${NAME}`, strictly: an unknown variable is an error."""
    return string.Template(text).substitute(variables)


_WORD = re.compile(r"""(?:'[^']*'|"(?:\\.|[^"\\])*"|[^\s'"]+)+""")
_PART = re.compile(r"""'([^']*)'|"((?:\\.|[^"\\])*)"|([^'"]+)""")


def shell_words(command: str, variables: Mapping[str, str]) -> list[str]:
    """One simple shell command (backslash-continued lines allowed) as argv, the way the
    shell splits it: '...' literal, "..." and bare text with variables expanded."""
    return [_unquote(word, variables) for word in _WORD.findall(command.replace("\\\n", " "))]


def _unquote(word: str, variables: Mapping[str, str]) -> str:
    parts = []
    for single, double, bare in _PART.findall(word):
        if single:
            parts.append(single)
        elif double:
            parts.append(expand(double.replace('\\"', '"'), variables))
        else:
            parts.append(expand(bare, variables))
    return "".join(parts)


@dataclass(frozen=True)
class CurlRequest:
    method: str
    url: str
    headers: dict[str, str]
    data: bytes | None


def parse_curl(command: str, variables: Mapping[str, str]) -> CurlRequest:
    """The request a documented `curl` command sends (the options the docs use), so that the
    tests need no curl binary."""
    words = shell_words(command, variables)
    assert words[0] == "curl", words
    method, url, data = "GET", "", None
    headers: dict[str, str] = {}
    args = iter(words[1:])
    for word in args:
        if word in ("--request", "-X"):
            method = next(args)
        elif word in ("--header", "-H"):
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("--data", "-d"):
            data = next(args).encode()
            method = "POST" if method == "GET" else method
        elif word in ("--fail", "-f", "--silent", "-s", "--show-error", "-S"):
            continue
        elif word.startswith("-"):
            raise AssertionError(f"curl option {word!r} is not understood by the test")
        else:
            url = word
    return CurlRequest(method, url, headers, data)


def send_curl(request: CurlRequest, timeout: float = 30.0) -> object:
    """Send it like `curl --fail`: an error status raises."""
    sent = urllib.request.Request(
        request.url, method=request.method, data=request.data, headers=request.headers
    )
    with urllib.request.urlopen(sent, timeout=timeout) as response:
        return json.loads(response.read())
