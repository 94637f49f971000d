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


def test_an_edited_token_is_refused_even_when_well_formed():
    token = paging.encode_token(PRODUCTS, Cursor(1, 1, "prod_a"))
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    edited = raw.replace(b'"prod_a"', b'"prod_b"')
    forged = base64.urlsafe_b64encode(edited).decode().rstrip("=")
    with pytest.raises(DomainError) as exc:
        paging.decode_token(forged, PRODUCTS)
    assert exc.value.reason == "PAGE_TOKEN_INVALID"


@pytest.mark.parametrize(
    "key",
    [[2**31, 1, "prod_a"], [-1, 1, "prod_a"], [1, 2**64, "prod_a"], [1, 1, "a\x00b"], [1, 1, ""]],
)
def test_signed_token_with_out_of_range_values_is_refused(key):  # type: ignore[no-untyped-def]
    """Even a token signed with the server's key (a leaked one) never carries bad values to SQL."""
    from tollbooth import paging as shared

    token = shared.encode(PRODUCTS, key)
    with pytest.raises(DomainError) as exc:
        paging.decode_token(token, PRODUCTS)
    assert exc.value.reason == "PAGE_TOKEN_INVALID"


def test_new_entries_go_after_the_largest_position():
    assert paging.next_position(None) == 1
    assert paging.next_position(7) == 8
    assert paging.next_position(2**31 - 1) == 2**31 - 1  # stays an int32; seq breaks the tie
