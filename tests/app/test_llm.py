"""Gemini through the real google-genai SDK, against a local stand-in of its REST endpoint."""

from __future__ import annotations

import dataclasses

import pytest

from app.config import Config
from app.devtools.gemini_standin import GeminiStandin, error_response, text_response
from app.errors import TransientError
from app.llm import FALLBACK_REPLY, GeminiModel, ModelError, OfflineModel, Turn, build_model, merge_turns


@pytest.fixture
def standin():
    with GeminiStandin() as server:
        yield server


@pytest.fixture
def model(standin):
    return GeminiModel("test-key", "gemini-2.5-flash", base_url=standin.url, timeout_s=10)


def test_a_normal_answer_comes_back_with_the_system_prompt_and_model_name_sent(standin, model):
    # Given a stand-in that answers a fixed text
    standin.respond_with((200, text_response("It comes in blue and green.")))
    # When the model is asked
    reply = model.generate("Be brief.", [Turn("user", "Does it come in another color?")])
    # Then the reply is the stand-in's, and the request named the model and carried the prompt and key
    assert reply == "It comes in blue and green."
    [request] = standin.requests()
    assert request["model"] == "gemini-2.5-flash" and request["api_key"] == "test-key"
    assert request["body"]["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert request["body"]["contents"] == [{"role": "user", "parts": [{"text": "Does it come in another color?"}]}]


def test_consecutive_turns_of_one_side_reach_gemini_merged_in_order(standin, model):
    turns = [
        Turn("user", "Hi!"), Turn("user", "I ordered a lamp last week"),
        Turn("model", "Hello! How can I help?"), Turn("model", "[human operator] Checking your order."),
        Turn("user", "Thanks"), Turn("user", "  "), Turn("user", "Any news?"),
    ]
    model.generate("p", turns)
    [request] = standin.requests()
    assert request["body"]["contents"] == [
        {"role": "user", "parts": [{"text": "Hi!\n\nI ordered a lamp last week"}]},
        {"role": "model", "parts": [{"text": "Hello! How can I help?\n\n[human operator] Checking your order."}]},
        {"role": "user", "parts": [{"text": "Thanks\n\nAny news?"}]},
    ]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_quota_and_server_errors_are_transient_and_tried_once(standin, model, status):
    standin.respond_with(error_response(status), (200, text_response("second try")))
    with pytest.raises(TransientError, match=str(status)):
        model.generate("p", [Turn("user", "hello")])
    # The SDK did not retry on its own: the task policy is the only retry layer
    assert len(standin.requests()) == 1


def test_other_api_errors_are_a_clear_model_error(standin, model):
    standin.respond_with(error_response(404, "models/nope is not found"))
    with pytest.raises(ModelError, match="404") as caught:
        model.generate("p", [Turn("user", "hello")])
    assert not isinstance(caught.value, TransientError)


def test_an_unreachable_server_is_transient(standin):
    url = standin.url
    standin.stop()
    model = GeminiModel("k", "m", base_url=url, timeout_s=5)
    with pytest.raises(TransientError, match="could not be reached"):
        model.generate("p", [Turn("user", "hello")])


@pytest.mark.parametrize(
    "body",
    [
        {"promptFeedback": {"blockReason": "SAFETY"}},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "partial"}]}, "finishReason": "SAFETY"}]},
        {"candidates": []},
        text_response("   "),
    ],
    ids=["prompt blocked", "finish reason safety", "no candidates", "empty text"],
)
def test_a_blocked_or_empty_answer_gets_the_fallback_reply(standin, model, body):
    standin.respond_with((200, body))
    assert model.generate("p", [Turn("user", "something")]) == FALLBACK_REPLY


def test_turns_that_do_not_end_with_the_customer_are_refused_before_any_call(standin, model):
    with pytest.raises(ModelError, match="end with a customer turn"):
        model.generate("p", [Turn("user", "hi"), Turn("model", "hello")])
    with pytest.raises(ModelError, match="role"):
        merge_turns([Turn("operator", "hi")])
    assert standin.requests() == []


def test_build_model_picks_gemini_only_with_a_key(standin):
    assert isinstance(build_model(Config()), OfflineModel)
    config = dataclasses.replace(Config(), google_api_key="k", gemini_api_base=standin.url, gemini_model="gemini-x")
    model = build_model(config)
    assert isinstance(model, GeminiModel)
    model.generate("p", [Turn("user", "hi")])
    assert standin.requests()[0]["model"] == "gemini-x"


def test_a_call_that_outlasts_the_timeout_is_transient(standin):
    standin.stall(4)
    model = GeminiModel("k", "m", base_url=standin.url, timeout_s=1)
    with pytest.raises(TransientError, match="could not be reached: .*Timeout"):
        model.generate("p", [Turn("user", "hello")])


def test_gemini_is_asked_to_keep_its_answer_within_the_output_cap(standin, model):
    from app.llm import MAX_OUTPUT_TOKENS

    model.generate("p", [Turn("user", "hello")])
    [request] = standin.requests()
    assert request["body"]["generationConfig"]["maxOutputTokens"] == MAX_OUTPUT_TOKENS
