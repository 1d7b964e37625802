"""A server's key as people compare it: ``SHA256:`` and the base64 (no padding) of the
SHA-256 of the certificate's SubjectPublicKeyInfo, as SSH prints its keys (section 5 of
docs/protocol.md).

Over the key, not the certificate: a certificate re-issued for the same key (renewed,
another name) keeps its fingerprint, as a host key does in SSH. Pure: DER bytes in,
text out; both the server (its log) and the client (known_servers) use it.
"""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["FINGERPRINT_PATTERN", "fingerprint", "is_fingerprint"]

# "SHA256:" and 43 base64 characters: 32 bytes without the one "=" of padding.
FINGERPRINT_PATTERN = re.compile(r"SHA256:[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]")


def fingerprint(certificate_der: bytes) -> str:
    """The fingerprint of the key in a DER certificate. ValueError if it is not one."""
    certificate = x509.load_der_x509_certificate(certificate_der)
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.sha256(spki).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def is_fingerprint(text: str) -> bool:
    """Whether ``text`` is a fingerprint as :func:`fingerprint` writes it."""
    return FINGERPRINT_PATTERN.fullmatch(text) is not None
