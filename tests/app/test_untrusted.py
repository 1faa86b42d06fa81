"""Untrusted JSON values: rendered short and safe, read as epoch seconds or refused."""

from __future__ import annotations

import json

import pytest

from app.untrusted import MAX_EPOCH_SECONDS, brief, epoch_seconds, json_type, text


def test_brief_renders_scalars_cut_and_never_walks_a_container():
    assert brief("abc") == "'abc'" and brief("x" * 100, 5) == "'xxxxx'..."
    assert (brief(None), brief(True), brief(1.5), brief(float("inf"))) == ("None", "True", "1.5", "inf")
    assert brief(10**50) == str(10**50) and brief(10**300) == "a very large number"
    deep = json.loads("[" * 900 + "]" * 900)
    assert (brief(deep), brief({"a": deep})) == ("a list", "an object")
    assert json_type(None) == "null" and json_type("") == "a string"


def test_text_is_cut_and_escapes_lone_surrogates():
    assert text("a\ud800b") == "a\\ud800b"
    assert text("é" * 500, 3) == "ééé..."
    text("\udfff" * 1000).encode("utf-8")


@pytest.mark.parametrize("value, seconds", [(1749416383, 1749416383), ("1749416383", 1749416383), (1.9, 1),
                                            (0, 0), (MAX_EPOCH_SECONDS, MAX_EPOCH_SECONDS)])
def test_epoch_seconds_reads_numbers_and_numeric_strings(value, seconds):
    assert epoch_seconds(value) == seconds


@pytest.mark.parametrize("value", [None, True, "noon", "", float("nan"), float("inf"), -1, MAX_EPOCH_SECONDS + 1,
                                   "9" * 5000, [1], {"t": 1}])
def test_epoch_seconds_refuses_what_is_not_seconds_with_a_value_error(value):
    with pytest.raises(ValueError, match="a timestamp must be seconds"):
        epoch_seconds(value)
