"""`POST /mgt/v1/events:batch` on the sidecar: each event the transcoder could not read is
answered REJECTED in its place, the rest go through the gateway as before.

Envoy's JSON transcoder reads a batch whole: one event with a JSON type it cannot parse
(`"timestamp": 5`, `"properties": [1]`, an event that is not an object) made the whole batch
400 MALFORMED_REQUEST, where DESIGN.md section 8 answers each event on its own. Envoy routes
the public POST here (gateway/envoy.yaml, json_fields.lua's checks already run on it). Each
event is parsed as a billing.v1.UsageEvent with protobuf's own JSON rules
(`convert.json_event_problem`; unknown keys ignored, as the transcoder ignores them, and the
server refuses them from json_fields.lua's header). When none fails, or the body is not an
object whose one `events` is a list (or holds more events than a batch takes), the body goes
on unchanged; otherwise the failing events are
cut out of its text, every other byte kept. It goes back to Envoy with INNER_HEADER, which
routes it to the transcoded route every batch took before: authentication, environments, rate
limits and every refusal stay where they were. An answer other than a 200 JSON one is passed on
as it is (status, body, headers); a 200 gets a REJECTED result (reason FIELD_INVALID) spliced
in at each cut event's position, the server's results kept byte for byte.

INNER_HEADER is no privilege: a client that sends it reaches the transcoded route itself, as
before this module, and gets the transcoder's answer for the whole batch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tollbooth.config import Settings
from tollbooth.usage.convert import echo, json_event_problem

INNER_HEADER = "x-tollbooth-batch-inner"
PATH = "/mgt/v1/events:batch"
REASON = "FIELD_INVALID"

# Not passed on to the inner call: the connection's own, and what Envoy's filters write again.
_DROP_REQUEST = {
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "expect",
    "proxy-connection",
}
_DROP_RESPONSE = {
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "date",
    "server",
    "x-request-id",
}

_WS = re.compile(r"[ \t\n\r]*")


class _NotJson(Exception):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(name)


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _ws(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return match.end() if match else i


def _value(text: str, i: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, i)
    except (ValueError, RecursionError) as exc:
        raise _NotJson(str(exc)) from None


def _members(text: str, i: int) -> tuple[list[tuple[str, int, int]], int]:
    """The object at text[i] ("{"): each member as (key, value start, value end), and its end."""
    out: list[tuple[str, int, int]] = []
    i = _ws(text, i + 1)
    if text[i : i + 1] == "}":
        return out, i + 1
    while True:
        if text[i : i + 1] != '"':
            raise _NotJson("key")
        key, i = _value(text, i)  # a JSON string: the key, its escapes decoded
        i = _ws(text, i)
        if text[i : i + 1] != ":":
            raise _NotJson(":")
        start = _ws(text, i + 1)
        _, end = _value(text, start)
        out.append((key, start, end))
        i = _ws(text, end)
        if text[i : i + 1] == "}":
            return out, i + 1
        if text[i : i + 1] != ",":
            raise _NotJson(",")
        i = _ws(text, i + 1)


def _items(text: str, i: int) -> tuple[list[tuple[Any, int, int]], int]:
    """The array at text[i] ("["): each item as (value, start, end), and its end."""
    out: list[tuple[Any, int, int]] = []
    i = _ws(text, i + 1)
    if text[i : i + 1] == "]":
        return out, i + 1
    while True:
        value, end = _value(text, i)
        out.append((value, i, end))
        i = _ws(text, end)
        if text[i : i + 1] == "]":
            return out, i + 1
        if text[i : i + 1] != ",":
            raise _NotJson(",")
        i = _ws(text, i + 1)


def _unique_id(event: Any) -> str:
    if isinstance(event, dict):
        for key in ("uniqueId", "unique_id"):
            if isinstance(event.get(key), str):
                return echo(event[key])
    return ""


@dataclass(frozen=True)
class Plan:
    """The body to send on, and the answer for each event cut out of it, by position."""

    body: bytes
    rejected: dict[int, str]
    total: int


# What protobuf's JSON printer (the transcoder's) writes as \\uXXXX beyond control characters,
# '"' and '\\': `<`, `>`, DEL and the invisible or layout-changing code points.
_PRINTER_ESCAPES = re.compile(
    "[\x00-\x1f<>\x7f\u00ad\u0600-\u0603\u06dd\u070f\u17b4\u17b5\u200b-\u200f"
    "\u2028-\u202e\u2060-\u2064\u206a-\u206f\ufeff\ufff9-\ufffb"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
_SHORT = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _escaped(match: re.Match[str]) -> str:
    char = match[0]
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _string(value: str) -> str:
    """A JSON string as protobuf's printer writes it (UTF-8, its own escapes)."""
    plain = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _PRINTER_ESCAPES.sub(_escaped, plain) + '"'


