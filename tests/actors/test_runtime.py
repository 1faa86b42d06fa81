"""The actors' runtime, built from the configuration as a worker builds it."""

from __future__ import annotations

import dataclasses

import pytest

from actors import runtime as rt_module
from app.errors import ConfigError
from app.llm import Turn
from app.replies import process_batch
from app.whatsapp import WhatsAppClient
from tests.support.conversations import inbound, parsed


def _built(config, checkpoints):
    rt = rt_module.build(config)
    rt.checkpoints = checkpoints
    return rt, rt_module.services(rt)


def test_a_worker_without_whatsapp_settings_starts_and_refuses_only_a_send_clearly(config, checkpoints):
    # Given no WHATSAPP_TOKEN and no WHATSAPP_PHONE_NUMBER_ID
    bare = dataclasses.replace(config, whatsapp_token=None, whatsapp_phone_number_id=None)

    # When the runtime and its services are built (every task of the worker needs them)
    rt, services = _built(bare, checkpoints)

    # Then marking read is a no-op and a send names what is missing
    services.whatsapp.mark_read("wamid.1", typing=True)
    with pytest.raises(ConfigError, match="WHATSAPP_TOKEN and WHATSAPP_PHONE_NUMBER_ID must be set"):
        services.whatsapp.send_text(to="15550001111", recipient=None, text="hi")
    rt.sessions.kw["bind"].dispose()


def test_a_worker_with_whatsapp_settings_sends_through_the_cloud_api_client(config, checkpoints):
    configured = dataclasses.replace(config, whatsapp_token="t", whatsapp_phone_number_id="106540352242922",
                                     whatsapp_api_base="http://127.0.0.1:9/v21.0")
    rt, services = _built(configured, checkpoints)
    assert isinstance(services.whatsapp, WhatsAppClient)
    assert services.whatsapp.url == "http://127.0.0.1:9/v21.0/106540352242922/messages"
    rt.sessions.kw["bind"].dispose()


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


def test_the_model_is_shown_the_configured_number_of_recent_messages(runtime, whatsapp, model):
    # Given MODEL_HISTORY_MESSAGES=2
    rt = dataclasses.replace(runtime, config=dataclasses.replace(runtime.config, model_history_messages=2))
    services = rt_module.services(rt)

    # When a second question follows an answered one
    process_batch(services, "15550001111", "b1", parsed(inbound("w1", "first")))
    process_batch(services, "15550001111", "b2", parsed(inbound("w2", "second")))

    # Then the model saw the last two messages, less the answer that would have opened them
    assert [(t.role, t.text) for t in model.calls[-1]] == [("user", "second")]
    assert len(services.graph.messages("15550001111")) == 4
