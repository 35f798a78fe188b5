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
resolves to then (a name that resolved publicly at creation may not point inward later).
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> tuple[Network, ...]:
    """``KHOA_XKS_PROXY_NETWORKS``: CIDRs separated by commas (ValueError for one that is not)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _resolve(host: str) -> list[Address]:
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


@dataclass(frozen=True)
class EndpointPolicy:
    """The operator's ``networks`` (none: public https endpoints on port 443 only)."""

    networks: tuple[Network, ...] = ()

    def refusal(self, endpoint: str) -> str | None:
        """Why ``endpoint`` may not be called (None: it may)."""
        try:
            parts = urllib.parse.urlsplit(endpoint)
            host, port = parts.hostname or "", parts.port
        except ValueError:
            return "it is not a valid URI"
        addresses = _resolve(host)
        mapped = [
            a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a for a in addresses
        ]
        if all(self._allowed_inside(a) for a in mapped) and mapped:
            if parts.scheme == "http" and not all(a.is_loopback for a in mapped):
                return "http:// is accepted only for a loopback address"
            return None
        for address in mapped:
            if not address.is_global:
                return "it is not a public address (KHOA_XKS_PROXY_NETWORKS names the networks allowed)"
        if parts.scheme != "https":
            return "the protocol must be https://"
        if port not in (None, 443):
            return "KMS communicates on port 443: do not specify another port"
        return None

    def _allowed_inside(self, address: Address) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)
