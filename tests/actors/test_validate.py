"""The actors' argument checks."""

from __future__ import annotations

import pytest

from actors import validate
from app.errors import InvalidTaskArguments


def test_text_with_a_lone_surrogate_is_refused_before_it_reaches_redis_or_postgresql():
    with pytest.raises(InvalidTaskArguments, match="conversation must be valid Unicode text"):
        validate.text("conversation", "c1\ud800")


def test_text_is_returned_when_it_is_good():
    assert validate.text("conversation", "Olá 🚚") == "Olá 🚚"
