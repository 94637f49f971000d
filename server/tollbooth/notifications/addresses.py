"""Where an endpoint's host leads: its addresses, looked up within a bound, and whether the
opt-in guard (BILLING_NOTIFY_DENY_PRIVATE) refuses them.

The guard is for deployments where whoever creates endpoints must not make the delivery
process POST into the network it runs in (a cloud's metadata service at 169.254.169.254, a
database's admin port on 10.x): every address a host resolves to must be global. It is
checked twice: when an endpoint is created or its URL changed (`refuse_private`: a clear 400
for the caller), and on every connection the delivery process opens (`transport`), because
a name may resolve elsewhere by then (DNS rebinding). The connection is made to the very
address that was checked, never to the name again.

The lookup runs in a daemon thread of its own, waited for at most the delivery timeout: the
system resolver (`getaddrinfo`) takes no timeout, and one that hangs must not hold a sender
(or an RPC) past it. A lookup still hanging then is abandoned; at most `MAX_LOOKUPS` run at
once in a process, so a resolver that never answers cannot pile up threads either.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from urllib.parse import urlsplit

from tollbooth import errors

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_LOOKUPS = 32
_lookups = threading.BoundedSemaphore(MAX_LOOKUPS)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class LookupFailed(OSError):
    """The host did not resolve: no such name, a resolver error, or no answer in time.
    `temporary`: the resolver did not answer (in time, or with a temporary failure), so the
    same name may resolve when asked again."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class AddressDenied(OSError):
    """The host is, or resolves to, an address the guard refuses."""


def denied(address: IPAddress) -> bool:
    """Not a global unicast address: loopback, private, link-local, shared (100.64/10),
    unspecified, reserved, documentation, multicast; an IPv6 address that carries an IPv4
    one (mapped, 6to4, NAT64) by the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is None and address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None:
            return denied(inner)
    return address.is_multicast or not address.is_global


def literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve(host: str, port: int, timeout: float) -> list[tuple[IPAddress, int]]:
    """The host's TCP addresses (an IP literal: itself), in the resolver's order, looked up
    within `timeout` seconds. Raises LookupFailed."""
    address = literal(host)
    if address is not None:
        return [(address, port)]
    if not _lookups.acquire(timeout=max(timeout, 0)):
        raise LookupFailed(f"resolving {host}: too many lookups hang already", temporary=True)
    answer: list[tuple[IPAddress, int]] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            for _family, _type, _proto, _name, sockaddr in infos:
                ip = literal(str(sockaddr[0]))  # an IPv6 scope (%eth0) kept
                if ip is not None and (ip, port) not in answer:
                    answer.append((ip, port))
        except (OSError, UnicodeError) as exc:
            failure.append(exc)
        finally:
            _lookups.release()
            done.set()

    threading.Thread(target=lookup, name="notify-resolve", daemon=True).start()
    if not done.wait(max(timeout, 0)):
        raise LookupFailed(f"resolving {host}: no answer within {timeout:g} s", temporary=True)
    if failure:
        again = isinstance(failure[0], socket.gaierror) and failure[0].errno == socket.EAI_AGAIN
        raise LookupFailed(f"resolving {host}: {failure[0]}", temporary=again)
    if not answer:
        raise LookupFailed(f"resolving {host}: no address")
    return answer


def check(host: str, addresses: list[tuple[IPAddress, int]]) -> None:
    """Raise AddressDenied when any of the host's addresses is denied (one private address
    among public ones is enough to reach the private network)."""
    bad = [str(a) for a, _ in addresses if denied(a)]
    if bad:
        raise AddressDenied(f"address denied: {host} is or resolves to {bad[0]} (not global)")


def refuse_private(url: str, timeout: float) -> None:
    """For CreateNotificationEndpoint and UpdateNotificationEndpoint with the guard on, before
    any transaction opens (a lookup is a network call): URL_ADDRESS_DENIED when the url's
    host leads to a denied address, URL_HOST_UNRESOLVED when it does not resolve, 503
    SERVICE_UNAVAILABLE when the resolver does not answer in time (or answers "try again").
    A url that does not parse is left to `endpoints.clean_url`, which refuses it."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return
    if not host:
        return
    default = 443 if parts.scheme.lower() == "https" else 80
    try:
        addresses = resolve(host, port or default, timeout)
    except LookupFailed as exc:
        if exc.temporary:  # the resolver is down or slow, not the name wrong: retry
            raise errors.DomainError(
                errors.Kind.UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
                f"url's host {errors.shown(host)} could not be looked up now (the resolver did"
                " not answer in time), so its addresses cannot be checked"
                " (BILLING_NOTIFY_DENY_PRIVATE is on); retry",
            ) from exc
        raise errors.invalid(
            f"url's host {errors.shown(host)} did not resolve, so its addresses cannot be "
            "checked (BILLING_NOTIFY_DENY_PRIVATE is on)",
            reason="URL_HOST_UNRESOLVED",
            field="url",
        ) from exc
    try:
        check(host, addresses)
    except AddressDenied as exc:
        raise errors.invalid(
            f"url's host {errors.shown(host)} is or resolves to a loopback, private, "
            "link-local or reserved address, which BILLING_NOTIFY_DENY_PRIVATE refuses",
            reason="URL_ADDRESS_DENIED",
            field="url",
        ) from exc
