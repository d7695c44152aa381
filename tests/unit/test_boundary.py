"""The gRPC boundary's decoding: undecodable bytes and NUL characters are caught before any
handler runs, and a message without a 0x00 byte is not walked at all; and its timestamps."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hatchet_sdk.contracts import dispatcher_pb2 as pb

from hewer.engine.api.grpc.boundary import HasNul, Undecodable, _safe_deserializer
from hewer.engine.api.grpc.common import timestamp


def decode(raw: bytes) -> Any:
    decoder = _safe_deserializer(pb.WorkerRegisterRequest.FromString)
    assert decoder is not None
    return decoder(raw)


def test_a_clean_message_decodes() -> None:
    request = pb.WorkerRegisterRequest(worker_name="w", actions=["a:b"], slots=5)
    assert decode(request.SerializeToString()) == request


def test_a_nul_in_any_string_field_is_refused_with_its_path() -> None:
    request = pb.WorkerRegisterRequest(worker_name="w", actions=["a:b", "c\x00d"])
    assert decode(request.SerializeToString()) == HasNul("actions")


def test_zero_bytes_that_are_not_in_strings_pass() -> None:
    # a map entry with an empty value writes a 0x00 length byte: not a NUL character
    request = pb.WorkerRegisterRequest(worker_name="w", labels={"k": pb.WorkerLabels(str_value="")})
    raw = request.SerializeToString()
    assert b"\x00" in raw
    assert decode(raw) == request


def test_bytes_that_do_not_decode_are_marked() -> None:
    assert isinstance(decode(b"\xff\xff\xff"), Undecodable)


def test_timestamps_of_now_and_of_a_given_time() -> None:
    before = time.time_ns()
    now = timestamp().ToNanoseconds()
    assert before <= now <= time.time_ns()
    given = datetime(2026, 12, 7, 13, 0, 1, 250_000, tzinfo=timezone(timedelta(hours=2)))
    assert timestamp(given).ToDatetime(tzinfo=UTC) == given
