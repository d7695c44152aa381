"""Retry decisions and back-off delays."""

from __future__ import annotations

import pytest

from hewer.engine.core.retry import RetryDecision, backoff_delay, decide_retry


@pytest.mark.parametrize(
    ("app_retry_count", "factor", "max_seconds", "expected"),
    [
        (0, None, None, 0.0),  # no factor: immediate
        (5, None, 10, 0.0),
        (0, 0.0, None, 0.0),  # a zero or negative factor means no back-off
        (3, -2.0, None, 0.0),
        (0, 2.0, None, 2.0),  # factor ** attempt, attempt counted from 1
        (1, 2.0, None, 4.0),
        (2, 2.0, None, 8.0),
        (0, 1.5, None, 1.5),
        (1, 1.5, None, 2.25),
        (3, 2.0, 10, 10.0),  # capped
        (2, 2.0, 10, 8.0),  # under the cap
        (3, 2.0, 0, 16.0),  # a zero cap is no cap
        (0, 0.5, None, 0.5),
    ],
)
def test_backoff_delay(
    app_retry_count: int, factor: float | None, max_seconds: int | None, expected: float
) -> None:
    delay = backoff_delay(
        app_retry_count=app_retry_count, backoff_factor=factor, backoff_max_seconds=max_seconds
    )
    assert delay == pytest.approx(expected)


@pytest.mark.parametrize(
    ("retries", "app_retry_count", "non_retryable", "expected"),
    [
        (0, 0, False, RetryDecision(retry=False)),
        (2, 0, False, RetryDecision(retry=True, delay_seconds=0.0)),
        (2, 1, False, RetryDecision(retry=True, delay_seconds=0.0)),
        (2, 2, False, RetryDecision(retry=False)),  # retries used up
        (2, 5, False, RetryDecision(retry=False)),
        (2, 0, True, RetryDecision(retry=False)),  # non-retryable error: never retried
    ],
)
def test_decide_retry(
    retries: int, app_retry_count: int, non_retryable: bool, expected: RetryDecision
) -> None:
    decision = decide_retry(
        retries=retries,
        app_retry_count=app_retry_count,
        non_retryable=non_retryable,
        backoff_factor=None,
        backoff_max_seconds=None,
    )
    assert decision == expected


def test_retry_carries_the_backoff_of_its_attempt() -> None:
    delays = [
        decide_retry(
            retries=3,
            app_retry_count=n,
            non_retryable=False,
            backoff_factor=3.0,
            backoff_max_seconds=20,
        ).delay_seconds
        for n in range(3)
    ]
    assert delays == [3.0, 9.0, 20.0]


def test_no_retry_has_no_delay() -> None:
    decision = decide_retry(
        retries=1,
        app_retry_count=1,
        non_retryable=False,
        backoff_factor=2.0,
        backoff_max_seconds=None,
    )
    assert decision == RetryDecision(retry=False, delay_seconds=0.0)
