"""Encryption of service tokens at rest with MultiFernet.

The first key in settings.TOKEN_ENCRYPTION_KEYS encrypts; every key decrypts. Rotating keys: put the new
key first, run `manage.py rotate_token_keys`, then drop the old key.
"""

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class TokenDecryptionError(Exception):
    """The stored token cannot be read with any configured key (a key was removed too early)."""


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.TOKEN_ENCRYPTION_KEYS])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenDecryptionError("no configured TOKEN_ENCRYPTION_KEYS entry decrypts this token") from None


def reencrypt(ciphertext: str) -> str:
    """The same plaintext encrypted with the current first key."""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        raise TokenDecryptionError("no configured TOKEN_ENCRYPTION_KEYS entry decrypts this token") from None