def _rejection(event: Any, message: str) -> str:
    return (
        f'{{"unique_id":{_string(_unique_id(event))},"status":"EVENT_STATUS_REJECTED",'
        f'"reason":"{REASON}","message":{_string(message)}}}'
    )


def plan(body: bytes, max_batch: int) -> Plan | None:
    """The batch with its unreadable events cut out; None to send the body on unchanged."""
    try:
        text = body.decode("utf-8")
        whole = _DECODER.decode(text)  # the common case, all events readable, stops here
    except (ValueError, RecursionError, _NotJson):
        return None
    if not isinstance(whole, dict) or not isinstance(whole.get("events"), list):
        return None
    if len(whole["events"]) > max_batch:
        return None  # the server refuses the batch whole (BATCH_TOO_LARGE or the transcoder)
    problems = [json_event_problem(event) for event in whole["events"]]
    if not any(problems):
        return None
    try:  # where each event's text is, to cut out exactly the unreadable ones
        members, _ = _members(text, _ws(text, 0))
        events = [m for m in members if m[0] == "events"]
        if len(events) != 1:
            return None  # `events` twice: refused whole, as before
        _, first, last = events[0]
        items, _ = _items(text, first)
    except _NotJson:
        return None
    rejected: dict[int, str] = {}
    kept: list[str] = []
    for n, ((event, a, b), why) in enumerate(zip(items, problems, strict=True)):
        if why is None:
            kept.append(text[a:b])
        else:
            rejected[n] = _rejection(event, why)
    inner = text[:first] + "[" + ",".join(kept) + "]" + text[last:]
    return Plan(inner.encode("utf-8"), rejected, len(items))


def splice(answer: bytes, batch: Plan) -> bytes | None:
    """The transcoder's answer for the kept events with the rejections put back in order;
    None when the answer is not the results of the kept events."""
    try:
        text = answer.decode("utf-8")
        start = _ws(text, 0)
        if text[start : start + 1] != "{":
            return None
        members, _ = _members(text, start)
        found = [m for m in members if m[0] == "results"]
        if len(found) != 1 or text[found[0][1] : found[0][1] + 1] != "[":
            return None
        _, first, last = found[0]
        items, _ = _items(text, first)
    except (_NotJson, UnicodeDecodeError):
        return None
    if len(items) != batch.total - len(batch.rejected):
        return None
    served = iter(items)
    out = []
    for n in range(batch.total):
        if n in batch.rejected:
            out.append(batch.rejected[n])
        else:
            _, a, b = next(served)
            out.append(text[a:b])
    return (text[:first] + "[" + ",".join(out) + "]" + text[last:]).encode("utf-8")


def _gateway_error(status: int, code: int, reason: str, message: str) -> Response:
    body = {
        "code": code,
        "message": message,
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "billing.v1",
                "metadata": {"source": "gateway"},
            }
        ],
    }
    return Response(json.dumps(body), status_code=status, media_type="application/json")


class _TooLarge(Exception):
    pass


async def _read(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def routes(settings: Settings) -> list[BaseRoute]:
    """The sidecar's route for the batch (Envoy sends it here unless INNER_HEADER is set)."""
    host = settings.rest_host if settings.rest_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    gateway = f"http://{host}:{settings.rest_port}"
    timeout = httpx.Timeout(settings.http_request_timeout_sec + 5.0)

    async def batch(request: Request) -> Response:
        try:
            body = await _read(request, settings.max_body_bytes)
        except _TooLarge:
            return _gateway_error(
                413, 3, "REQUEST_TOO_LARGE", "the request body is larger than the configured limit"
            )
        # Parsing is CPU work: in a worker thread, so the sidecar's other requests go on.
        cut = await run_in_threadpool(plan, body, settings.usage_max_batch)
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k not in _DROP_REQUEST and not k.startswith(("x-billing-", "x-envoy-"))
        ]
        headers.append((INNER_HEADER, "1"))
        query = request.scope.get("query_string", b"").decode("latin-1")
        path = request.scope.get("raw_path", PATH.encode()).decode("latin-1")
        url = gateway + path + (f"?{query}" if query else "")
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                inner = await client.post(url, content=cut.body if cut else body, headers=headers)
        except httpx.HTTPError:
            return _gateway_error(
                503, 14, "SERVICE_UNAVAILABLE", "the billing service is unavailable; retry"
            )
        out = [(k, v) for k, v in inner.headers.multi_items() if k.lower() not in _DROP_RESPONSE]
        content = inner.content
        kind = inner.headers.get("content-type", "")
        if cut and inner.status_code == 200 and kind.startswith("application/json"):
            spliced: bytes | None = await run_in_threadpool(splice, content, cut)
            content = spliced or content
        response = Response(content, status_code=inner.status_code)
        response.raw_headers = [
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in out),
            (b"content-length", str(len(content)).encode()),
        ]
        return response

    return [Route(PATH, batch, methods=["POST"])]
