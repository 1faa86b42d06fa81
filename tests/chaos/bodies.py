"""Hostile webhook bodies (signed correctly by the test), for a Hypothesis fuzz.

:func:`hostile_body` builds raw body bytes from a ``random.Random``: most are
WhatsApp fixtures with a few parts spoilt (deleted, retyped, wrapped in a
list, duplicated, given a wamid other bodies share, made huge, deep or full
of awkward Unicode), the rest arbitrary JSON, a random notification shape,
deep nesting, huge strings or bytes that are not JSON at all.

Hypothesis draws one ``random.Random`` per body and the body is built from
it here: on this (2-core, shared) machine each Hypothesis draw costs a
fraction of a millisecond, and a body built from its own strategies takes
dozens of them, which 10,000 bodies cannot afford.  The seed of the run
still fixes every body (``@seed``), so a failing run is replayed exactly, but
not shrunk: :func:`shrinking_bodies` is the strategy of a smaller run whose every
choice is Hypothesis's own, so that a body that fails is shrunk to its cause.
"""

from __future__ import annotations

import json
import random
import sys
from typing import Any

from hypothesis import strategies as st

from tests.support.fixtures import FIXTURES

#: The POST bodies among the fixtures (verification.json describes the GET handshake).
FIXTURE_BODIES = {p.name: json.loads(p.read_bytes()) for p in sorted(FIXTURES.glob("*.json"))
                  if p.name != "verification.json"}
_FIXTURE_NAMES = sorted(FIXTURE_BODIES)

#: Strings that have broken parsers, loggers, databases and terminals.
NASTY_TEXT = ["", " ", "\x00", "a\x00b", "\u202eevil\u202c", "\u200f\u05e9\u05dc\u05d5\u05dd", "🚚", "👨‍👩‍👧‍👦",
              "\ufeff", "\ud800", "\udfff", "x\udbff\udfffy", "\U0010ffff", "ﷺ", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
              "%s%s%n", "{}", "null", "'; DROP TABLE messages; --", "\r\n\r\nHTTP/1.1 200 OK", "\\", "\\u0000",
              "wamid." + "A" * 300, "1749416390", "-1", "text", "messages", "whatsapp_business_account"]

#: Wamids several bodies share, so the same message arrives again in another body.
SHARED_WAMIDS = [f"wamid.FUZZ{i}" for i in range(8)]

_NUMBERS = [0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64, 1e308, -1e308, 1e-320, 0.5, float("inf"), float("-inf"),
            float("nan"), 1749416390, True, False]


def text(rnd: random.Random) -> str:
    """A short string: a nasty one, or random code points (lone surrogates included)."""
    if rnd.random() < 0.5:
        return rnd.choice(NASTY_TEXT)
    top = rnd.choice([0x7F, 0xFFFF, 0x10FFFF])
    return "".join(chr(rnd.randint(0, top)) for _ in range(rnd.randint(0, 12)))


def number(rnd: random.Random) -> Any:
    roll = rnd.random()
    if roll < 0.4:
        return rnd.choice(_NUMBERS)
    if roll < 0.5:
        return 10 ** rnd.randint(300, 4_200) - 1  # hundreds to thousands of digits (Python reads 4,300)
    if roll < 0.75:
        return rnd.randint(-(2**70), 2**70)
    return rnd.uniform(-1e12, 1e12)


def scalar(rnd: random.Random) -> Any:
    return rnd.choice([None, True, False, number(rnd), text(rnd), text(rnd)])


def value(rnd: random.Random, depth: int = 0) -> Any:
    """Any JSON value, a few levels deep at most."""
    roll = rnd.random()
    if depth >= 3 or roll < 0.6:
        return scalar(rnd)
    if roll < 0.8:
        return [value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    return {text(rnd): value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))}


def huge(rnd: random.Random) -> str:
    """A string of 10,000 to 300,000 characters (up to 3.6 MB escaped)."""
    return rnd.choice(["x", "é", "🚚", "\u202e", "\\", '"', "\x00"]) * rnd.randint(10_000, 300_000)


def deep(rnd: random.Random) -> Any:
    """Lists or objects nested up to 1,500 deep (more than the JSON decoder's recursion goes)."""
    node: Any = scalar(rnd)
    as_objects = rnd.random() < 0.5
    for _ in range(rnd.randint(1, 1_500)):
        node = {"a": node} if as_objects else [node]
    return node


