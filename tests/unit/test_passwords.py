"""Password checks stay correct with the verified-password cache in front of Argon2."""

from __future__ import annotations

from dproxy_auth.passwords import PasswordVerifier, hash_password


async def test_remembered_success_never_admits_a_wrong_password() -> None:
    verifier = PasswordVerifier()
    stored = await hash_password("correct horse")
    assert await verifier.verify(stored, "correct horse")
    assert await verifier.verify(stored, "correct horse")  # served from the cache
    assert not await verifier.verify(stored, "correct horse ")
    assert not await verifier.verify(stored, "")


async def test_a_password_change_invalidates_what_was_remembered() -> None:
    verifier = PasswordVerifier()
    old = await hash_password("old password")
    assert await verifier.verify(old, "old password")
    new = await hash_password("new password")
    assert not await verifier.verify(new, "old password")
    assert await verifier.verify(new, "new password")


async def test_unknown_users_and_expired_entries() -> None:
    verifier = PasswordVerifier(ttl=0.0)
    assert not await verifier.verify(None, "anything")
    stored = await hash_password("pw-123456")
    assert await verifier.verify(stored, "pw-123456")
    assert await verifier.verify(stored, "pw-123456")  # expired entry: verified again
