from __future__ import annotations

import json

import pytest

from hewer.engine.core.json_input import MAX_JSON_DEPTH, JsonInputError, decode_json


def test_decodes_ordinary_json() -> None:
    assert decode_json('{"a": [1, {"b": "c"}]}', what="input") == {"a": [1, {"b": "c"}]}
    assert decode_json(b'{"a": "\\u00e9"}', what="input") == {"a": "é"}


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 500, 5000, 100_000])
def test_too_deep(depth: int) -> None:
    with pytest.raises(JsonInputError, match=rf"^input is nested deeper than {MAX_JSON_DEPTH}"):
        decode_json("[" * depth + "]" * depth, what="input")


def test_depth_at_the_limit_is_accepted() -> None:
    text = '{"a":' * (MAX_JSON_DEPTH - 1) + "1" + "}" * (MAX_JSON_DEPTH - 1)
    assert decode_json(text, what="input") is not None
    wide = json.dumps([[1]] * 1000)  # many brackets, shallow
    assert len(decode_json(wide, what="input")) == 1000


def test_not_utf8() -> None:
    with pytest.raises(JsonInputError, match=r"^payload is not UTF-8$"):
        decode_json(b'{"a": "\xff"}', what="payload")


@pytest.mark.parametrize("text", ['{"a": "x\\u0000"}', '{"\\u0000": 1}', '["\\u0000"]'])
def test_nul_rejected(text: str) -> None:
    with pytest.raises(JsonInputError, match="NUL"):
        decode_json(text, what="input")


def test_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    assert decode_json('{"a": "\\\\u0000"}', what="input") == {"a": "\\u0000"}


def test_invalid_json() -> None:
    with pytest.raises(JsonInputError, match=r"^input is not valid JSON"):
        decode_json("{", what="input")
