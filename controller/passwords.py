"""Password hashing for OCPP Basic auth: PBKDF2-SHA256 from the standard library.

Format: ``pbkdf2_sha256$<iterations>$<salt base64>$<hash base64>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["hash_password", "is_password_hash", "verify_password"]

_SCHEME = "pbkdf2_sha256"
_DEFAULT_ITERATIONS = 200_000
_MAX_ITERATIONS = 2_000_000
"""A stored hash is config input: an absurd iteration count would stall every charger login."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, iterations: int = _DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    if not password:
        raise ValueError("an empty password cannot be hashed")
    if not 1000 <= iterations <= _MAX_ITERATIONS:
        raise ValueError(f"iterations must be between 1000 and {_MAX_ITERATIONS}")
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{_SCHEME}${iterations}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[int, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != _SCHEME:
        return None
    try:
        iterations = int(parts[1])
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return None
    if not 1000 <= iterations <= _MAX_ITERATIONS or not salt or len(digest) != 32:
        return None
    return iterations, salt, digest


def is_password_hash(value: str) -> bool:
    return _parse(value) is not None


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a stored hash; False for malformed hashes."""
    parsed = _parse(stored)
    if parsed is None:
        return False
    iterations, salt, digest = parsed
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(candidate, digest)
