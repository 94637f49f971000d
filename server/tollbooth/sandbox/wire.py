"""Stripe's wire format: bracket-notation forms in, error objects out, parameter checks.

Parameter names are checked against the request TypedDicts of the installed `stripe` package, so
the sandbox accepts exactly the names the pinned API version knows and refuses the rest the way
Stripe does ("Received unknown parameter: ...").
"""

from __future__ import annotations

import ipaddress
import re
import sys
from typing import Any
from urllib.parse import urlsplit

from tollbooth import currencies

_REQUEST_OPTIONS = {
    "api_key",
    "stripe_version",
    "stripe_account",
    "stripe_context",
    "max_network_retries",
    "idempotency_key",
    "content_type",
    "headers",
}


class StripeError(Exception):
    """An error answered in Stripe's shape. `commit` keeps the transaction's effects."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        commit: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.extra = extra or {}
        self.commit = commit

    def rolled_back(self) -> StripeError:
        self.commit = False
        return self

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        error.update(self.extra)
        return {"error": error}


def missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(
        404, f"No such {kind}: '{_clip(object_id)}'", code="resource_missing", param=param
    )


def bad_request(
    message: str, param: str | None = None, code: str = "parameter_invalid"
) -> StripeError:
    return StripeError(400, message, code=code, param=param)


def required(param: str) -> StripeError:
    return StripeError(
        400, f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def refuse_unsupported(params: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> None:
    """Refuse a parameter the pinned API knows but the sandbox does not model (trials,
    discounts, automatic tax, ...) rather than ignore it, so that a test never passes on
    behaviour the sandbox did not implement."""
    for path in paths:
        node: Any = params
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node not in (None, "", "false", [], {}):
            name = path[0] + "".join(f"[{k}]" for k in path[1:])
            raise bad_request(f"The Stripe sandbox does not support `{name}`.", name)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# -- forms --------------------------------------------------------------------------------------

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`a[b][0][c]=v`, `expand[]=x` -> nested dicts and lists, values kept as strings."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if not match:
            raise bad_request(f"Invalid parameter name: {_clip(key)}", _clip(key))
        path = [match.group(1)] + re.findall(r"\[([^\[\]]*)\]", match.group(2))
        node: dict[str, Any] = root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            if part == "":
                part = str(sum(1 for k in node if k.isdigit()))  # `[]` appends
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    # ASCII digits only: a superscript two passes str.isdigit, and int() refuses it (a 500).
    if converted and all(k.isascii() and k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


# -- parameter checks against the stripe package's TypedDicts ----------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _nested_typeddict(cls: type, key: str) -> type | None:
    annotation = cls.__annotations__.get(key)
    if annotation is None:
        return None
    text = getattr(annotation, "__forward_arg__", None) or repr(annotation)
    module = sys.modules.get(cls.__module__)
    if module is None:
        return None
    for name in _IDENT.findall(text):
        candidate = getattr(module, name, None)
        if isinstance(candidate, type) and hasattr(candidate, "__required_keys__"):
            if name.startswith(cls.__name__):
                return candidate
    return None


def check_params(params: Any, cls: type | None, prefix: str = "") -> None:
    """Raise a 400 for the first parameter name the pinned API version does not know."""
    if cls is None or not isinstance(params, dict):
        return
    known = set(cls.__annotations__) - (_REQUEST_OPTIONS if not prefix else set())
    for key, value in params.items():
        path = f"{prefix}[{key}]" if prefix else key
        if key not in known:
            raise StripeError(
                400,
                f"Received unknown parameter: {_clip(path)}",
                code="parameter_unknown",
                param=_clip(path),
            )
        child = _nested_typeddict(cls, key)
        if child is None:
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                check_params(item, child, f"{path}[{i}]")
        elif isinstance(value, dict):
            check_params(value, child, path)


# -- value coercion -----------------------------------------------------------------------------


_PLAIN_INT = re.compile(r"-?[0-9]+")


def as_int(
    value: Any, param: str, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise bad_request(f"Invalid integer: {param}", param)
    # Plain ASCII digits only, as Stripe reads them: int() would also take "١٠٠", "1_000",
    # " 100" and "+100".
    if isinstance(value, str) and not _PLAIN_INT.fullmatch(value):
        raise bad_request(f"Invalid integer: {_clip(value)}", param)
    try:
        number = int(value)
    except ValueError:  # past Python's 4300-digit limit
        raise bad_request(f"Invalid integer: {_clip(str(value))}", param) from None
    if minimum is not None and number < minimum:
        raise bad_request(f"This value must be greater than or equal to {minimum}.", param)
    if maximum is not None and number > maximum:
        raise bad_request(f"This value must be less than or equal to {maximum}.", param)
    return number


def check_currency(currency: str, param: str) -> str:
    """A currency Stripe holds (lower case), or Stripe's 400 naming it."""
    code = currency.lower()
    if not currencies.known(code):
        raise bad_request(f"Invalid currency: {currency[:10]}.", param)
    return code


