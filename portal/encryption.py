"""Secrets at rest: provider keys and connector credentials are stored encrypted with Fernet keys from
`PORTAL_ENCRYPTION_KEYS` (comma-separated, newest first), through cryptography's MultiFernet.

The first key encrypts; every key decrypts, so a new key goes in front, `portal secrets rotate` re-encrypts
everything with it, and the old key can then be removed. Without a key, the database holds no usable secret.
A stored secret is text prefixed with `fernet:`; a value without the prefix was stored before encryption and is
read as it is until `portal secrets rotate` encrypts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

VARIABLE = "PORTAL_ENCRYPTION_KEYS"
PREFIX = "fernet:"


class EncryptionKeyError(Exception):
    """The configured keys cannot do what is asked: none set, one that is not a key, or none that opens a
    stored secret. The message names PORTAL_ENCRYPTION_KEYS and says what to do."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key.encode()))
            except (ValueError, TypeError) as exc:
                raise EncryptionKeyError(
                    f"{VARIABLE}: key {position} is not a Fernet key (32 url-safe base64-encoded bytes); make one "
                    "with `portal secrets generate-key`") from exc
        self._fernet = MultiFernet(fernets) if fernets else None

    @property
    def configured(self) -> bool:
        return self._fernet is not None

    def _keys(self) -> MultiFernet:
        if self._fernet is None:
            raise EncryptionKeyError(f"{VARIABLE} is not set, so secrets cannot be stored or read: make a key with "
                                     f"`portal secrets generate-key` and set {VARIABLE} to it")
        return self._fernet

    def seal(self, plaintext: str) -> str:
        return PREFIX + self._keys().encrypt(plaintext.encode()).decode()

    def open(self, stored: str) -> str:
        if not is_sealed(stored):
            return stored  # stored before encryption: `portal secrets rotate` seals it
        try:
            return self._keys().decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken as exc:
            raise EncryptionKeyError(f"{VARIABLE} holds none of the keys that encrypted a stored secret: put the "
                                     "key it was encrypted with back in the list (newest first)") from exc

    def reseal(self, stored: str) -> str:
        """The same secret, encrypted with the newest key (plaintext from before encryption is sealed)."""
        if not is_sealed(stored):
            return self.seal(stored)
        try:
            return PREFIX + self._keys().rotate(stored[len(PREFIX):].encode()).decode()
        except InvalidToken as exc:
            raise EncryptionKeyError(f"{VARIABLE} holds none of the keys that encrypted a stored secret") from exc


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


@lru_cache(maxsize=8)
def secret_box(keys: tuple[str, ...]) -> SecretBox:
    """One box per set of keys (building MultiFernet for every read would be waste)."""
    return SecretBox(keys)
