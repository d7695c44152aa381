"""Rate limits as pure arithmetic: task limits from registrations, fixed windows, and
all-or-nothing debits."""

from __future__ import annotations

from typing import Any

import pytest

from hewer.engine.core.rate_limits import (
    Bucket,
    InvalidRateLimit,
    Ledger,
    RateLimitEvaluationError,
    ResolvedLimit,
    TaskRateLimit,
    parse_task_rate_limits,
    resolve,
)


def need(key: str, units: int = 1) -> ResolvedLimit:
    return ResolvedLimit(key=key, units=units, limit=None, duration="SECOND")


def test_a_bucket_allows_its_limit_per_window_then_refills_whole() -> None:
    ledger = Ledger({"api": Bucket(limit=2, used=0, window_started=90.0, window=1.0)}, now=100.2)
    assert ledger.take([need("api")]) is None
    ledger.now = 100.5
    assert ledger.take([need("api")]) is None
    refusal = ledger.take([need("api")])
    # the window began with its first debit, not when the idle bucket last refilled
    assert refusal is not None and refusal.retry_at == pytest.approx(101.2)
    assert "exhausted (2/2 per second)" in refusal.reason
    ledger.now = 101.2  # a fixed window: the whole limit is back at once
    assert ledger.take([need("api")]) is None
    assert ledger.buckets["api"].used == 1


def test_a_task_takes_all_of_its_limits_or_none() -> None:
    ledger = Ledger(
        {
            "a": Bucket(limit=5, used=0, window_started=0.0, window=60.0),
            "b": Bucket(limit=1, used=1, window_started=0.0, window=60.0),
        },
        now=1.0,
    )
    refusal = ledger.take([need("a", 2), need("b")])
    assert refusal is not None and refusal.key == "b"
    assert ledger.buckets["a"].used == 0
    assert ledger.touched == set()


@pytest.mark.parametrize(
    ("buckets", "message"),
    [({}, "does not exist"), ({"a": Bucket(2, 0, 0.0, 1.0)}, "takes 3 units but the limit is 2")],
)
def test_what_no_refill_can_help_has_no_retry_time(buckets: Any, message: str) -> None:
    refusal = Ledger(buckets, now=0.5).take([need("a", 3)])
    assert refusal is not None and refusal.retry_at is None
    assert message in refusal.reason


def test_the_sdks_static_and_dynamic_limits_parse() -> None:
    static, dynamic = parse_task_rate_limits(
        [
            {"key": "test-limit", "units": 1, "limit_values_expr": "-1", "duration": "MINUTE"},
            {
                "key": "input.user_id",
                "key_expr": "input.user_id",
                "units": 1,
                "limit_values_expr": "10",
                "duration": "MINUTE",
            },
        ],
        where="t",
    )
    assert static == TaskRateLimit("test-limit", None, 1, None, None, "MINUTE")
    assert dynamic.key_expr == "input.user_id" and dynamic.limit_expr == "10"
    resolved = resolve(dynamic, {"input": {"user_id": "ann"}})
    assert resolved == ResolvedLimit(key="ann", units=1, limit=10, duration="MINUTE")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"key": "k", "units": 0}, "units must be a positive integer"),
        ({"key_expr": "input.(("}, "invalid CEL expression"),
        ({"key_expr": "input.k"}, "a dynamic key needs limit_values_expr"),
        ({"key": "k", "duration": "FORTNIGHT"}, "duration must be one of"),
        ({}, "key or key_expr is required"),
    ],
)
def test_bad_task_limits_are_refused(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRateLimit, match=message):
        parse_task_rate_limits([raw], where="t")


def test_units_above_a_dynamic_limit_are_refused_for_that_run() -> None:
    (limit,) = parse_task_rate_limits(
        [{"key_expr": "'k'", "units_expr": "input.u", "limit_values_expr": "input.l"}], where="t"
    )
    assert resolve(limit, {"input": {"u": 2, "l": 3}}).units == 2
    with pytest.raises(RateLimitEvaluationError, match="takes 4 units but the limit is 3"):
        resolve(limit, {"input": {"u": 4, "l": 3}})
    with pytest.raises(RateLimitEvaluationError, match="integer"):
        resolve(limit, {"input": {"u": "x", "l": 3}})
