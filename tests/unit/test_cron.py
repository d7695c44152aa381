"""Cron expressions: validation, aliases, 5/6 fields, next-tick math in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from hewer.engine.core.cron import InvalidCron, code_crons, next_tick, normalize, should_fire
from hewer.engine.core.rate_limits import check_rate_limit

T0 = datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)


def test_five_field_expressions_tick_on_minutes() -> None:
    assert next_tick("*/15 * * * *", T0) == T0 + timedelta(minutes=15)
    assert next_tick("30 2 * * *", T0) == datetime(2024, 1, 1, 2, 30, tzinfo=UTC)


def test_six_field_expressions_lead_with_seconds() -> None:
    assert next_tick("* * * * * *", T0) == T0 + timedelta(seconds=1)
    assert next_tick("5 * * * * *", T0) == T0 + timedelta(seconds=5)
    assert next_tick("*/10 * * * * *", T0 + timedelta(seconds=1)) == T0 + timedelta(seconds=10)


def test_next_tick_is_strictly_after_even_mid_second() -> None:
    start = T0 + timedelta(seconds=3, milliseconds=999)
    assert next_tick("* * * * * *", start) == T0 + timedelta(seconds=4)
    assert next_tick("* * * * * *", T0 + timedelta(seconds=4)) == T0 + timedelta(seconds=5)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("@hourly", datetime(2024, 1, 1, 1, tzinfo=UTC)),
        ("@daily", datetime(2024, 1, 2, tzinfo=UTC)),
        ("@midnight", datetime(2024, 1, 2, tzinfo=UTC)),
        ("@weekly", datetime(2024, 1, 7, tzinfo=UTC)),
        ("@monthly", datetime(2024, 2, 1, tzinfo=UTC)),
        ("@yearly", datetime(2025, 1, 1, tzinfo=UTC)),
        ("@annually", datetime(2025, 1, 1, tzinfo=UTC)),
    ],
)
def test_aliases(alias: str, expected: datetime) -> None:
    assert next_tick(alias, T0) == expected


def test_times_are_utc_whatever_the_input_zone() -> None:
    plus_two = timezone(timedelta(hours=2))
    start = datetime(2024, 1, 1, 2, 0, tzinfo=plus_two)  # 00:00 UTC
    tick = next_tick("0 1 * * *", start)
    assert tick == datetime(2024, 1, 1, 1, 0, tzinfo=UTC) and tick.tzinfo == UTC


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "* * *", "* * * * * * *", "61 * * * *", "* 25 * * *", "@sometimes", "x * * * *"],
)
def test_invalid_expressions_are_refused(bad: str) -> None:
    with pytest.raises(InvalidCron):
        normalize(bad)


def test_normalize_collapses_blanks_and_lowercases_aliases() -> None:
    assert normalize("  0   *  * * * ") == "0 * * * *"
    assert normalize("@DAILY") == "@daily"


def test_missed_ticks_beyond_the_grace_do_not_fire() -> None:
    assert should_fire(T0, T0 + timedelta(seconds=2), grace_seconds=15)
    assert not should_fire(T0, T0 + timedelta(minutes=5), grace_seconds=15)


def test_code_crons_from_a_registration() -> None:
    exprs, data = code_crons(
        {"cron_triggers": ["0 * * * *", "0  * * * *", "@daily"], "cron_input": '{"name": "x"}'}
    )
    assert exprs == ["0 * * * *", "@daily"]
    assert data == {"name": "x"}
    assert code_crons({}) == ([], {})
    with pytest.raises(InvalidCron):
        code_crons({"cron_triggers": ["nope"]})
    with pytest.raises(InvalidCron):
        code_crons({"cron_input": "[1]"})


def test_rate_limit_validation() -> None:
    assert check_rate_limit("k", 10, "minute") == ("k", 10, "MINUTE")
    assert check_rate_limit("k", 0, None) == ("k", 0, "SECOND")
    for key, limit, duration in (("", 1, "SECOND"), ("k", -1, "SECOND"), ("k", 1, "FORTNIGHT")):
        with pytest.raises(ValueError):
            check_rate_limit(key, limit, duration)
