"""The model behind the assistant: ``generate(system_prompt, turns) -> reply``.

With no GOOGLE_API_KEY the offline model answers deterministically, so
the whole flow runs on a laptop and in tests; with one, :class:`GeminiModel`
calls Gemini through ``google-genai``.  Either way the caller sees one
small interface and the project's own errors: a quota or server failure
is a :class:`~app.errors.TransientError` (the task retry policy retries
it, and nothing else does), anything else a :class:`ModelError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from app.errors import AppError, TransientError

if TYPE_CHECKING:
    from app.config import Config

__all__ = [
    "Turn",
    "Model",
    "OfflineModel",
    "GeminiModel",
    "ModelError",
    "SYSTEM_PROMPT",
    "FALLBACK_REPLY",
    "merge_turns",
    "build_model",
    "HISTORY_MESSAGES",
]

SYSTEM_PROMPT = "You are the business's helpful WhatsApp assistant. Answer briefly and politely."

#: What the customer gets when the model blocks its answer or gives none.
FALLBACK_REPLY = (
    "Sorry, I can't help with that here. A member of our team will get back to you as soon as possible."
)

#: The most tokens Gemini may write for one reply.  A WhatsApp text holds
#: 4096 characters (about 1,000 tokens); Gemini 2.5 counts its thinking
#: against this cap too, hence the margin.  A longer answer is still cut
#: to WhatsApp's limit before it is stored and sent (app.whatsapp.fit_text).
MAX_OUTPUT_TOKENS = 2048

#: How many of the most recent messages the model is shown by default
#: (MODEL_HISTORY_MESSAGES).  The whole history would grow the prompt, its
#: cost and latency without bound and end at the model's context limit;
#: 40 messages (about 20 exchanges) hold what a customer-service chat
#: refers back to.
HISTORY_MESSAGES = 40

#: Gemini's two roles: the customer is "user"; the AI and operators are "model".
ROLES = ("user", "model")

#: Finish reasons that mean the answer was withheld, not completed.
_BLOCKED_FINISH_REASONS = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
)


class ModelError(AppError):
    """The model refused the request for a reason retrying cannot fix
    (bad key, unknown model, malformed conversation)."""


@dataclass(frozen=True)
class Turn:
    """One side's turn: ``role`` is "user" (customer) or "model" (AI or operator)."""

    role: str
    text: str


class Model(Protocol):
    def generate(self, system_prompt: str, turns: list[Turn]) -> str: ...


class OfflineModel:
    """Answers without a network: it acknowledges the customer's last turn."""

    def generate(self, system_prompt: str, turns: list[Turn]) -> str:
        last = next((t.text for t in reversed(turns) if t.role == "user"), "")
        last = " ".join(last.split())
        if len(last) > 200:
            last = last[:197] + "..."
        return f"Thanks for your message! You said: {last}" if last else "Thanks for your message!"


def merge_turns(turns: Iterable[Turn]) -> list[Turn]:
    """Join consecutive turns of one side so the roles alternate.

    Gemini wants user and model turns to alternate and the last one to be
    the customer's.  Several customer messages of a batch (or an operator
    message next to an AI reply) become one turn, their texts joined by a
    blank line, in order.  Blank turns are dropped.

    Raises:
      ModelError: a turn has an unknown role, or nothing of the customer's
        is left to answer at the end.
    """
    merged: list[Turn] = []
    for turn in turns:
        if turn.role not in ROLES:
            raise ModelError(f"a turn's role must be 'user' or 'model', got {turn.role!r:.40}")
        text = turn.text.strip()
        if not text:
            continue
        if merged and merged[-1].role == turn.role:
            merged[-1] = Turn(turn.role, f"{merged[-1].text}\n\n{text}")
        else:
            merged.append(Turn(turn.role, text))
    if not merged or merged[-1].role != "user":
        raise ModelError("the conversation must end with a customer turn for the model to answer")
    return merged


def _transport_errors() -> tuple[type[Exception], ...]:
    """Network failures of the SDK's HTTP stack: httpx, or its fork httpx2
    (google-genai 2.x and later send through httpx2 when it is installed)."""
    found: list[type[Exception]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found.append(module.TransportError)
    return tuple(found)


def _reply_text(response: Any) -> str | None:
    """The answer's text, or None when Gemini blocked it or gave none."""
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and getattr(feedback, "block_reason", None):
        return None
    candidates = getattr(response, "candidates", None) or []
    if not candidates:
        return None
    candidate = candidates[0]
    reason = getattr(candidate, "finish_reason", None)
    if reason is not None and str(getattr(reason, "value", reason)) in _BLOCKED_FINISH_REASONS:
        return None
    content = getattr(candidate, "content", None)
    parts = getattr(content, "parts", None) or []
    text = "".join(p.text for p in parts if getattr(p, "text", None) and not getattr(p, "thought", False))
    return text.strip() or None


class GeminiModel:
    """Gemini through ``google-genai``, with the SDK's own retries off.

    Parameters:
      api_key: the Gemini API key (GOOGLE_API_KEY).
      model: the model name, e.g. ``gemini-2.5-flash``.
      base_url: where the REST API lives; None is Google's.  Tests point
        it at a local stand-in.
      timeout_s: how long one call may take; a timeout is transient.
    """

    def __init__(self, api_key: str, model: str, *, base_url: str | None = None, timeout_s: float = 60.0) -> None:
        from google import genai
        from google.genai import types

        self.model = model
        self._types = types
        # NOTE: one attempt only (attempts=1).  The task's 5/10/20 s policy
        # is the only retry layer; SDK retries under it would multiply the
        # attempts and could outlive the task's time limit.
        options = types.HttpOptions(
            base_url=base_url,
            timeout=int(timeout_s * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self._client = genai.Client(api_key=api_key, http_options=options)

    @classmethod
    def from_config(cls, config: Config) -> GeminiModel:
        if not config.google_api_key:
            raise ModelError("GOOGLE_API_KEY is not set")
        return cls(config.google_api_key, config.gemini_model, base_url=config.gemini_api_base,
                   timeout_s=config.gemini_timeout_s)

    def generate(self, system_prompt: str, turns: list[Turn]) -> str:
        """Ask Gemini for the next reply.

        Returns:
          The reply, or :data:`FALLBACK_REPLY` when Gemini blocked it or
          returned nothing.

        Raises:
          TransientError: quota (429), timeout, 5xx or a network failure.
          ModelError: any other refusal (bad key, unknown model, bad turns).
        """
        from google.genai import errors

        types = self._types
        contents = [types.Content(role=t.role, parts=[types.Part(text=t.text)]) for t in merge_turns(turns)]
        try:
            response = self._client.models.generate_content(
                model=self.model,
                contents=contents,
                config=types.GenerateContentConfig(system_instruction=system_prompt,
                                                   max_output_tokens=MAX_OUTPUT_TOKENS),
            )
        except errors.APIError as e:
            code = e.code or 0
            if code in (408, 429) or code >= 500:
                raise TransientError(f"Gemini answered {code} {e.status or ''}".rstrip()) from e
            raise ModelError(f"Gemini refused the request: {code} {e.status or ''}: {e.message or ''}".strip()) from e
        except _transport_errors() as e:
            raise TransientError(f"Gemini could not be reached: {type(e).__name__}: {e}") from e
        return _reply_text(response) or FALLBACK_REPLY


def build_model(config: Config) -> Model:
    """Gemini when GOOGLE_API_KEY is set, else the offline model."""
    if config.google_api_key:
        return GeminiModel.from_config(config)
    return OfflineModel()
