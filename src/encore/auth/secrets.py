"""The server master key: loading it, deriving purpose keys, and encrypting secrets at rest."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from encore.config import Settings, SettingsError

MASTER_KEY_BYTES = 32
_NONCE_BYTES = 12


def decode_master_key(text: str) -> bytes:
    """The key bytes of a base64url master key; ValueError if it is not one of 32+ bytes."""
    cleaned = text.strip()
    try:
        raw = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("the secret key must be base64url text") from None
    if len(raw) < MASTER_KEY_BYTES:
        raise ValueError(
            f"the secret key must hold at least {MASTER_KEY_BYTES} random bytes; "
            'make one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return raw


def load_master_key(settings: Settings) -> bytes:
    """The master key from ENCORE_SECRET_KEY or its file, creating the file on first start."""
    if settings.secret_key is not None:
        return decode_master_key(settings.secret_key.get_secret_value())
    path = Path(settings.secret_key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: two processes starting at once must not overwrite each other's key.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                file.write(secrets.token_urlsafe(MASTER_KEY_BYTES) + "\n")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(
            f"ENCORE_SECRET_KEY_FILE: {path} is readable by other users; chmod 600 it"
        )
    try:
        return decode_master_key(path.read_text(encoding="ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise SettingsError(f"ENCORE_SECRET_KEY_FILE: {path}: {exc}") from None


def derive_key(master_key: bytes, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose, derived from the master key (HKDF-SHA256)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=f"encore:{purpose}".encode()
    ).derive(master_key)


class DecryptionError(Exception):
    """A sealed value was tampered with, or sealed under another key."""


@dataclass(frozen=True)
class SecretBox:
    """AES-256-GCM sealing of small secrets at rest, bound to what they belong to."""

    key: bytes

    @classmethod
    def for_purpose(cls, master_key: bytes, purpose: str) -> SecretBox:
        """A box whose key is derived from the master key for this purpose."""
        return cls(derive_key(master_key, purpose))

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        """Encrypt; `context` (say, the owner's id) must be given again to open it."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, *, context: bytes) -> bytes:
        """Decrypt a sealed value, or raise DecryptionError."""
        from cryptography.exceptions import InvalidTag

        try:
            return AESGCM(self.key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context)
        except (InvalidTag, ValueError):
            raise DecryptionError("sealed value does not open with this key") from None
