"""Query and body parsing of the REST API: what the SDKs send must parse, the rest is 400."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hatchet_sdk.clients.rest.models.v1_cancel_task_request import V1CancelTaskRequest
from multidict import MultiDict

from hewer.engine.api.rest.errors import ApiError, BadRequest, error_body
from hewer.engine.api.rest.params import (
    Query,
    parse_bool,
    parse_datetime,
    parse_int,
    parse_kv_list,
    parse_kv_pairs,
    parse_statuses,
    parse_uuid,
    run_filter_from_query,
    validate_body,
)


def test_parse_uuid_canonicalizes() -> None:
    value = uuid.uuid4()
    assert parse_uuid(str(value).upper(), "id") == str(value)
    for bad in ("", None, "nope", "123"):
        with pytest.raises(BadRequest):
            parse_uuid(bad, "id")


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-02T03:04:05.000000Z",  # BaseRestClient's format
        "2026-01-02T03:04:05.000000+0000",  # the generated client's default %z
        "2026-01-02T03:04:05+00:00",
        "2026-01-02T03:04:05",  # no offset: UTC
    ],
)
def test_parse_datetime_formats(text: str) -> None:
    assert parse_datetime(text, "since") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_parse_datetime_rejects_garbage() -> None:
    with pytest.raises(BadRequest, match="since"):
        parse_datetime("yesterday", "since")


def test_parse_bool_and_int() -> None:
    assert parse_bool("true", "x", default=False) is True
    assert parse_bool("False", "x", default=True) is False
    assert parse_bool(None, "x", default=True) is True
    with pytest.raises(BadRequest):
        parse_bool("yes", "x", default=False)
    assert parse_int("5", "n", default=1) == 5
    assert parse_int(None, "n", default=1) == 1
    for bad in ("-1", "x", "11"):
        with pytest.raises(BadRequest):
            parse_int(bad, "n", default=1, maximum=10)


def test_statuses_and_pairs() -> None:
    assert parse_statuses(["QUEUED", "FAILED"]) == ["QUEUED", "FAILED"]
    with pytest.raises(BadRequest):
        parse_statuses(["SUCCEEDED"])
    assert parse_kv_pairs(["a:1", "a:2", "url:http://x"], "m") == [
        ("a", "1"),
        ("a", "2"),
        ("url", "http://x"),
    ]
    assert parse_kv_list(["a:1", "b:"], "m") == {"a": "1", "b": ""}
    for bad in ("novalue", ":v"):
        with pytest.raises(BadRequest):
            parse_kv_pairs([bad], "m")


def test_query_arrays_accept_repeated_and_bracketed_keys() -> None:
    q = Query(MultiDict([("statuses", "A"), ("statuses", "B"), ("keys[]", "k")]))
    assert q.many("statuses") == ["A", "B"]
    assert q.many("keys") == ["k"]
    assert q.many("absent") is None
    assert Query(MultiDict([("x", "")])).many("x") == []


def test_run_filter_from_query() -> None:
    wf = str(uuid.uuid4())
    parent = str(uuid.uuid4())
    q = Query(
        MultiDict(
            [
                ("since", "2026-01-01T00:00:00.000000Z"),
                ("statuses", "FAILED"),
                ("workflow_ids", wf),
                ("additional_metadata", "a:1"),
                ("additional_metadata", "b:2"),
                ("parent_task_external_id", parent),
            ]
        )
    )
    f = run_filter_from_query(q)
    assert f.since == datetime(2026, 1, 1, tzinfo=UTC)
    assert f.until is None
    assert list(f.statuses or ()) == ["FAILED"]
    assert list(f.workflow_ids or ()) == [wf]
    assert list(f.additional_metadata or ()) == [("a", "1"), ("b", "2")]
    assert f.metadata_any is True  # several pairs are OR'ed unless the operator says AND
    assert f.parent_id == parent
    q = Query(
        MultiDict([("since", "2026-01-01T00:00:00Z"), ("additional_metadata_operator", "AND")])
    )
    assert run_filter_from_query(q).metadata_any is False
    with pytest.raises(BadRequest, match="since"):
        run_filter_from_query(Query(MultiDict()))
    with pytest.raises(BadRequest):
        run_filter_from_query(
            Query(MultiDict([("since", "2026-01-01T00:00:00Z"), ("worker_id", "w")]))
        )


def test_validate_body() -> None:
    some = str(uuid.uuid4())
    body = validate_body(V1CancelTaskRequest, {"externalIds": [some]})
    assert body.external_ids == [some]
    for bad in ([some], "x", {"externalIds": ["short"]}, {"filter": {"until": "x"}}):
        with pytest.raises(BadRequest):
            validate_body(V1CancelTaskRequest, bad)


def test_error_body_shape() -> None:
    assert error_body("nope") == '{"errors": [{"description": "nope"}]}'
    err = ApiError(418, "teapot")
    assert (err.status, err.message) == (418, "teapot")
