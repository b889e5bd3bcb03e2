"""The launcher client's JSON-free reading of the plugin's own top-level
"stateDir" (#12.9): it must agree with a real JSON parser, never pick a
nested key, and refuse what is not a JSON object."""

from __future__ import annotations

import json
import random

import pytest

from nsnet.cni.client import top_level_string


def test_top_level_only() -> None:
    nested_first = ('{"args": {"stateDir": "/evil", "x": ["]", "}", "\\""]}, '
                    '"runtimeConfig": {"a": [{"stateDir": "/evil2"}]}, "stateDir": "/good"}')
    assert top_level_string(nested_first.encode(), b"stateDir") == "/good"
    assert top_level_string(b'{"a": {"stateDir": "/evil"}}', b"stateDir") is None
    assert top_level_string(b'{"s": "\\"stateDir\\": \\"/evil\\"", "stateDir": "/ok"}',
                            b"stateDir") == "/ok"
    assert top_level_string(b' {\n"stateDir" :\t"/sp" } ', b"stateDir") == "/sp"
    assert top_level_string(b'{}', b"stateDir") is None


@pytest.mark.parametrize("text", [
    "", "[]", "[1]", "{", '{"a"', '{"a": ', '{"a": "x', '{"a": 1', "nope", '"str"',
    '{"stateDir": 5}', '{"stateDir": "a\\"b"}', '{"stateDir": null}',
])
def test_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError):
        top_level_string(text.encode(), b"stateDir")


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice(["stateDir", "}", "]", '"', "\\", "{\"stateDir\": 1}", "x", ""])
    if kind == 1:
        return rng.randrange(-5, 5) * 1.5
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.randrange(1000)
    if kind in (4, 5):
        return {rng.choice(["stateDir", "a", "b"]): _random_value(rng, depth + 1)
                for _ in range(rng.randrange(4))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_agrees_with_json() -> None:
    rng = random.Random(12)
    for _ in range(3000):
        obj = {rng.choice(["a", "args", "stateDir", "name"]): _random_value(rng)
               for _ in range(rng.randrange(5))}
        if rng.random() < 0.5:
            obj["stateDir"] = rng.choice(["/var/lib/nsnet", "/tmp/s t", "/ü"])
        text = json.dumps(obj, indent=rng.choice([None, 1]), ensure_ascii=False).encode()
        want = obj.get("stateDir")
        if isinstance(want, str) and "\\" not in json.dumps(want, ensure_ascii=False):
            assert top_level_string(text, b"stateDir") == want, text
        elif "stateDir" in obj:
            with pytest.raises(ValueError):
                top_level_string(text, b"stateDir")
        else:
            assert top_level_string(text, b"stateDir") is None, text
