"""Falcon ``before`` hooks: a capped body, Meta's signature, the operator's token.

Each hook reads its setting from the resource it guards (resources take
their configuration in ``__init__``), so one hook serves every instance.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import falcon

__all__ = ["read_capped_body", "verify_signature", "require_operator_token", "SIGNATURE_HEADER"]

#: The header Meta signs webhook bodies in: ``sha256=<hex HMAC-SHA256>``.
SIGNATURE_HEADER = "X-Hub-Signature-256"


def read_capped_body(req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
    """Read at most ``resource.max_body_bytes`` into ``req.context.raw_body``.

    A declared Content-Length over the cap is refused before reading; a
    body without one is read one byte past the cap, never further.
    """
    limit: int = resource.max_body_bytes
    too_large = falcon.HTTPContentTooLarge(
        title="Body too large", description=f"the body must be at most {limit} bytes")
    if req.content_length is not None and req.content_length > limit:
        raise too_large
    # NOTE: Falcon's bounded_stream reads nothing without a Content-Length;
    # a chunked body is read from the server's own stream (gunicorn ends
    # it at the last chunk), still never more than one byte past the cap.
    stream = req.bounded_stream if req.content_length is not None else req.stream
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise too_large
    req.context.raw_body = raw


def verify_signature(req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]) -> None:
    """Check X-Hub-Signature-256 over the raw bytes with ``resource.app_secret``.

    Runs after :func:`read_capped_body`.  The hex digests are compared in
    constant time.
    """
    secret: str | None = resource.app_secret
    if not secret:
        req.context.outcome = "unconfigured"  # named apart in the webhook's metrics: not an outage
        raise falcon.HTTPServiceUnavailable(
            title="Webhook not configured",
            description="WHATSAPP_APP_SECRET is not configured, so no signature can be checked")
    header = req.get_header(SIGNATURE_HEADER)
    if not header:
        raise falcon.HTTPUnauthorized(title="Signature missing",
                                      description=f"the {SIGNATURE_HEADER} header is missing")
    scheme, _, given = header.partition("=")
    expected = hmac.new(secret.encode(), req.context.raw_body, hashlib.sha256).hexdigest()
    if scheme != "sha256" or not hmac.compare_digest(given.strip().lower().encode(), expected.encode()):
        raise falcon.HTTPUnauthorized(
            title="Signature mismatch",
            description=f"{SIGNATURE_HEADER} does not match the body (sign the raw bytes with the app secret)")


def require_operator_token(req: falcon.Request, resp: falcon.Response, resource: Any,
                           params: dict[str, Any]) -> None:
    """Let through only ``Authorization: Bearer <resource.operator_token>``."""
    token: str | None = resource.operator_token
    challenge = ["Bearer"]
    if not token:
        raise falcon.HTTPUnauthorized(
            title="Operator API disabled", description="OPERATOR_TOKEN is not configured", challenges=challenge)
    scheme, _, given = (req.get_header("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise falcon.HTTPUnauthorized(
            title="Token missing", description="send Authorization: Bearer <OPERATOR_TOKEN>", challenges=challenge)
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise falcon.HTTPUnauthorized(
            title="Token invalid", description="the bearer token is not the operator token", challenges=challenge)