def check_currency_amount(amount: int, currency: str, param: str) -> None:
    """Refuse, as Stripe does, an amount its currency cannot take: a three-decimal currency's
    whose last digit is not 0 (stripe.com/docs/currencies, "Three-decimal currencies"; 5.124 KWD
    is sent as 5120 or 5130), or an ISK amount that is not whole kronur (divisible by 100)."""
    code = currency.lower()
    if code in currencies.THREE_DECIMAL and amount % 10:
        raise bad_request(
            f"Invalid amount: {currency.upper()} is a three-decimal currency, so amounts in it"
            " must be rounded to the nearest ten (the last digit must be 0).",
            param,
            code="invalid_amount",
        )
    if code in currencies.WHOLE_UNITS_ONLY and amount % 100:
        raise bad_request(
            f"Invalid amount. Currency {currency.upper()} has become effectively zero-decimal"
            " and charged amounts must be evenly divisible by 100.",
            param,
            code="invalid_charge_amount_no_decimal_compatible",
        )


# A host name's characters: letters and digits of any script, `-`, `.` and `_` (IDN hosts are
# kept as given); never a space, a control character or a delimiter such as `<`, `%` or `"`.
_HOST = re.compile(r"\w[\w.-]*")


def check_url(value: str, param: str) -> str:
    """The URL as given when it is an absolute http(s) URL with a host, as Stripe requires of
    redirect URLs; else Stripe's 400 `url_invalid` naming `param`. Refused: no host
    (`https://`, `https:///x`), a bad port, and any space or control character anywhere
    (leading or trailing too: Stripe does not trim). Stripe's `{CHECKOUT_SESSION_ID}`
    placeholder is an ordinary part of the path or query."""

    def refuse() -> StripeError:
        return bad_request("Not a valid URL", param, code="url_invalid")

    if len(value) > 5000 or not (value.startswith("https://") or value.startswith("http://")):
        raise refuse()
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise refuse()
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError:
        raise refuse() from None
    host = parts.hostname or ""
    if not host:
        raise refuse()
    if parts.netloc.rpartition("@")[2].startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise refuse() from None
    elif not _HOST.fullmatch(host) or ".." in host:
        raise refuse()
    return value


def as_bool(value: Any, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "1"):
        return True
    if value in ("false", "0", ""):
        return False
    raise bad_request(f"Invalid boolean: {_clip(str(value))}", param)


def as_str(value: Any, param: str, *, max_len: int = 5000) -> str:
    if not isinstance(value, str):
        raise bad_request(f"Invalid string: {param}", param)
    if len(value) > max_len:
        raise bad_request(f"{param} must be at most {max_len} characters.", param)
    if "\x00" in value:
        raise bad_request(f"{param} must not contain NUL characters.", param)
    return value


def as_enum(value: Any, param: str, allowed: tuple[str, ...]) -> str:
    text = as_str(value, param)
    if text not in allowed:
        raise bad_request(
            f"Invalid {param}: must be one of {', '.join(allowed)}", param, code="parameter_invalid"
        )
    return text


def merge_metadata(current: dict[str, str], update: Any, param: str = "metadata") -> dict[str, str]:
    """Stripe's rules: `metadata=` clears, `metadata[k]=` removes k, other keys are merged."""
    if update == "":
        return {}
    if not isinstance(update, dict):
        raise bad_request("Invalid hash", param)
    merged = dict(current)
    for key, value in update.items():
        if len(key) > 40:
            raise bad_request(
                "Metadata keys can be at most 40 characters.", f"{param}[{_clip(key)}]"
            )
        text = as_str(value, f"{param}[{key}]", max_len=500)
        if text == "":
            merged.pop(key, None)
        else:
            merged[key] = text
    if len(merged) > 50:
        raise bad_request("Metadata can have at most 50 keys.", param)
    return merged
