"""The server's side of a query parameter given twice (gateway/json_fields.lua names them):
a repeated field may repeat, any other is MALFORMED_REQUEST naming it."""

from __future__ import annotations

import pytest

from billing.v1 import account_pb2, credit_pb2, token_pb2, usage_pb2
from tollbooth import errors
from tollbooth.rpc import json_fields

ISSUE = token_pb2.DESCRIPTOR.services_by_name["TokenService"].methods_by_name["IssueToken"]
CHECK = credit_pb2.DESCRIPTOR.services_by_name["CreditService"].methods_by_name["CheckAvailability"]


@pytest.mark.parametrize("header", ["", "scopes", "nothing_here", "nothing.deeper"])
def test_a_repeated_field_or_an_unknown_name_may_repeat(header: str) -> None:
    json_fields.check_query(ISSUE, header)  # refuses nothing: no exception


@pytest.mark.parametrize(
    ("method", "header", "field"),
    [
        (CHECK, "required", "required"),
        (CHECK, "type,required", "type"),
        (ISSUE, "scopes,sessionTtlSeconds", "sessionTtlSeconds"),
        (ISSUE, "principal%5Fid", "principal_id"),
    ],
)
def test_any_other_field_given_twice_is_malformed_naming_it(
    method: object, header: str, field: str
) -> None:
    with pytest.raises(errors.DomainError) as refused:
        json_fields.check_query(method, header)  # type: ignore[arg-type]
    assert refused.value.reason == "MALFORMED_REQUEST"
    assert refused.value.kind is errors.Kind.INVALID_ARGUMENT
    assert refused.value.metadata["field"] == field


USAGE = usage_pb2.DESCRIPTOR.services_by_name["UsageService"].methods_by_name["GetUsage"]
LIST = account_pb2.DESCRIPTOR.services_by_name["AccountService"].methods_by_name["ListAccounts"]


@pytest.mark.parametrize(
    ("method", "header", "field"),
    [
        (USAGE, "metric_code,metricCode,start_time,end_time", "metric_code"),
        (USAGE, "metric_code,start_time,startTime,end_time", "start_time"),
        (USAGE, "metric_code,start_time,start_time.seconds,end_time", "start_time"),
        (LIST, "page_size,pageSize", "page_size"),
        (LIST, "alias%5Fprefix,aliasPrefix", "alias_prefix"),
    ],
)
def test_a_field_named_twice_under_two_names_is_malformed_naming_it(
    method: object, header: str, field: str
) -> None:
    """`?metric_code=a&metricCode=b`: each name once, so no repeat, but one field twice; the
    transcoder would keep the last silently."""
    with pytest.raises(errors.DomainError) as refused:
        json_fields.check_query_fields(method, header, "mgt")  # type: ignore[arg-type]
    assert refused.value.reason == "MALFORMED_REQUEST"
    assert refused.value.metadata["field"] == field


@pytest.mark.parametrize(
    ("method", "header"),
    [
        (USAGE, "metric_code,start_time,end_time,group_by,page_size,page_token"),
        (USAGE, "metricCode,startTime,end_time.seconds,end_time.nanos"),
        (LIST, "?page_size,alias_prefix,email,include_archived"),
    ],
)
def test_distinct_fields_and_parts_pass(method: object, header: str) -> None:
    json_fields.check_query_fields(method, header, "mgt")  # type: ignore[arg-type]


@pytest.mark.parametrize("header", ["nothing_here", "page_size,nothingHere", "?nothing"])
def test_a_query_name_that_names_no_field_is_field_unknown(header: str) -> None:
    """Envoy's transcoder passes unknown query parameters on (ignore_unknown_query_parameters):
    the server refuses them as it refuses an unknown JSON body key."""
    with pytest.raises(errors.DomainError) as refused:
        json_fields.check_query_fields(LIST, header, "mgt")  # type: ignore[arg-type]
    assert refused.value.reason == "FIELD_UNKNOWN"
    assert refused.value.metadata["field"] in ("nothing_here", "nothingHere", "nothing")


GRANT = credit_pb2.DESCRIPTOR.services_by_name["CreditService"].methods_by_name["GrantCredits"]


@pytest.mark.parametrize(
    ("query", "body", "field"),
    [
        ("credit_type", "creditType,amount,requestId", "credit_type"),
        ("creditType", "credit_type,amount", "credit_type"),
        ("expire_time.seconds", "credit_type,expireTime", "expire_time"),
    ],
)
def test_a_query_field_the_body_names_in_another_spelling_is_malformed(
    query: str, body: str, field: str
) -> None:
    """`?credit_type=bonus` beside `{"creditType": "units"}`: the transcoder's collision check
    compares names as written, so the query would win silently (bonus credits granted)."""
    with pytest.raises(errors.DomainError) as refused:
        json_fields.check_query_body(GRANT, query, body)
    assert refused.value.reason == "MALFORMED_REQUEST"
    assert refused.value.metadata["field"] == field


def test_a_query_field_the_body_leaves_out_passes() -> None:
    json_fields.check_query_body(GRANT, "expire_time", "creditType,amount,requestId")
    json_fields.check_query_body(GRANT, "credit_type", None)
