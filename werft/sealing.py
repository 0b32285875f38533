"""Sealing the secret store's values at rest: AES-256-GCM under a key werft is given.

The store holds every cluster's CA keys and admin tokens. In a SQL store that is one
table, and whoever reads the database or a backup of it could act as admin on every
cluster of the fleet. With ``WERFT_STORE_KEY`` set (on every worker, like
``WERFT_STORE_URL``), each value is sealed before it leaves the process:

    b"werft-sealed:v1:" + key id (8 bytes) + nonce (12 bytes) + AES-256-GCM(value)

with the value's name as associated data, so a sealed value copied under another name
(one cluster's CA key over another's) does not open. The key id is the first 8 bytes of
the key's SHA-256: a value names the key that sealed it, never the key itself.

``WERFT_STORE_KEY`` is a comma-separated list of keys (32 bytes each, URL-safe base64;
``werft secret new-store-key`` makes one). The first seals; every one of them opens. To
rotate: put the new key first and keep the old one after it until no value needs it.

A value written before sealing was switched on is read as it is, and sealed when it is
next written; ``werft secret seal`` seals every such value at once, and re-seals with the
first key what an older key sealed (``seal_all``). Reads
never write: a file store's compare-and-set passes through "absent", and a worker that
read "absent" for a CA key would make a new CA. A sealed value read without its key is a
``PermanentError`` that names the key id and the variable; nothing is ever returned
half-decrypted or guessed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from werft.errors import PermanentError
from werft.redact import register_secret

if TYPE_CHECKING:
    from werft.statestore import StateBackend

STORE_KEY_ENV = "WERFT_STORE_KEY"
MAGIC = b"werft-sealed:v1:"
KEY_BYTES = 32
_ID_BYTES = 8
_NONCE_BYTES = 12


@dataclass(frozen=True)
class StoreKey:
    id: bytes
    aead: AESGCM

    @classmethod
    def from_bytes(cls, key: bytes) -> StoreKey:
        return cls(hashlib.sha256(key).digest()[:_ID_BYTES], AESGCM(key))


def new_store_key() -> str:
    """A fresh key, as ``WERFT_STORE_KEY`` takes it."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def store_keys_from_env() -> list[StoreKey]:
    """The keys in ``WERFT_STORE_KEY`` (none when it is unset), the sealing one first."""
    raw = os.environ.get(STORE_KEY_ENV, "")
    keys = []
    for position, text in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not text:
            continue
        register_secret(text)  # masked in every log record from now on
        try:
            key = base64.urlsafe_b64decode(text.encode())
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise PermanentError(
                f"{STORE_KEY_ENV}: key {position} is not {KEY_BYTES} bytes in URL-safe "
                f"base64 ({len(new_store_key())} characters); make one with "
                "`werft secret new-store-key`"
            )
        keys.append(StoreKey.from_bytes(key))
    return keys


class SealedBackend:
    """``inner`` with every value sealed on the way in and opened on the way out; names
    and the primitives' guarantees are ``inner``'s. Without keys it writes plain values
    and refuses to hand out sealed ones."""

    def __init__(self, inner: StateBackend, keys: Sequence[StoreKey]) -> None:
        self.inner = inner
        self._sealing = keys[0] if keys else None
        self._opening = {key.id: key for key in keys}
        sealed = f", values sealed with key {self._sealing.id.hex()}" if self._sealing else ""
        self.description = inner.description + sealed

    # --- sealing ------------------------------------------------------------------------

    def _seal(self, name: str, value: bytes) -> bytes:
        if self._sealing is None:
            return value
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._sealing.aead.encrypt(nonce, value, name.encode())
        return MAGIC + self._sealing.id + nonce + sealed

    def _open(self, name: str, stored: bytes) -> bytes:
        if not stored.startswith(MAGIC):
            return stored  # written before sealing was switched on
        body = stored[len(MAGIC) :]
        key_id, nonce, sealed = (
            body[:_ID_BYTES],
            body[_ID_BYTES : _ID_BYTES + _NONCE_BYTES],
            body[_ID_BYTES + _NONCE_BYTES :],
        )
        key = self._opening.get(key_id)
        if key is None:
            held = ", ".join(k.hex() for k in self._opening) or "none: it is not set"
            raise PermanentError(
                f"state store {self.inner.description}: {name} is sealed with key "
                f"{key_id.hex()}, which {STORE_KEY_ENV} does not hold (it holds {held}); "
                "give every worker the key the store was sealed with"
            )
        try:
            return key.aead.decrypt(nonce, sealed, name.encode())
        except InvalidTag:
            raise PermanentError(
                f"state store {self.inner.description}: {name} does not open with key "
                f"{key_id.hex()}: it was altered, or copied from another name"
            ) from None

    def _read(self, name: str) -> tuple[bytes, bytes] | None:
        """(what is stored, its plain value)."""
        stored = self.inner.get(name)
        return None if stored is None else (stored, self._open(name, stored))

    def seal_all(self) -> tuple[int, int]:
        """Seal with the first key every value that is not: written before sealing was
        switched on, or sealed with a key rotated out. (sealed now, sealed already.) Each
        is replaced by an atomic overwrite, so the name is never absent, not by a
        compare-and-set (a file store's passes through "absent"): meant for a store no
        run is using, where nobody writes between the read and the overwrite."""
        if self._sealing is None:
            raise PermanentError(f"{STORE_KEY_ENV} is not set: there is no key to seal with")
        current = MAGIC + self._sealing.id
        sealed = already = 0
        for name in self.inner.walk():
            found = self._read(name)
            if found is None:
                continue
            if found[0].startswith(current):
                already += 1
            else:
                self.inner.put(name, self._seal(name, found[1]))
                sealed += 1
        return sealed, already

    # --- StateBackend -------------------------------------------------------------------

    def get(self, name: str) -> bytes | None:
        found = self._read(name)
        return None if found is None else found[1]

    def put(self, name: str, value: bytes) -> None:
        self.inner.put(name, self._seal(name, value))

    def put_if_absent(self, name: str, value: bytes) -> bytes:
        return self._open(name, self.inner.put_if_absent(name, self._seal(name, value)))

    def replace_if(self, name: str, expected: bytes, value: bytes) -> bool:
        # Sealing is randomised: compare plain values, then swap exactly what was read.
        found = self._read(name)
        if found is None or found[1] != expected:
            return False
        return self.inner.replace_if(name, found[0], self._seal(name, value))

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def delete_if(self, name: str, expected: bytes) -> bool:
        found = self._read(name)
        if found is None or found[1] != expected:
            return False
        return self.inner.delete_if(name, found[0])

    def names(self, prefix: str) -> list[str]:
        return self.inner.names(prefix)

    def walk(self) -> list[str]:
        return self.inner.walk()
