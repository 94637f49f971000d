"""Pure page sizes, page tokens and default positions."""

from __future__ import annotations

import base64
import json

import pytest

from tollbooth.catalog import paging
from tollbooth.catalog.paging import Cursor
from tollbooth.errors import DomainError

PRODUCTS = paging.query_key("products", include_inactive=False)


def test_page_size_default_clamp_and_negative():
    assert paging.page_size(0) == paging.DEFAULT_PAGE_SIZE == 20
    assert paging.page_size(7) == 7
    assert paging.page_size(101) == paging.MAX_PAGE_SIZE == 100
    with pytest.raises(DomainError) as exc:
        paging.page_size(-1)
    assert exc.value.reason == "INVALID_ARGUMENT"


def test_token_round_trips_its_cursor():
    cursor = Cursor(position=3, seq=41, id="prod_abc")
    token = paging.encode_token(PRODUCTS, cursor)
    assert paging.decode_token(token, PRODUCTS) == cursor
    assert paging.decode_token("", PRODUCTS) is None  # first page


def _token(body: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "not base64 !",
        "AAAA",
        _token([1, 2]),
        _token({"v": 1, "q": PRODUCTS, "p": 1, "s": 1}),
        _token({"v": 2, "q": PRODUCTS, "p": 1, "s": 1, "i": "x"}),
        _token({"v": 1, "q": PRODUCTS, "p": "1", "s": 1, "i": "x"}),
        _token({"v": 1, "q": PRODUCTS, "p": True, "s": 1, "i": "x"}),
        _token({"v": 1, "q": PRODUCTS, "p": 1, "s": 2**70, "i": "x"}),
        _token({"v": 1, "q": PRODUCTS, "p": 1, "s": 1, "i": ""}),
        "A" * 2000,
    ],
)
def test_malformed_token_is_page_token_invalid(token):  # type: ignore[no-untyped-def]
    with pytest.raises(DomainError) as exc:
        paging.decode_token(token, PRODUCTS)
    assert exc.value.reason == "PAGE_TOKEN_INVALID"


def test_token_of_another_query_is_page_token_invalid():
    token = paging.encode_token(PRODUCTS, Cursor(1, 1, "prod_a"))
    for other in (
        paging.query_key("products", include_inactive=True),
        paging.query_key("prices", parent="prod_a", include_inactive=False),
    ):
        with pytest.raises(DomainError) as exc:
            paging.decode_token(token, other)
        assert exc.value.reason == "PAGE_TOKEN_INVALID"


def test_new_entries_go_after_the_largest_position():
    assert paging.next_position(None) == 1
    assert paging.next_position(7) == 8
    assert paging.next_position(2**31 - 1) == 2**31 - 1  # stays an int32; seq breaks the tie