def _parts(node: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every value in ``node``."""
    found: list[tuple[Any, Any]] = []
    stack = [node]
    while stack:
        here = stack.pop()
        items = here.items() if isinstance(here, dict) else enumerate(here) if isinstance(here, list) else ()
        for key, child in items:
            found.append((here, key))
            if len(found) < 200:  # (a deep value is not walked to its bottom)
                stack.append(child)
    return found


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


def spoilt_fixture(rnd: random.Random, *, mutations: int | None = None) -> Any:
    """A fixture with 0 to 5 parts deleted, replaced, retyped, wrapped or duplicated."""
    body = _copy(FIXTURE_BODIES[rnd.choice(_FIXTURE_NAMES)])
    if rnd.random() < 0.5:
        _fresh_wamids(body, rnd)
    for _ in range(rnd.choice([0, 1, 1, 1, 2, 2, 3, 5]) if mutations is None else mutations):
        parts = _parts(body)
        if not parts:
            break
        container, key = rnd.choice(parts)
        old = container[key]
        how = rnd.choice(["delete", "replace", "replace", "retype", "wrap", "duplicate", "wamid", "text", "deep"])
        if how == "delete":
            del container[key]
        elif how == "replace":
            container[key] = value(rnd)
        elif how == "retype":  # a number where a string is expected, an array where an object is...
            if isinstance(old, str):
                container[key] = number(rnd)
            elif isinstance(old, (int, float)) and not isinstance(old, bool):
                container[key] = str(old)
            elif isinstance(old, dict):
                container[key] = list(old.values())
            elif isinstance(old, list):
                container[key] = {str(i): v for i, v in enumerate(old)}
        elif how == "wrap":
            container[key] = [old]
        elif how == "duplicate":  # the same message (status, contact...) twice in one body
            # (the same object twice: later spoils may change both, and it may be 1,500 deep)
            if isinstance(container, list):
                container.append(old)
            elif isinstance(old, list) and old:
                old.append(old[0])
        elif how == "wamid":
            if isinstance(container, dict) and "id" in container:
                container["id"] = rnd.choice(SHARED_WAMIDS)
            else:
                container[key] = rnd.choice(SHARED_WAMIDS)
        elif how == "text":
            container[key] = text(rnd)
        else:
            container[key] = deep(rnd)
    return body


def _fresh_wamids(body: Any, rnd: random.Random) -> None:
    """Give the fixture's messages wamids of their own, so that they are new
    messages (the fixture's own wamids are duplicates after their first time)."""
    for entry in body.get("entry", []):
        for change in entry.get("changes", []):
            for message in change.get("value", {}).get("messages", []):
                message["id"] = f"wamid.FUZZ-{rnd.getrandbits(64):016x}"


def random_notification(rnd: random.Random) -> Any:
    """The notification's outer shape, with random contents where the messages go."""
    fields = ["messaging_product", "metadata", "contacts", "messages", "statuses", "errors"]
    changes = []
    for _ in range(rnd.randint(0, 3)):
        if rnd.random() < 0.2:
            changes.append(value(rnd))
            continue
        contents = {name: value(rnd) for name in rnd.sample(fields, rnd.randint(0, len(fields)))}
        changes.append({"field": rnd.choice(["messages", "messages", "account_update", None, 5]), "value": contents})
    entries = [{"id": text(rnd), "changes": changes}] + [value(rnd) for _ in range(rnd.randint(0, 2))]
    return {"object": "whatsapp_business_account", "entry": entries}


def serialise(rnd: random.Random, body: Any) -> bytes:
    """``body`` as JSON bytes: escaped (as Meta sends them) or raw UTF-8, a lone
    surrogate then written as the invalid UTF-8 it would be."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # (deep() nests 1,500 levels; the encoder recurses)
    try:
        text = json.dumps(body, ensure_ascii=rnd.random() < 0.5)
    finally:
        sys.setrecursionlimit(limit)
    return text.encode("utf-8", "surrogatepass")


#: How often each kind of body is drawn.
KINDS = {"fixture": 70, "notification": 8, "json": 8, "deep": 4, "huge": 3, "bytes": 7}


def hostile_body(rnd: random.Random) -> tuple[str, bytes]:
    """(kind, raw bytes) of one hostile body."""
    kind = rnd.choices(list(KINDS), weights=list(KINDS.values()))[0]
    if kind == "fixture":
        return kind, serialise(rnd, spoilt_fixture(rnd))
    if kind == "notification":
        return kind, serialise(rnd, random_notification(rnd))
    if kind == "json":
        return kind, serialise(rnd, value(rnd))
    if kind == "deep":
        return kind, serialise(rnd, deep(rnd))
    if kind == "huge":  # one part of a lightly spoilt fixture made huge (a text, an id, a name...)
        body = spoilt_fixture(rnd, mutations=rnd.randint(0, 1))
        container, key = rnd.choice(_parts(body))
        container[key] = huge(rnd)
        return kind, serialise(rnd, body)
    raw = serialise(rnd, FIXTURE_BODIES[rnd.choice(_FIXTURE_NAMES)])
    if rnd.random() < 0.5:
        return kind, raw[:rnd.randint(0, len(raw) - 1)]  # cut short
    return kind, rnd.randbytes(rnd.randint(0, 300))  # not JSON, not even UTF-8


#: Any JSON value, small, drawn by Hypothesis itself (so that a failing body shrinks).
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(NASTY_TEXT)
    | st.sampled_from(_NUMBERS) | st.sampled_from(SHARED_WAMIDS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def shrinking_bodies(draw: st.DrawFn) -> bytes:
    """A fixture with one to three of its places (the whole body too) replaced by any
    JSON value, every choice a Hypothesis draw: a body that fails shrinks to the
    fewest, simplest replacements that still fail."""
    body = _copy(FIXTURE_BODIES[draw(st.sampled_from(_FIXTURE_NAMES))])
    for _ in range(draw(st.integers(1, 3))):
        places: list[tuple[Any, Any]] = [(None, None), *_parts(body)]
        container, key = draw(st.sampled_from(places))
        if container is None:
            body = draw(JSON_VALUES)
        else:
            container[key] = draw(JSON_VALUES)
    return json.dumps(body, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
