"""Configuration from the environment, with embedded defaults and clear errors."""

from __future__ import annotations

import pytest

from app.config import DEFAULT_REDIS_URI, Config, mask_url
from app.errors import ConfigError


def test_an_empty_environment_gives_the_embedded_defaults():
    config = Config.from_env({})
    assert config.redis_uri == DEFAULT_REDIS_URI and config.redis_is_default
    assert config.db_url == "sqlite:///.run/assistant.sqlite3"
    assert config.uses_offline_model
    assert (config.buffer_window_s, config.buffer_max_wait_s) == (3.0, 15.0)
    assert (config.time_limit_s, config.soft_time_limit_s) == (300.0, 240.0)
    assert config.retry_delays_s == (5.0, 10.0, 20.0)
    assert config.heartbeat_timeout_s == 60.0
    assert config.webhook_max_body_bytes == 4 * 1024 * 1024


def test_postgresql_urls_use_psycopg_3():
    assert Config.from_env({"DB_URL": "postgresql://u@h/db"}).db_url == "postgresql+psycopg://u@h/db"
    assert Config.from_env({"DB_URL": "postgres://u@h/db"}).db_url == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"REDIS_URI": "http://x"}, "REDIS_URI must start with"),
        ({"BUFFER_WINDOW_SECONDS": "soon"}, "BUFFER_WINDOW_SECONDS must be a number"),
        ({"HEARTBEAT_TIMEOUT_SECONDS": "0"}, "HEARTBEAT_TIMEOUT_SECONDS must be at least"),
        ({"RETRY_DELAYS_SECONDS": "5,x"}, "RETRY_DELAYS_SECONDS must be a comma-separated"),
        ({"TASK_SOFT_TIME_LIMIT_SECONDS": "400"}, "soft time limit must not exceed"),
        ({"WEBHOOK_MAX_BODY_BYTES": "1.5"}, "WEBHOOK_MAX_BODY_BYTES must be a whole number"),
    ],
)
def test_a_bad_value_is_refused_with_its_name(env, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env)


def test_secrets_never_appear_in_the_repr():
    config = Config.from_env({
        "REDIS_URI": "redis://:hunter2@h:6379/0", "GOOGLE_API_KEY": "AIza-secret", "WHATSAPP_TOKEN": "EAAG-secret",
        "WHATSAPP_APP_SECRET": "app-secret", "DB_URL": "postgresql://u:dbpass@h/db",
    })
    text = repr(config)
    for secret in ("hunter2", "AIza-secret", "EAAG-secret", "app-secret", "dbpass"):
        assert secret not in text


def test_mask_url_hides_only_the_password():
    assert mask_url("redis://:pw@127.0.0.1:6390/0") == "redis://:**@127.0.0.1:6390/0"
    assert mask_url("rediss://user:pw@host:6380/1") == "rediss://user:**@host:6380/1"
    assert mask_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_the_operator_token_and_gemini_settings_come_from_the_environment():
    config = Config.from_env({
        "OPERATOR_TOKEN": "op-secret", "GEMINI_MODEL": "gemini-x", "GEMINI_API_BASE": "http://127.0.0.1:9/",
        "SYSTEM_PROMPT": "Be terse.", "WHATSAPP_API_BASE": "http://127.0.0.1:8/v21.0/",
    })
    assert config.operator_token == "op-secret" and "op-secret" not in repr(config)
    assert (config.gemini_model, config.gemini_api_base, config.system_prompt) == (
        "gemini-x", "http://127.0.0.1:9", "Be terse.")
    assert config.whatsapp_api_base == "http://127.0.0.1:8/v21.0"
    defaults = Config.from_env({})
    assert defaults.operator_token is None and defaults.gemini_model == "gemini-2.5-flash"
    assert defaults.gemini_api_base is None


@pytest.mark.parametrize(
    "env, message",
    [
        ({"GEMINI_API_BASE": "localhost:9"}, "GEMINI_API_BASE must be an http"),
        ({"WHATSAPP_API_BASE": "ftp://x"}, "WHATSAPP_API_BASE must be an http"),
        ({"GEMINI_TIMEOUT_SECONDS": "0"}, "GEMINI_TIMEOUT_SECONDS must be at least"),
        ({"MODEL_HISTORY_MESSAGES": "0"}, "MODEL_HISTORY_MESSAGES must be at least 1, got '0'"),
        ({"MODEL_HISTORY_MESSAGES": "-5"}, "MODEL_HISTORY_MESSAGES must be at least 1"),
        ({"MODEL_HISTORY_MESSAGES": "2.5"}, "MODEL_HISTORY_MESSAGES must be a whole number, got '2.5'"),
        ({"MODEL_HISTORY_MESSAGES": "forty"}, "MODEL_HISTORY_MESSAGES must be a whole number"),
    ],
)
def test_bad_model_and_api_settings_are_refused_with_their_name(env, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env)


def test_the_models_history_window_defaults_to_40_messages_and_is_configurable():
    assert Config.from_env({}).model_history_messages == 40
    assert Config.from_env({"MODEL_HISTORY_MESSAGES": "12"}).model_history_messages == 12
    assert Config.from_env({"MODEL_HISTORY_MESSAGES": ""}).model_history_messages == 40
    # A config built in code is held to the same rule
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="MODEL_HISTORY_MESSAGES must be a whole number of at least 1"):
            Config(model_history_messages=bad)  # type: ignore[arg-type]


def test_mask_url_hides_a_password_given_as_a_query_parameter():
    # redis-py's from_url takes ?password= too
    assert mask_url("redis://127.0.0.1:6379/0?password=secret&db=1") == "redis://127.0.0.1:6379/0?password=**&db=1"
    assert mask_url("redis://:pw@h:6379/0?socket_timeout=5&Password=x") == "redis://:**@h:6379/0?socket_timeout=5&Password=**"
    assert mask_url("redis://h:6379/0?socket_timeout=5") == "redis://h:6379/0?socket_timeout=5"
