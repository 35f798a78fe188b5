"""Where a request comes from, for the aws:SourceIp / aws:VpcSourceIp / aws:SourceVpc condition keys.

Khoa has no VPCs, so it maps them honestly: operators list their private networks (CIDRs, each
optionally named with a VPC id) in ``KHOA_PRIVATE_NETWORKS``; a caller inside one of them carries
``aws:VpcSourceIp`` (and ``aws:SourceVpc`` when named) instead of ``aws:SourceIp``, as a request through
a VPC endpoint does in AWS. ``X-Forwarded-For`` is believed only from the proxies listed in
``KHOA_TRUSTED_PROXIES``; otherwise the TCP peer address is the source.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_BRACKETED = re.compile(r"^\[([^\]]+)\](?::\d+)?$")  # [2001:db8::1]:443
_V4_PORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):\d+$")  # 203.0.113.7:51234


@dataclass(frozen=True)
class PrivateNetwork:
    cidr: Network
    vpc_id: str


def parse_private_networks(text: str) -> list[PrivateNetwork]:
    """``10.0.0.0/8=vpc-0abc,192.168.0.0/16`` → networks, each with an optional VPC id."""
    networks = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        cidr, _, vpc_id = item.partition("=")
        networks.append(PrivateNetwork(ipaddress.ip_network(cidr.strip(), strict=False), vpc_id.strip()))
    return networks


def parse_trusted_proxies(text: str) -> list[Network]:
    return [ipaddress.ip_network(p.strip(), strict=False) for p in text.split(",") if p.strip()]


@functools.lru_cache(maxsize=4096)
def _address(value: str) -> Address | None:
    """An address as a peer or proxy reports it: ports and brackets dropped, IPv4-mapped IPv6
    (``::ffff:10.0.0.1``, as dual-stack sockets report IPv4 peers) as the IPv4 address. Parsed once
    per distinct text (every request names its peer: parsing was ~4% of a fast call's CPU)."""
    value = value.strip()
    bracketed = _BRACKETED.match(value) or _V4_PORT.match(value)
    if bracketed:
        value = bracketed.group(1)
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def canonical(value: str) -> str:
    """The address in its canonical text form, or the value unchanged when it is not an address."""
    address = _address(value)
    return str(address) if address is not None else value


class NetworkMap:
    def __init__(self, private_networks: str = "", trusted_proxies: str = "") -> None:
        self.private = parse_private_networks(private_networks)
        self.proxies = parse_trusted_proxies(trusted_proxies)

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is one of KHOA_TRUSTED_PROXIES (whose forwarding headers are believed)."""
        parsed = _address(address)
        return parsed is not None and any(parsed in proxy for proxy in self.proxies)

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The first address, walking X-Forwarded-For from the right, that is not a trusted proxy.

        X-Forwarded-For is believed only when the TCP peer is a trusted proxy, and then only as far as
        the chain of trusted proxies goes: anything left of the first untrusted hop could have been
        written by the client. A hop that is not an address stops the walk at the last good one.
        """
        if not forwarded_for or not self.trusts(peer):
            return canonical(peer)
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        believed = peer
        for hop in reversed(hops):
            if _address(hop) is None:
                break
            believed = hop
            if not self.trusts(hop):
                break
        return canonical(believed)

    def describe(self, address: str) -> dict[str, str]:
        parsed = _address(address)
        if parsed is None:
            return {}
        for network in self.private:
            if parsed in network.cidr:
                result = {"vpc_source_ip": str(parsed)}
                if network.vpc_id:
                    result["vpc_id"] = network.vpc_id
                return result
        return {}
