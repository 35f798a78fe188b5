"""Where an external key store's XKS proxy may be: never where a tenant could not reach on its own.

An XKS proxy endpoint is a tenant's choice (CreateCustomKeyStore, UpdateCustomKeyStore), and Khoa
connects to it from inside the operator's network. AWS requires a public ``https://`` endpoint on port
443 ("Do not specify the port"). Khoa requires the same unless the operator names the non-public
networks a proxy may be in (``KHOA_XKS_PROXY_NETWORKS``: an on-premises HSM's proxy at 10.1.2.3, a
sidecar on 127.0.0.1): without that, a tenant could make the node POST to its loopback services, its
private network or the cloud's metadata address, and learn from the answers which ports are open.

The rule, on every address the endpoint's host resolves to:
- a public (globally routable) address: ``https://`` on port 443 only;
- an address in the operator's networks: any port; ``http://`` only for a loopback address;
- anything else (loopback, private, link-local, reserved...): refused.

It is checked when an endpoint is given, and again before every call, on the addresses the host
resolves to then (a name that resolved publicly at creation may not point inward later). A call then
connects to the address that was checked (:meth:`EndpointPolicy.admit`), never to what a second
lookup answers: a tenant's name server could otherwise answer a public address to the check and
127.0.0.1 to the connection. The lookup has a deadline of its own and runs on a thread (a tenant's slow
name server must hold neither the caller past its deadline nor, through it, anyone else); lookups still
waiting on their name servers are capped, beyond which a call is refused at once.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# How long the check of an endpoint given to CreateCustomKeyStore / UpdateCustomKeyStore may wait for
# its name to resolve (a call's own lookup shares the call's deadline instead).
LOOKUP_SECONDS = 5.0


def parse_networks(text: str) -> tuple[Network, ...]:
    """``KHOA_XKS_PROXY_NETWORKS``: CIDRs separated by commas (ValueError for one that is not)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _lookup(host: str) -> list[Address]:
    """The addresses ``host`` resolves to (a literal address as itself; none when it does not resolve:
    the call then fails as unreachable, which says nothing of the node's network)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    found: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


class Refused(Exception):
    """An endpoint that may not be called now; ``reason`` is safe to show its owner."""

    def __init__(self, reason: str, *, timed_out: bool = False, unresolved: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out
        self.unresolved = unresolved


class Resolver:
    """Name lookups with a deadline: each on a daemon thread, at most ``pending`` at once (a lookup
    outlives its deadline until the system resolver gives up; more would pile up threads)."""

    def __init__(self, pending: int = 8) -> None:
        self._slots = threading.BoundedSemaphore(pending)

    def resolve(self, host: str, timeout: float) -> list[Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if not self._slots.acquire(blocking=False):
            raise Refused("too many name lookups are waiting", timed_out=True)
        answer: list[list[Address]] = []

        def run() -> None:
            try:
                answer.append(_lookup(host))
            finally:
                self._slots.release()

        thread = threading.Thread(target=run, name="khoa-xks-lookup", daemon=True)
        thread.start()
        thread.join(max(timeout, 0.0))
        if not answer:
            raise Refused("the name did not resolve in time", timed_out=True)
        return answer[0]


@dataclass(frozen=True)
class EndpointPolicy:
    """The operator's ``networks`` (none: public https endpoints on port 443 only)."""

    networks: tuple[Network, ...] = ()
    resolver: Resolver = field(default_factory=Resolver, compare=False)

    def refusal(self, endpoint: str, timeout: float = LOOKUP_SECONDS) -> str | None:
        """Why ``endpoint`` may not be given (None: it may). A name that does not resolve (yet) may:
        its calls fail as unreachable until it does, and every call checks it again."""
        try:
            self.admit(endpoint, timeout)
        except Refused as refused:
            return None if refused.unresolved or refused.timed_out else refused.reason
        return None

    def admit(self, endpoint: str, timeout: float) -> Address:
        """The address to connect to for ``endpoint``: one its host resolves to within ``timeout``
        seconds, every one of which the rule allows (else :class:`Refused`)."""
        try:
            parts = urllib.parse.urlsplit(endpoint)
            host, port = parts.hostname or "", parts.port
        except ValueError:
            raise Refused("it is not a valid URI") from None
        addresses = self.resolver.resolve(host, timeout)
        mapped = [
            a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a for a in addresses
        ]
        if mapped and all(self._allowed_inside(a) for a in mapped):
            if parts.scheme == "http" and not all(a.is_loopback for a in mapped):
                raise Refused("http:// is accepted only for a loopback address")
            return mapped[0]
        for address in mapped:
            if not address.is_global:
                raise Refused(
                    "it is not a public address (KHOA_XKS_PROXY_NETWORKS names the networks allowed)"
                )
        if parts.scheme != "https":
            raise Refused("the protocol must be https://")
        if port not in (None, 443):
            raise Refused("KMS communicates on port 443: do not specify another port")
        if not mapped:
            raise Refused("the name does not resolve", unresolved=True)
        return mapped[0]

    def _allowed_inside(self, address: Address) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)
