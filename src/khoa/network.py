"""Where a request comes from, for the aws:SourceIp / aws:VpcSourceIp / aws:SourceVpc condition keys.

Khoa has no VPCs, so it maps them honestly: operators list their private networks (CIDRs, each
optionally named with a VPC id) in ``KHOA_PRIVATE_NETWORKS``; a caller inside one of them carries
``aws:VpcSourceIp`` (and ``aws:SourceVpc`` when named) instead of ``aws:SourceIp``, as a request through
a VPC endpoint does in AWS. ``X-Forwarded-For`` is believed only from the proxies listed in
``KHOA_TRUSTED_PROXIES``; otherwise the TCP peer address is the source.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


class NetworkMap:
    def __init__(self, private_networks: str = "", trusted_proxies: str = "") -> None:
        self.private = parse_private_networks(private_networks)
        self.proxies = parse_trusted_proxies(trusted_proxies)

    def _trusted(self, address: str) -> bool:
        parsed = _address(address)
        return parsed is not None and any(parsed in proxy for proxy in self.proxies)

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """The first address, walking X-Forwarded-For from the right, that is not a trusted proxy."""
        if not forwarded_for or not self._trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop if _address(hop) is not None else peer
        return hops[0] if hops and _address(hops[0]) is not None else peer

    def describe(self, address: str) -> dict[str, str]:
        parsed = _address(address)
        if parsed is None:
            return {}
        for network in self.private:
            if parsed in network.cidr:
                result = {"vpc_source_ip": address}
                if network.vpc_id:
                    result["vpc_id"] = network.vpc_id
                return result
        return {}
