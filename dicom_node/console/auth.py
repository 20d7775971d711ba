"""The console's sign-in: the API token, then a signed, secure, HttpOnly session cookie.

The operator types a name (it goes to the audit log with every approval, rejection and
retry) and the node's API token. The answer sets :data:`COOKIE` to
``<name, base64>.<expiry>.<HMAC-SHA256>``, keyed by a secret derived from the token (a
token change signs every session out); ``Secure``, ``HttpOnly``, ``SameSite=Strict``.
Forms carry a CSRF value derived from the session (:func:`csrf_value`).

A node without a token (loopback only, like its REST API) asks for the name alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass

__all__ = ["COOKIE", "SESSION_S", "Session", "SessionSigner", "clean_name"]

#: The session cookie's name.
COOKIE = "mrinode_console"
#: How long a sign-in lasts (seconds).
SESSION_S = 12 * 3600

_NAME = re.compile(r"[^A-Za-z0-9 ._@-]")


def clean_name(name: str) -> str:
    """An operator's name as recorded: letters, digits, `` ._@-``, at most 64 characters (``operator`` if empty)."""
    cleaned = _NAME.sub("", name).strip()[:64]
    return cleaned or "operator"


@dataclass(frozen=True)
class Session:
    """A signed-in operator."""

    name: str
    expires: int

    @property
    def who(self) -> str:
        """How the audit log names the operator."""
        return f"console:{self.name}"


class SessionSigner:
    """Signs and checks session cookies and CSRF values.

    Parameters
    ----------
    token : str or None
        The API token (``None``: no token; sessions are signed with a per-process key).
    """

    def __init__(self, token: str | None) -> None:
        self.token = token
        seed = token.encode() if token is not None else os.urandom(32)
        self._key = hashlib.sha256(b"mrinode-console-session\x00" + seed).digest()

    def token_ok(self, given: str) -> bool:
        """Whether ``given`` is the API token (constant time); always true without a token."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, name: str, now: float | None = None) -> str:
        """A cookie value for ``name`` valid for :data:`SESSION_S`."""
        expires = int((time.time() if now is None else now) + SESSION_S)
        payload = f"{base64.urlsafe_b64encode(clean_name(name).encode()).decode()}.{expires}"
        return f"{payload}.{self._mac(payload)}"

    def check(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value stands for, or ``None`` (missing, forged or expired)."""
        if not value or value.count(".") != 2:
            return None
        b64, expires_s, mac = value.split(".")
        if not hmac.compare_digest(self._mac(f"{b64}.{expires_s}"), mac):
            return None
        try:
            expires = int(expires_s)
            name = base64.urlsafe_b64decode(b64.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if expires < (time.time() if now is None else now):
            return None
        return Session(clean_name(name), expires)

    def csrf_value(self, cookie: str) -> str:
        """The value a form of this session must post back as ``csrf``."""
        return self._mac("csrf\x00" + cookie)[:32]

    def csrf_ok(self, cookie: str, given: str) -> bool:
        """Whether a posted ``csrf`` value belongs to the session (constant time)."""
        return hmac.compare_digest(self.csrf_value(cookie), given)
