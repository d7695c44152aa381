"""Go-style duration strings: parsing and Hatchet's timeout-message format."""

from __future__ import annotations

import pytest

from hewer.engine.core.durations import (
    InvalidDuration,
    format_duration,
    parse_duration,
    parse_duration_or,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("2m3s", 123.0),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        ("250ms", 0.25),
        ("1500us", 0.0015),
        ("1500µs", 0.0015),
        ("10ns", 1e-8),
        ("1s500ms", 1.5),
        ("0s", 0.0),
        ("45", 45.0),  # a bare integer is seconds
        ("0", 0.0),
        ("  30s  ", 30.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "s",
        "10x",
        "1.5",  # decimals need a unit
        "-5s",
        "5 s",
        "1h 30m",
        "m5",
        "5sec",
        "5S",
        "1h30",
        "abc",
        "²",  # a Unicode digit is not a number of seconds
        "٣s",  # nor is an Arabic-Indic one
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidDuration):
        parse_duration(text)


def test_parse_duration_or_uses_the_default_only_for_empty_text() -> None:
    assert parse_duration_or("", default=60) == 60
    assert parse_duration_or("  ", default=7.5) == 7.5
    assert parse_duration_or("2m", default=60) == 120
    with pytest.raises(InvalidDuration):
        parse_duration_or("soon", default=60)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-3, "0s"),
        (0.4, "0s"),
        (1, "1s"),
        (4, "4s"),
        (59, "59s"),
        (59.6, "1m"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (3661, "1h1m1s"),
        (3605, "1h5s"),
        (7200, "2h"),
        (90000, "25h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [1, 30, 60, 90, 3600, 5415, 86400])
def test_format_then_parse_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
