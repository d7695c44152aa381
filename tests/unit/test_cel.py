"""The CEL wrapper: filter and webhook environments, errors as values the callers map."""

from __future__ import annotations

import pytest

from hewer.engine.core import cel


def test_filter_expression_over_all_variables() -> None:
    variables = cel.filter_variables(
        input={"key": "value", "n": 3},
        additional_metadata={"meta": "data"},
        payload={"filter": "payload"},
        event_id="e1",
        event_key="user:create",
    )
    assert cel.evaluate_bool(
        "input.key == 'value' && additional_metadata.meta == 'data' "
        "&& payload.filter == 'payload' && event_key == 'user:create' && input.n > 2",
        variables,
    )
    assert not cel.evaluate_bool("input.key == 'other'", variables)
    assert cel.evaluate_bool("1 == 1", cel.filter_variables(input={}))


def test_missing_key_and_unknown_name_are_errors() -> None:
    with pytest.raises(cel.CelError, match="key"):
        cel.evaluate_bool("input.key == 'value'", cel.filter_variables(input={}))
    with pytest.raises(cel.CelError, match="undeclared reference to 'nope'"):
        cel.evaluate_bool("nope == 1", cel.filter_variables(input={}))


def test_has_and_short_circuit() -> None:
    v = cel.filter_variables(input={})
    assert cel.evaluate_bool("has(input.x) && input.x == 1", v) is False
    assert cel.evaluate_bool("!has(input.x) || input.x == 1", v) is True


def test_wrong_result_type() -> None:
    with pytest.raises(cel.CelError, match="boolean"):
        cel.evaluate_bool("'text'", {})
    with pytest.raises(cel.CelError, match="string"):
        cel.evaluate_string("input.n", {"input": {"n": 1}, "headers": {}})


def test_webhook_expressions() -> None:
    v = {"input": {"type": "test", "scope": "s"}, "headers": {"x-custom-scope": "h"}}
    assert cel.evaluate_string("'webhook:' + input.type", v) == "webhook:test"
    assert cel.evaluate_string("headers['x-custom-scope']", v) == "h"
    assert cel.evaluate_string("'prefix:' + input.type + ':' + input.scope", v) == "prefix:test:s"


@pytest.mark.parametrize("expression", ["input.key ==", "", "   ", "(((", "a b"])
def test_check_refuses_what_does_not_compile(expression: str) -> None:
    with pytest.raises(cel.CelError):
        cel.check(expression)


def test_values_come_back_as_plain_python() -> None:
    value = cel.evaluate("input", {"input": {"a": [1, 2.5, True, None, "s"], "m": {"k": 1}}})
    assert value == {"a": [1, 2.5, True, None, "s"], "m": {"k": 1}}
    assert type(value["a"][0]) is int and type(value["a"][2]) is bool
