"""Who may use the monitor: HTTP basic auth, Flower 2's API rule, and forgery-proof actions.

- With ``--basic-auth`` every path but ``/healthcheck`` and ``/metrics``
  needs one of the given ``user:password`` pairs (401 with
  ``WWW-Authenticate`` otherwise).  Every pair is compared, in constant
  time, so the answer's timing tells nothing about which part was wrong.
- Without it, ``/api/...`` answers 401 unless ``FLOWER_UNAUTHENTICATED_API``
  is true, as Flower 2 does.
- Actions (POST: dead-letter retry and delete) are guarded at least as
  strictly as the API: credentials, or ``FLOWER_UNAUTHENTICATED_API``.
- Actions need the ``X-Monitor-Action`` header, which a cross-site page
  cannot send without a CORS preflight the monitor never grants, and, when
  the browser says where the request comes from (``Origin``,
  ``Sec-Fetch-Site``), an origin whose host is allowed.
- The ``Host`` header must name an allowed host (loopback, the bind
  address, ``FLOWER_ALLOWED_HOSTS``): after a DNS rebinding a hostile page
  is same-origin with the monitor, but its requests carry the attacker's
  host name.  ``*`` allows any host.
- Paths are judged with repeated slashes collapsed, as the router reads
  them (``//api/workers`` is ``/api/workers``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

import falcon

__all__ = ["AuthMiddleware", "ACTION_HEADER", "OPEN_PATHS", "LOOPBACK_HOSTS", "parse_credentials", "host_name"]

#: The header the monitor's own pages send with every action.
ACTION_HEADER = "X-Monitor-Action"

#: Paths that never need credentials (Flower's exemptions: probes and scrapers).
OPEN_PATHS = ("/healthcheck", "/metrics")

REALM = 'Basic realm="flower"'

#: Host names always allowed.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_name(value: str) -> str:
    """``Example.org:5555`` -> ``example.org``; ``[::1]:5555`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def parse_credentials(values: Sequence[str]) -> list[str]:
    """``user:password`` pairs from ``--basic-auth`` values (repeated and/or comma-separated).

    Raises:
      ValueError: a pair without a colon, or with an empty user.
    """
    pairs = []
    for value in values:
        for pair in value.split(","):
            pair = pair.strip()
            if not pair:
                continue
            user, colon, _password = pair.partition(":")
            if not colon or not user:
                raise ValueError(f"--basic-auth expects user:password, got {pair.split(':')[0]!r}...")
            pairs.append(pair)
    return pairs


def _given(req: falcon.Request) -> bytes | None:
    header = req.get_header("Authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        return base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


class AuthMiddleware:
    """Falcon middleware applying the rules above.

    Parameters:
      credentials: allowed ``user:password`` pairs; empty means no basic auth.
      unauthenticated_api: Flower's ``FLOWER_UNAUTHENTICATED_API``.
      allowed_hosts: host names (no port) requests may name in ``Host`` and
        ``Origin``; ``*`` among them allows any.
    """

    def __init__(self, credentials: Sequence[str], *, unauthenticated_api: bool,
                 allowed_hosts: Sequence[str] = LOOPBACK_HOSTS) -> None:
        self._pairs = [c.encode("utf-8") for c in credentials]
        self.unauthenticated_api = unauthenticated_api
        self.allowed_hosts = frozenset(host_name(h) for h in allowed_hosts)

    def _allowed(self, given: bytes | None) -> bool:
        if given is None:
            return False
        ok = False
        for pair in self._pairs:
            ok |= hmac.compare_digest(given, pair)
        return ok

    def _host_allowed(self, value: str | None) -> bool:
        return "*" in self.allowed_hosts or (value is not None and host_name(value) in self.allowed_hosts)

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        path = re.sub("/{2,}", "/", req.path).rstrip("/") or "/"
        if path in OPEN_PATHS:
            return
        if not self._host_allowed(req.get_header("Host")):
            raise falcon.HTTPBadRequest(
                title="Bad Request",
                description=f"host {req.get_header('Host')!r} is not allowed; add it to FLOWER_ALLOWED_HOSTS")
        if self._pairs:
            if not self._allowed(_given(req)):
                raise falcon.HTTPUnauthorized(title="Unauthorized", description="credentials required",
                                              challenges=[REALM])
        elif (path.startswith("/api") or req.method == "POST") and not self.unauthenticated_api:
            raise falcon.HTTPUnauthorized(
                title="Unauthorized",
                description="the API and actions need --basic-auth; set FLOWER_UNAUTHENTICATED_API=true to open "
                            "them without",
            )
        if req.method == "POST":
            self._check_same_origin(req)

    def _check_same_origin(self, req: falcon.Request) -> None:
        if req.get_header(ACTION_HEADER) is None:
            raise falcon.HTTPForbidden(title="Forbidden", description=f"actions need the {ACTION_HEADER} header")
        site = req.get_header("Sec-Fetch-Site")
        if site is not None and site not in ("same-origin", "none"):
            raise falcon.HTTPForbidden(title="Forbidden", description="cross-site action refused")
        origin = req.get_header("Origin")
        if origin is None:
            return
        netloc = urlsplit(origin).netloc
        if "*" in self.allowed_hosts:
            same = netloc == (req.get_header("Host") or "")
        else:
            same = self._host_allowed(netloc)
        if not same:
            raise falcon.HTTPForbidden(title="Forbidden", description="cross-origin action refused")
