"""Durations as the SDKs write them: Go-style strings such as ``"60s"``, ``"1m"``, ``"1h30m"``."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)", re.ASCII)
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}


class InvalidDuration(ValueError):
    """A duration string that is not ``<number><unit>`` repeated (units ns..d)."""


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; a bare integer is taken as seconds."""
    value = text.strip()
    if not value:
        raise InvalidDuration("empty duration")
    if value.isascii() and value.isdigit():
        return float(value)
    position = 0
    total = 0.0
    for match in _PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(value):
        raise InvalidDuration(f"invalid duration {text!r}: expected e.g. '30s', '5m', '1h30m'")
    return total


def parse_duration_or(text: str, *, default: float) -> float:
    """Like :func:`parse_duration` but an empty string means ``default``."""
    return default if not text.strip() else parse_duration(text)


def format_duration(seconds: float) -> str:
    """The form Hatchet prints in timeout messages: ``4s``, ``1m``, ``1m30s``, ``2h``."""
    whole = round(seconds)
    if whole <= 0:
        return "0s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = ""
    if hours:
        text += f"{hours}h"
    if minutes:
        text += f"{minutes}m"
    if secs or not text:
        text += f"{secs}s"
    return text
