"""The model behind the assistant: ``generate(system_prompt, turns) -> reply``.

With no GOOGLE_API_KEY the offline model answers deterministically, so
the whole flow runs on a laptop and in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Turn", "Model", "OfflineModel", "SYSTEM_PROMPT"]

SYSTEM_PROMPT = "You are the business's helpful WhatsApp assistant. Answer briefly and politely."


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
