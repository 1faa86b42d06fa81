"""``/webhook``: Meta's verification handshake and its notifications.

A notification is answered within milliseconds: the handler checks the
size and the signature, parses, runs the dedup-and-append script per
inbound message and enqueues; the work happens in actors.

What each answer promises Meta:

- 200: everything in the body is stored (buffered, with its buffer check
  scheduled, or enqueued), or the body is poison and kept in the
  rejected-bodies set with its reason.  A body with good and bad parts
  is both: the good parts are stored, and the body is kept once, with
  every bad part's place and reason (:mod:`app.web.rejected`).  A signed
  body is never answered 5xx for what it holds, only when a store fails.
- 503: something was not stored or not scheduled (Redis or the queue
  unavailable); Meta sends the body again.
- 401/413: the body is not Meta's, or is larger than the cap.

Messages a redelivered body holds are duplicates and not appended again.
But the first delivery may have appended a message and then failed (its
``check_buffer_task`` could not be enqueued, or the script's answer was
lost): so when a duplicate's conversation still has messages waiting in
its buffer, a check is scheduled for the current sequence number.  That
is harmless when the first check exists: a check gives way to newer
numbers and a batch is claimed once.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import falcon
import redis

from app.buffer import append_to_buffer, pending_seq
from app.web.hooks import read_capped_body, verify_signature
from app.web.rejected import record_rejected_body
from app.webhook import BODY, Notification, Problem, WebhookFormatError, conversation_key, parse_body

__all__ = ["WebhookResource", "ERROR_COUNTS_KEY"]

logger = logging.getLogger(__name__)

#: Hash of Meta's system-level webhook error codes -> how often they came.
ERROR_COUNTS_KEY = "app:webhook:errors"


class WebhookResource:
    """``GET`` (verification) and ``POST`` (notifications) of ``/webhook``.

    Parameters:
      redis_client: where the dedup/buffer script runs and rejected
        bodies are kept.
      enqueue: ``enqueue(task_name, args, **options)``.
      app_secret, verify_token: WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN.
      max_body_bytes: the body cap (WEBHOOK_MAX_BODY_BYTES).
      buffer_window_s: the countdown of each buffer check.
      dead_letter_ttl_s: how long rejected bodies are kept.
    """

    def __init__(self, redis_client: redis.Redis, enqueue: Callable[..., Any], *, app_secret: str | None,
                 verify_token: str | None, max_body_bytes: int, buffer_window_s: float,
                 dead_letter_ttl_s: float) -> None:
        self.redis = redis_client
        self.enqueue = enqueue
        self.app_secret = app_secret
        self.verify_token = verify_token
        self.max_body_bytes = max_body_bytes
        self.buffer_window_s = buffer_window_s
        self.dead_letter_ttl_ms = int(dead_letter_ttl_s * 1000)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Meta's handshake: echo ``hub.challenge`` when the token matches."""
        mode = req.get_param("hub.mode")
        token = req.get_param("hub.verify_token")
        challenge = req.get_param("hub.challenge")
        missing = [name for name, value in (("hub.mode", mode), ("hub.verify_token", token),
                                            ("hub.challenge", challenge)) if not value]
        if missing:
            raise falcon.HTTPBadRequest(title="Not a verification request",
                                        description=f"missing query parameter(s): {', '.join(missing)}")
        if mode != "subscribe":
            raise falcon.HTTPBadRequest(title="Not a verification request",
                                        description=f"hub.mode must be 'subscribe', got {mode!r:.40}")
        if not self.verify_token:
            raise falcon.HTTPForbidden(title="Verification refused",
                                       description="WHATSAPP_VERIFY_TOKEN is not configured")
        if not _same(str(token), self.verify_token):
            raise falcon.HTTPForbidden(title="Verification refused", description="hub.verify_token is wrong")
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = challenge

    @falcon.before(read_capped_body)
    @falcon.before(verify_signature)
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Store what a signed notification holds; see the module docstring."""
        raw: bytes = req.context.raw_body
        notification = self._parse(raw)
        if notification.problems and notification.empty:
            reason = notification.summary()
            self._reject(raw, reason, notification.problems)
            req.context.outcome = "unreadable"
            resp.media = {"status": "rejected", "reason": reason}
            return
        if notification.problems:
            # The good parts are still used below; the body is kept to show what was not.
            self._reject(raw, notification.summary(), notification.problems, partial=True)
        accepted = duplicates = 0
        appended: set[str] = set()
        redelivered: set[str] = set()
        for message in notification.messages:
            key = str(conversation_key(message))  # the parser refuses a message with neither id
            seq = append_to_buffer(self.redis, key, message["wamid"], message)
            if seq:
                accepted += 1
                appended.add(key)
                self._schedule_check(key, seq)
            else:
                duplicates += 1
                redelivered.add(key)
        for key in sorted(redelivered - appended):
            # The first delivery may have buffered it without scheduling its check.
            seq = pending_seq(self.redis, key)
            if seq:
                self._schedule_check(key, seq)
        for status in notification.statuses:
            try:
                self.enqueue("update_message_status_task", (status,))
            except Exception as e:
                logger.error("Could not enqueue the status %s of %s: %r.", status["status"], status["id"], e)
                raise falcon.HTTPServiceUnavailable(
                    title="Not stored", description="the queue is unavailable; send the notification again") from e
        # Counted last: a body answered 503 above comes again, and is counted then.
        for error in notification.errors:
            logger.warning("WhatsApp reported a system-level error %s (%s): %s", error["code"], error["title"],
                           error["details"] or error["message"])
            self.redis.hincrby(ERROR_COUNTS_KEY, str(error["code"]), 1)
        if notification.problems:
            req.context.outcome = "partial"
        elif duplicates and not accepted and not notification.statuses:
            req.context.outcome = "duplicate"
        else:
            req.context.outcome = "accepted"
        resp.media = {"status": "ok", "messages": accepted, "duplicates": duplicates,
                      "statuses": len(notification.statuses), "errors": len(notification.errors),
                      "problems": len(notification.problems)}

    def _schedule_check(self, key: str, seq: int) -> None:
        """Schedule the buffer check of ``key`` for ``seq``; 503 when the queue refuses."""
        try:
            self.enqueue("check_buffer_task", (key, seq), countdown=self.buffer_window_s)
        except Exception as e:
            # The message is in the buffer: Meta's redelivery schedules the check.
            logger.error("Could not schedule the buffer check of conversation %s (seq %d); answering 503 "
                         "so that Meta sends the body again: %r.", key, seq, e)
            raise falcon.HTTPServiceUnavailable(
                title="Not scheduled", description="the queue is unavailable; send the notification again") from e

    @staticmethod
    def _parse(raw: bytes) -> Notification:
        """The notification ``raw`` holds; a body that is not one is a notification
        with one problem, at ``body``.

        The parser reports what it cannot use as problems; anything else it
        raises is a bug, and is treated the same way (logged with its
        traceback): a 500 would have Meta retry the body for days, when the
        record keeps it for a fix.
        """
        try:
            return parse_body(raw)
        except WebhookFormatError as e:
            reason = str(e)
        except Exception as e:
            logger.exception("The parser failed on a signed webhook body of %d bytes.", len(raw))
            reason = f"the parser failed on this body ({type(e).__name__}); see the web log"
        rejected = Notification()
        rejected.problem(BODY, reason)
        return rejected

    def _reject(self, raw: bytes, reason: str, problems: list[Problem], *, partial: bool = False) -> None:
        logger.warning("Rejected %s signed webhook body of %d bytes: %s", "part of a" if partial else "a",
                       len(raw), reason)
        record_rejected_body(self.redis, raw, reason, ttl_ms=self.dead_letter_ttl_ms, partial=partial,
                             problems=[(p.where, p.reason) for p in problems])


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
