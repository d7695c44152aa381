"""What happens to a failed attempt: retry (with back-off) or fail for good."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay_seconds: float = 0.0


def backoff_delay(
    *, app_retry_count: int, backoff_factor: float | None, backoff_max_seconds: int | None
) -> float:
    """Seconds to wait before retry number ``app_retry_count + 1``.

    Without a factor retries are immediate. With one the wait is ``factor ** attempt``
    (attempt counted from 1), capped by ``backoff_max_seconds`` when given.
    """
    if backoff_factor is None or backoff_factor <= 0:
        return 0.0
    delay = float(backoff_factor) ** (app_retry_count + 1)
    if backoff_max_seconds is not None and backoff_max_seconds > 0:
        delay = min(delay, float(backoff_max_seconds))
    return delay


def decide_retry(
    *,
    retries: int,
    app_retry_count: int,
    non_retryable: bool,
    backoff_factor: float | None,
    backoff_max_seconds: int | None,
) -> RetryDecision:
    if non_retryable or app_retry_count >= retries:
        return RetryDecision(retry=False)
    return RetryDecision(
        retry=True,
        delay_seconds=backoff_delay(
            app_retry_count=app_retry_count,
            backoff_factor=backoff_factor,
            backoff_max_seconds=backoff_max_seconds,
        ),
    )
