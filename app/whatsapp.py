"""The WhatsApp Cloud API client: send a text, mark a message read.

Errors are classified by Meta's ``error.code``, not by HTTP status
(throttling comes back as HTTP 400): :class:`WhatsAppTransientError` is
retried by the task policy, :class:`WhatsAppPermanentError` is recorded
on the message and not retried.  A network failure or timeout is
transient.  A failure after the request may have reached Meta (a read
timeout, a dropped connection, a garbled answer) is marked
``maybe_sent``: Meta may have accepted the message, so the outbox must
not resend it blindly (DESIGN.md, "Idempotent reply").  Only failures
before the request left (no connection, no free pooled connection)
are known not to have sent anything.

httpx is the transport: it is already installed (LangGraph's SDK needs
it), has explicit connect/read timeouts and a typed exception hierarchy,
and a client is safe to share between a worker's threads.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import httpx

from app.errors import AppError, ConfigError, TransientError

if TYPE_CHECKING:
    from app.config import Config

__all__ = [
    "WhatsAppClient",
    "WhatsAppError",
    "WhatsAppTransientError",
    "WhatsAppPermanentError",
    "TRANSIENT_CODES",
    "PERMANENT_CODES",
    "MAX_TEXT_LENGTH",
    "fit_text",
]

logger = logging.getLogger(__name__)

#: Meta error codes worth retrying: throttling (130429, 131056, 4, 80007)
#: and Meta's own temporary failures (131000 unknown, 131016 service unavailable).
TRANSIENT_CODES = frozenset({130429, 131056, 4, 80007, 131000, 131016})
#: Meta error codes that will fail again: outside the 24 h window (131047),
#: not a WhatsApp user (131026), opted out (131050), unsupported type
#: (131051), bad parameters (131008, 131009, 100), bad token (190),
#: blocked account (368).  Other codes follow the HTTP status.
PERMANENT_CODES = frozenset({131047, 131026, 131050, 131051, 131008, 131009, 100, 190, 368})
#: Transport failures that happen before a request is sent: nothing
#: reached Meta, so sending again cannot duplicate a message.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: WhatsApp's limit on a text message body, in characters.
MAX_TEXT_LENGTH = 4096


#: Ends a text cut to MAX_TEXT_LENGTH.
ELLIPSIS = "…"
#: Where a sentence may end inside a text.
_SENTENCE_END = re.compile(r"[.!?](?=\s)|\n")


def fit_text(text: str, *, limit: int = MAX_TEXT_LENGTH) -> str:
    """``text`` cut to ``limit`` characters, if it is longer: at the last
    sentence end in its second half, else at the last space, else hard,
    with an ellipsis that says something is missing.

    One reply is one WhatsApp message (one outbox row per batch), so a
    long answer is cut rather than split into several messages.
    """
    if len(text) <= limit:
        return text
    room = limit - len(ELLIPSIS) - 1  # a space before the ellipsis
    head = text[:room + 1]  # one more: a boundary right after the room counts
    ends = [m.end() for m in _SENTENCE_END.finditer(head) if room // 2 <= m.end() <= room]
    if ends:
        return f"{head[:ends[-1]].rstrip()} {ELLIPSIS}"
    space = head.rfind(" ", room // 2, room + 1)
    cut = head[:space] if space > 0 else head[:room]
    return f"{cut.rstrip()}{ELLIPSIS}"


class WhatsAppError(AppError):
    """The Cloud API did not do what was asked.

    Attributes:
      code: Meta's ``error.code``, or None (network failure, no error JSON).
      title: Meta's short description of the error.
      http_status: the HTTP status, or None when no answer came.
      maybe_sent: True when the request may have reached Meta although no
        answer came back (the message may have been sent).
    """

    def __init__(self, title: str, *, code: int | None = None, http_status: int | None = None,
                 maybe_sent: bool = False) -> None:
        self.code = code
        self.title = title
        self.http_status = http_status
        self.maybe_sent = maybe_sent
        where = f"HTTP {http_status}" if http_status is not None else "no answer"
        super().__init__(f"WhatsApp error {code if code is not None else '-'} ({where}): {title}")


class WhatsAppTransientError(WhatsAppError, TransientError):
    """Throttling, Meta's temporary failures, 5xx, network: retried by the task policy."""


class WhatsAppPermanentError(WhatsAppError):
    """The request will fail again as it is: recorded on the message, not retried."""


