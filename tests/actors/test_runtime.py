"""The actors' runtime, built from the configuration as a worker builds it."""

from __future__ import annotations

import dataclasses

from actors import runtime as rt_module
from app.llm import Turn
from app.replies import process_batch
from tests.support.conversations import inbound, parsed


class _PromptRecorder:
    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, system_prompt: str, turns: list[Turn]) -> str:
        self.prompts.append(system_prompt)
        return "ok"


def test_the_graph_answers_with_the_configured_system_prompt(runtime, whatsapp):
    # Given SYSTEM_PROMPT is configured
    model = _PromptRecorder()
    rt = dataclasses.replace(runtime, model=model,
                             config=dataclasses.replace(runtime.config, system_prompt="Answer in haiku."))

    # When a batch is answered
    process_batch(rt_module.services(rt), "15550001111", "b1", parsed(inbound("w1", "hello")))

    # Then the model got the configured prompt, not the built-in one
    assert model.prompts == ["Answer in haiku."]
    assert [s.text for s in whatsapp.sent] == ["ok"]
