"""Secrets at rest (groups' upstream credentials): Fernet, keyed by `DPROXY_ENCRYPTION_KEY`.

Without the setting, the embedded default keeps a generated key in `DATA_DIR/encryption.key`
(mode 0600), as it does the JWT signing key; the first process to need it creates it
atomically, so processes sharing a data dir agree. Split deployments set the variable, the
same value on the auth service (which encrypts) and the fetchers (which decrypt).
"""

from __future__ import annotations

import contextlib
import os
from functools import cached_property
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from dproxy_shared.settings import Settings

KEY_FILE = "encryption.key"


class SecretBox:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @cached_property
    def _fernet(self) -> Fernet:
        key = self._settings.encryption_key.get_secret_value().strip()
        return Fernet(key.encode() if key else _load_or_create(self._settings.data_dir / KEY_FILE))

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Raises `ValueError` when the key does not match (it was changed or lost)."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("cannot decrypt: wrong DPROXY_ENCRYPTION_KEY") from exc


def _load_or_create(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_bytes(Fernet.generate_key())
        temporary.chmod(0o600)
        # link() never replaces: whoever links first wins, everyone reads the winner's key.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
        temporary.unlink()
    return path.read_bytes().strip()
