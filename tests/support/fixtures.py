"""The WhatsApp webhook fixtures (shipped in app/devtools/fixtures) and signing."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "app" / "devtools" / "fixtures"

#: The app secret tests sign with.
APP_SECRET = "test-app-secret"


def raw(name: str) -> bytes:
    """A fixture's bytes, exactly as stored (never re-serialised)."""
    return (FIXTURES / name).read_bytes()


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    """The X-Hub-Signature-256 header Meta would send for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
