"""The server's side of a query parameter given twice (gateway/json_fields.lua names them):
a repeated field may repeat, any other is MALFORMED_REQUEST naming it."""

from __future__ import annotations

import pytest

from billing.v1 import credit_pb2, token_pb2
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
