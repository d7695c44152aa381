"""Rate limit definitions: validation of a key, limit and window (no I/O)."""

from __future__ import annotations

from typing import Any

DURATIONS = ("SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "YEAR")
MAX_KEY_LENGTH = 255


def check_rate_limit(key: str, limit: Any, duration: Any) -> tuple[str, int, str]:
    """Validated ``(key, limit, duration)``; raises ValueError with the reason."""
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"rate limit key must be 1-{MAX_KEY_LENGTH} characters")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("limit must be a non-negative integer")
    text = str(duration or "SECOND").upper()
    if text not in DURATIONS:
        raise ValueError(f"duration must be one of {', '.join(DURATIONS)}")
    return key, limit, text
