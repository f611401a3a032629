"""Bearer tokens as credentials: their format, how they are made, hashed and compared, and when a stored one is
still usable. The lowest layer of access: `app.security` (who may call what) is built on it.

A token reads `crl_<key id: 16 hex>_<secret: 32 random bytes, base64url>`. The key id finds the row; the
SHA-256 of the whole token is compared in constant time. Only the hash is stored, so a token is shown once.
"""

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

TOKEN_PREFIX = "crl_"
TOKEN_SHAPE = re.compile(r"^crl_([0-9a-f]{16})_([A-Za-z0-9_\-]{43})$")
# Registration tokens look different on purpose: they are never accepted as bearer tokens.
REGISTRATION_PREFIX = "crlreg_"
REGISTRATION_SHAPE = re.compile(r"^crlreg_([0-9a-f]{16})_([A-Za-z0-9_\-]{43})$")
# Hashed when the key id is unknown, so a miss costs the same as a wrong secret.
_DUMMY_HASH = hashlib.sha256(b"corral-no-such-token").hexdigest()


@dataclass(frozen=True)
class NewToken:
    plaintext: str
    key_id: str
    secret_hash: str


def generate_token(prefix: str = TOKEN_PREFIX) -> NewToken:
    key_id = secrets.token_hex(8)
    plaintext = f"{prefix}{key_id}_{secrets.token_urlsafe(32)}"
    return NewToken(plaintext=plaintext, key_id=key_id, secret_hash=hash_token(plaintext))


def secret_matches(stored_hash: str | None, plaintext: str) -> bool:
    """Constant-time comparison; a missing row is compared against a dummy so both cost the same."""
    return hmac.compare_digest(stored_hash or _DUMMY_HASH, hash_token(plaintext)) and stored_hash is not None


def hash_token(plaintext: str) -> str:
    # A fast hash is right here: the secret has 256 bits of entropy, so there is nothing to brute-force.
    return hashlib.sha256(plaintext.encode()).hexdigest()


class UsableToken(Protocol):
    """What says whether a token can be used: a stored row, or its cached record."""

    @property
    def revoked_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime | None: ...


def token_refusal(token: UsableToken, now: datetime) -> str | None:
    """Why a stored token cannot be used at `now`; None when it can (the API's `active`)."""
    if token.revoked_at is not None:
        return "The token has been revoked."
    if token.expires_at is not None and token.expires_at <= now:
        return "The token has expired."
    return None
