"""`POST /mgt/v1/events:batch` through a real Envoy answers per event when one event of the
batch is JSON the transcoder cannot read (DESIGN.md section 8: one bad event does not sink the
batch). Before, such an event made the whole batch 400 MALFORMED_REQUEST and wrote nothing.

The gateway sends the batch to the sidecar, which answers each unreadable event REJECTED in its
place and passes the rest to the transcoded route (marked by INNER_HEADER). That route is the
one every batch took before: what it answers is the reference the tests compare with."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import SERVICE_KEY, make_env
from tollbooth.usage.batch_edge import INNER_HEADER

pytestmark = pytest.mark.envoy

KEY = {"x-api-key": SERVICE_KEY}
DIRECT = {**KEY, INNER_HEADER: "1"}  # the transcoded route itself, as before this change
PATH = "/mgt/v1/events:batch"
STAMP = "2026-03-01T00:00:00Z"


@pytest.fixture(scope="module")
def account(stack) -> str:  # type: ignore[no-untyped-def]
    r = stack.request("POST", "/mgt/v1/token/issue", {"principal_id": "p-batch-edge"}, KEY)
    assert r.status == 200, r.body
    return "p-batch-edge"


def _event(account: str, unique_id: str, **more: object) -> dict[str, object]:
    return {
        "uniqueId": unique_id,
        "account": account,
        "eventName": "edge_call",
        "timestamp": STAMP,
        "properties": {"tokens": 3},
        **more,
    }


def _ids() -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"g1-{tag}", f"b2-{tag}", f"g3-{tag}"


def _statuses(resp) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return [(r["unique_id"], r["status"], r["reason"]) for r in resp.json()["results"]]


BAD_FIELDS = [
    {"timestamp": "garbage"},
    {"timestamp": "0000-01-01T00:00:00Z"},
    {"timestamp": 5},
    {"properties": [1]},
    {"eventName": 5},
]


@pytest.mark.parametrize("bad", BAD_FIELDS, ids=lambda b: json.dumps(b))
def test_an_unreadable_field_rejects_that_event_only(stack, account, bad) -> None:  # type: ignore[no-untyped-def]
    g1, b2, g3 = _ids()
    events = [_event(account, g1), _event(account, b2, **bad), _event(account, g3)]
    # Before: the transcoder refused the whole batch.
    before = stack.request("POST", PATH, {"events": events}, DIRECT)
    assert (before.status, before.reason) == (400, "MALFORMED_REQUEST"), before.body
    resp = stack.request("POST", PATH, {"events": events}, KEY)
    assert resp.status == 200, resp.body
    assert _statuses(resp) == [
        (g1, "EVENT_STATUS_ACCEPTED", ""),
        (b2, "EVENT_STATUS_REJECTED", "FIELD_INVALID"),
        (g3, "EVENT_STATUS_ACCEPTED", ""),
    ]
    field = next(iter(bad))
    assert field in resp.json()["results"][1]["message"]
    # The good events were written, the bad one not: its good twin is accepted now.
    again = [_event(account, g1), _event(account, b2), _event(account, g3)]
    second = stack.request("POST", PATH, {"events": again}, KEY)
    assert [s for _, s, _ in _statuses(second)] == [
        "EVENT_STATUS_DUPLICATE",
        "EVENT_STATUS_ACCEPTED",
        "EVENT_STATUS_DUPLICATE",
    ]


@pytest.mark.parametrize("bad", ["x", None, 5, [1], True], ids=repr)
def test_an_event_that_is_not_an_object_is_rejected_in_its_place(stack, account, bad) -> None:  # type: ignore[no-untyped-def]
    g1, _, g3 = _ids()
    events = [_event(account, g1), bad, _event(account, g3)]
    resp = stack.request("POST", PATH, {"events": events}, KEY)
    assert resp.status == 200, resp.body
    assert _statuses(resp) == [
        (g1, "EVENT_STATUS_ACCEPTED", ""),
        ("", "EVENT_STATUS_REJECTED", "FIELD_INVALID"),
        (g3, "EVENT_STATUS_ACCEPTED", ""),
    ]


def test_a_unique_id_that_is_not_a_string_is_not_echoed(stack, account) -> None:  # type: ignore[no-untyped-def]
    g1, _, _ = _ids()
    events = [_event(account, g1), {**_event(account, "x"), "uniqueId": 7, "timestamp": "no"}]
    resp = stack.request("POST", PATH, {"events": events}, KEY)
    assert _statuses(resp)[1] == ("", "EVENT_STATUS_REJECTED", "FIELD_INVALID")


def test_only_bad_events_still_need_the_service_key(stack, account) -> None:  # type: ignore[no-untyped-def]
    body = {"events": [_event(account, "only-bad", timestamp="garbage")]}
    none = stack.request("POST", PATH, body)
    assert none.status == 401, none.body
    resp = stack.request("POST", PATH, body, KEY)
    assert _statuses(resp) == [("only-bad", "EVENT_STATUS_REJECTED", "FIELD_INVALID")]


def _header(resp, name: str) -> str | None:  # type: ignore[no-untyped-def]
    return next((v for k, v in resp.headers.items() if k.lower() == name), None)


def _same_shape(a: bytes, b: bytes, ids: dict[str, str]) -> None:
    for mine, theirs in ids.items():
        a = a.replace(mine.encode(), theirs.encode())
    assert a == b


def test_an_all_good_batch_answers_as_the_transcoder_prints_it(stack, account) -> None:  # type: ignore[no-untyped-def]
    mine, theirs = _ids(), _ids()
    dup = [_event(account, mine[0]), _event(account, mine[1]), _event(account, mine[0])]
    ref = [_event(account, theirs[0]), _event(account, theirs[1]), _event(account, theirs[0])]
    dup.append(_event("nobody-here", mine[2]))
    ref.append(_event("nobody-here", theirs[2]))
    resp = stack.request("POST", PATH, {"events": dup}, KEY)
    direct = stack.request("POST", PATH, {"events": ref}, DIRECT)
    assert resp.status == direct.status == 200
    _same_shape(resp.body, direct.body, dict(zip(mine, theirs, strict=True)))
    assert _header(resp, "content-type") == _header(direct, "content-type")


def test_a_spliced_rejection_has_the_servers_own_shape(stack, account) -> None:  # type: ignore[no-untyped-def]
    g1, b2, _ = _ids()
    resp = stack.request(
        "POST", PATH, {"events": [_event("nobody-here", g1), _event(account, b2, timestamp=5)]}, KEY
    )
    server, edge = json.loads(resp.body, object_pairs_hook=list)[0][1]
    assert [k for k, _ in server] == [k for k, _ in edge]
    # An id with characters JSON printers may escape is written as the transcoder writes it.
    odd = (
        f"odd-{g1}-\u00e9<>&'\u2028\u00ad\u200b\u0600\ufeff\x7f\\\"\t\x01/\b\n\r\f"
        "\U000110bd\U000e0020\u206a\ufffa\U0001d173\U0001f600\u17b4\u0603\u06dd"
    )
    pair = [_event("nobody-here", odd), _event(account, odd, timestamp=5)]
    resp = stack.request("POST", PATH, {"events": pair}, KEY)
    assert resp.status == 200, resp.body
    assert [r["unique_id"] for r in resp.json()["results"]] == [odd, odd]
    printed = resp.body.split(b'"unique_id":')[1:]
    assert printed[0].split(b',"status"')[0] == printed[1].split(b',"status"')[0]
    assert b'"status":"EVENT_STATUS_REJECTED","reason":"FIELD_INVALID"' in resp.body
    assert b" " not in resp.body.replace(b"(", b"").split(b'"message"')[0]


def test_the_request_id_is_the_callers(stack, account) -> None:  # type: ignore[no-untyped-def]
    rid = f"rid-{uuid.uuid4().hex}"
    body = {"events": [_event(account, f"rid-{rid}"), _event(account, "rid-bad", timestamp=5)]}
    resp = stack.request("POST", PATH, body, {**KEY, "x-request-id": rid})
    assert resp.status == 200
    assert _header(resp, "x-request-id") == rid


BAD = b'{"events": [{"timestamp": 5}]}'
CUT = b'{"events": []}'  # what the transcoded route gets once the bad event is cut out


@pytest.mark.parametrize(
    "body,reference,headers,path",
    [
        # Refused whole, as before (the body goes on unchanged).
        (b"not json", None, KEY, PATH),
        (b"[1, 2]", None, KEY, PATH),
        (b'"events"', None, KEY, PATH),
        (b'{"events": "x"}', None, KEY, PATH),
        (b'{"events": {"account": "a"}}', None, KEY, PATH),
        (b'{"events": [1], "events": [2]}', None, KEY, PATH),
        (b'{"events": [1,]}', None, KEY, PATH),
        (b'{"events": [NaN]}', None, KEY, PATH),
        (BAD, None, {**KEY, "content-type": "application/grpc"}, PATH),
        (BAD, None, {**KEY, "content-encoding": "gzip"}, PATH),
        # Refused by the server as it refuses the batch without its unreadable events (before,
        # the transcoder's MALFORMED_REQUEST came first and hid the credentials' refusal).
        (b'{"events": [1], "extra": 1}', b'{"events": [], "extra": 1}', KEY, PATH),
        (BAD, CUT, {}, PATH),
        (BAD, CUT, {"x-api-key": "wrong"}, PATH),
        (BAD, CUT, {"authorization": "Bearer abc"}, PATH),
        (BAD, CUT, KEY, PATH + "?environment=nowhere"),
        (BAD, CUT, KEY, PATH + "?unknown=1"),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_a_refused_batch_is_refused_as_the_transcoded_route_refuses_it(  # type: ignore[no-untyped-def]
    stack, body, reference, headers, path
):
    resp = stack.request("POST", path, body, headers)
    direct = stack.request("POST", path, reference or body, {**headers, INNER_HEADER: "1"})
    # 4xx, or (a gRPC caller) Envoy's answer in gRPC: 200 with grpc-status 3.
    assert 400 <= resp.status < 500 or _header(resp, "grpc-status") == "3", resp.body
    assert (resp.status, resp.body) == (direct.status, direct.body)
    for name in ("content-type", "grpc-status", "www-authenticate"):
        assert _header(resp, name) == _header(direct, name)


def test_a_body_over_the_limit_is_413(stack) -> None:  # type: ignore[no-untyped-def]
    limit = stack.settings.max_body_bytes
    body = {"events": [{"timestamp": 5, "properties": {"pad": "x" * limit}}]}
    resp = stack.request("POST", PATH, body, KEY)
    assert (resp.status, resp.reason) == (413, "REQUEST_TOO_LARGE"), resp.body


def test_other_methods_and_events_path_are_untouched(stack, account) -> None:  # type: ignore[no-untyped-def]
    assert stack.request("GET", PATH, None, KEY).status == 405
    one = stack.request("POST", "/mgt/v1/events", _event(account, "one", timestamp=5), KEY)
    assert (one.status, one.reason) == (400, "MALFORMED_REQUEST")


@pytest.fixture(scope="module")
def limited(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A stack whose service key may make 2 calls a minute."""
    from tests.devstack import migrated_sqlite, start_stack

    tmp = tmp_path_factory.mktemp("limited")
    url = migrated_sqlite(tmp / "billing.db")
    s = start_stack(url, make_env(url, BILLING_RATE_LIMIT_KEY="2/minute"), tmp)
    yield s
    s.close()


def test_the_rate_limit_answer_passes_through(limited) -> None:  # type: ignore[no-untyped-def]
    body = {"events": [{"uniqueId": "rl", "timestamp": 5}]}
    answers = [limited.request("POST", PATH, body, KEY) for _ in range(4)]
    assert [a.status for a in answers[:2]] == [200, 200]
    last = answers[-1]
    assert (last.status, last.reason) == (429, "RATE_LIMITED"), last.body
    assert _header(last, "retry-after")
    assert _header(last, "ratelimit")