def classify(http_status: int, body: Any) -> WhatsAppError:
    """The error of a failed response, by ``error.code`` first, then HTTP status."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    raw_code = error.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    title = str(error.get("error_user_title") or error.get("title") or error.get("message")
                or f"HTTP {http_status} without an error description")
    if code in TRANSIENT_CODES:
        transient = True
    elif code in PERMANENT_CODES:
        transient = False
    else:
        transient = http_status >= 500 or http_status == 429
    cls = WhatsAppTransientError if transient else WhatsAppPermanentError
    return cls(title, code=code, http_status=http_status)


class WhatsAppClient:
    """Sends through ``{base_url}/{phone_number_id}/messages`` with a bearer token.

    Parameters:
      base_url: the Graph API with its version, e.g.
        ``https://graph.facebook.com/v21.0`` (WHATSAPP_API_BASE).
      token: the access token (WHATSAPP_TOKEN).
      phone_number_id: the business number's id (WHATSAPP_PHONE_NUMBER_ID).
      timeout_s: how long one call may take; a timeout is transient.
    """

    def __init__(self, base_url: str, token: str, phone_number_id: str, *, timeout_s: float = 10.0) -> None:
        if not token or not phone_number_id:
            raise ConfigError("the WhatsApp client needs a token and a phone number id")
        self.url = f"{base_url.rstrip('/')}/{phone_number_id}/messages"
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )

    @classmethod
    def from_config(cls, config: Config) -> WhatsAppClient:
        """A client for WHATSAPP_API_BASE, WHATSAPP_TOKEN and WHATSAPP_PHONE_NUMBER_ID.

        Raises:
          ConfigError: the token or the phone number id is not set.
        """
        missing = [name for name, value in (("WHATSAPP_TOKEN", config.whatsapp_token),
                                            ("WHATSAPP_PHONE_NUMBER_ID", config.whatsapp_phone_number_id))
                   if not value]
        if missing:
            raise ConfigError(f"{' and '.join(missing)} must be set to send WhatsApp messages")
        assert config.whatsapp_token and config.whatsapp_phone_number_id
        return cls(config.whatsapp_api_base, config.whatsapp_token, config.whatsapp_phone_number_id,
                   timeout_s=config.whatsapp_timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WhatsAppClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_text(self, *, to: str | None, recipient: str | None, text: str,
                  callback_data: str | None = None) -> str:
        """Send ``text`` to a phone number (``to``) or, for a customer known
        only by a business-scoped user id, to ``recipient``.  ``to`` wins
        when both are given.

        Parameters:
          callback_data: echoed back in the message's statuses
            (``biz_opaque_callback_data``), e.g. the batch id.

        Returns:
          The wamid of the sent message.

        Raises:
          ValueError: neither ``to`` nor ``recipient``, or an empty or too
            long text (retrying cannot help).
          WhatsAppTransientError, WhatsAppPermanentError: see the module.
        """
        if not to and not recipient:
            raise ValueError("send_text needs `to` (a phone number) or `recipient` (a user id)")
        if not text.strip():
            raise ValueError("send_text needs a non-empty text")
        if len(text) > MAX_TEXT_LENGTH:
            raise ValueError(f"a WhatsApp text is at most {MAX_TEXT_LENGTH} characters, got {len(text)}")
        payload: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual"}
        if to:
            payload["to"] = to
        else:
            payload["recipient"] = recipient
        payload["type"] = "text"
        payload["text"] = {"body": text}
        if callback_data is not None:
            payload["biz_opaque_callback_data"] = callback_data
        body = self._post(payload)
        messages = body.get("messages") if isinstance(body, dict) else None
        wamid = messages[0].get("id") if isinstance(messages, list) and messages and isinstance(
            messages[0], dict) else None
        if not isinstance(wamid, str) or not wamid:
            # It may have been sent: not retried, so the customer never gets it twice.
            raise WhatsAppPermanentError("the send was accepted without a message id", http_status=200)
        logger.info("Sent WhatsApp message %s.", wamid)
        return wamid

    def mark_read(self, wamid: str, *, typing: bool = True) -> None:
        """Mark the customer's message ``wamid`` read, and show a typing
        indicator (until the reply or 25 s) when ``typing``."""
        if not wamid:
            raise ValueError("mark_read needs the wamid of an inbound message")
        payload: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
        if typing:
            payload["typing_indicator"] = {"type": "text"}
        self._post(payload)

    def _post(self, payload: dict[str, Any]) -> Any:
        try:
            response = self._http.post(self.url, json=payload)
        except _NOT_SENT as e:
            # The request never left this machine: nothing was sent.
            raise WhatsAppTransientError(f"not sent: {type(e).__name__}: {e}") from e
        except httpx.TimeoutException as e:
            # Read or write timeout: Meta may have the request, and may act on it.
            raise WhatsAppTransientError(f"timed out: {type(e).__name__}", maybe_sent=True) from e
        except httpx.TransportError as e:
            raise WhatsAppTransientError(f"network error: {type(e).__name__}: {e}", maybe_sent=True) from e
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_success:
            return body
        error = classify(response.status_code, body)
        logger.warning("WhatsApp refused a request: %s.", error)
        raise error from None
