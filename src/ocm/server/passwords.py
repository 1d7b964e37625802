"""Room passwords: salted scrypt hashes, never the clear password.

scrypt is slow and memory-hard on purpose, so the TCP adapter computes it off the event
loop; :class:`PasswordHash` only knows how to make and check one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["PasswordHash"]


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A salted scrypt hash; the clear password is never kept.

    scrypt with n=2**14, r=8 (16 MiB, ~40 ms here) makes each offline guess costly;
    the server computes it off the event loop.
    """

    salt: bytes
    digest: bytes

    @classmethod
    def create(cls, password: str) -> PasswordHash:
        salt = secrets.token_bytes(16)
        return cls(salt, _scrypt(password, salt))

    def verify(self, password: str | None) -> bool:
        candidate = _scrypt(password or "", self.salt)
        return hmac.compare_digest(candidate, self.digest)  # constant-time (section 1)


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=2**14, r=8, p=1, dklen=32)
