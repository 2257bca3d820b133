"""Content digests (`sha256:<hex>`), parsed strictly so nothing odd reaches storage."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

from dproxy_shared.oci.errors import ErrorCode, RegistryError

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST = re.compile(r"(sha256|sha512):([a-f0-9]+)")


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, value: str) -> Digest:
        match = _DIGEST.fullmatch(value)
        if not match or len(match.group(2)) != _HEX_LENGTH[match.group(1)]:
            raise RegistryError(ErrorCode.DIGEST_INVALID, f"invalid digest {value[:160]!r}")
        return cls(match.group(1), match.group(2))

    @classmethod
    def is_digest(cls, value: str) -> bool:
        return ":" in value

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> Hasher:
        return hashlib.new(self.algorithm)

    def matches(self, hasher: Hasher) -> bool:
        return hasher.hexdigest() == self.hex
