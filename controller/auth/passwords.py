"""argon2id password hashing. Hashing is deliberately slow, so it runs off the event loop."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_password, password_hash, password)


def generate_password() -> str:
    """A random password for generated accounts (about 190 bits)."""
    return secrets.token_urlsafe(24)


def dummy_hash() -> str:
    """A hash of a random password: unknown users are verified against it so that an unknown
    user and a wrong password cost the same time."""
    return hash_password(secrets.token_urlsafe(24))
