"""Passwords: stored only as salted scrypt hashes; checked in constant time.

scrypt is slow on purpose (tens of ms), so a server remembers, for this process only, a keyed
digest of the last password that verified for each user; a changed password invalidates it.
"""
import hashlib
import hmac
import os
import re

from strife.core.errors import BadInput

SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "dklen": 32}
MIN_LENGTH, MAX_LENGTH = 8, 128
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


class PasswordError(BadInput, ValueError):
    pass


def check_strength(password):
    """A password must fit in gRPC metadata (printable ASCII), or its user could never log in."""
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise PasswordError(f"password: a password has {MIN_LENGTH} to {MAX_LENGTH} characters")
    if not can_travel(password):
        if _PRINTABLE_ASCII.fullmatch(password):
            raise PasswordError("password: no space at the start or the end")
        raise PasswordError("password: only printable ASCII characters (letters, digits, punctuation, "
                            "inner spaces): no accents, tabs or control characters")


def can_travel(password):
    """gRPC metadata carries printable ASCII, and may strip spaces at either end."""
    return bool(_PRINTABLE_ASCII.fullmatch(password)) and password == password.strip(" ")


def hash_password(password, salt=None):
    """(salt, hash) to store."""
    salt = salt or os.urandom(16)
    return salt, hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)


def verify(password, salt, expected):
    return hmac.compare_digest(hashlib.scrypt(password.encode(), salt=salt, **SCRYPT), expected)


class VerifiedCache:
    """user -> keyed digest of the password that last verified; never persisted, never logged."""

    def __init__(self):
        self._key = os.urandom(32)
        self._digests = {}

    def digest(self, password):
        """This process's keyed digest of `password`: comparable, not reversible, never persisted."""
        return hmac.new(self._key, password.encode(), hashlib.sha256).digest()

    def hit(self, user, password):
        known = self._digests.get(user)
        return known is not None and hmac.compare_digest(known, self.digest(password))

    def remember(self, user, password):
        self._digests[user] = self.digest(password)

    def forget(self, user):
        self._digests.pop(user, None)
