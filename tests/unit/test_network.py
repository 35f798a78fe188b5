"""Where a request comes from: trusted proxies, X-Forwarded-For, and private networks standing in for
VPCs (aws:SourceIp versus aws:VpcSourceIp / aws:SourceVpc)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from khoa.access.authorize import base_context
from khoa.auth.principal import Principal
from khoa.network import NetworkMap, canonical, parse_private_networks, parse_trusted_proxies

# --- configuration --------------------------------------------------------------------------------


def test_parse_private_networks() -> None:
    networks = parse_private_networks(" 10.0.0.0/8=vpc-0abc , 192.168.1.7/16,fd00::/8=vpc-v6,")
    assert [(str(n.cidr), n.vpc_id) for n in networks] == [
        ("10.0.0.0/8", "vpc-0abc"),
        ("192.168.0.0/16", ""),  # host bits are dropped
        ("fd00::/8", "vpc-v6"),
    ]


def test_parse_empty_configuration() -> None:
    assert parse_private_networks("") == []
    assert parse_trusted_proxies("") == []
    assert parse_trusted_proxies(" , ") == []


@pytest.mark.parametrize("text", ["10.0.0.0/33", "not-a-network", "10.0.0.0/8=vpc,300.0.0.0/8"])
def test_bad_private_networks_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_private_networks(text)


def test_parse_trusted_proxies() -> None:
    assert parse_trusted_proxies("127.0.0.1, 10.1.0.0/16,::1") == [
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("::1/128"),
    ]


# --- private networks ------------------------------------------------------------------------------

NETWORK = NetworkMap("10.0.0.0/8=vpc-0abc,192.168.0.0/16,fd00::/8=vpc-v6", "127.0.0.1,172.16.0.0/12")


@pytest.mark.parametrize(
    ("address", "described"),
    [
        ("10.2.3.4", {"vpc_source_ip": "10.2.3.4", "vpc_id": "vpc-0abc"}),
        ("192.168.9.9", {"vpc_source_ip": "192.168.9.9"}),
        ("fd12::1", {"vpc_source_ip": "fd12::1", "vpc_id": "vpc-v6"}),
        ("::ffff:10.2.3.4", {"vpc_source_ip": "10.2.3.4", "vpc_id": "vpc-0abc"}),
        ("FD12::0001", {"vpc_source_ip": "fd12::1", "vpc_id": "vpc-v6"}),
        ("203.0.113.9", {}),
        ("11.0.0.1", {}),
        ("2001:db8::1", {}),
        ("not-an-ip", {}),
        ("", {}),
    ],
)
def test_describe(address: str, described: dict[str, str]) -> None:
    assert NETWORK.describe(address) == described


def test_first_listed_network_wins() -> None:
    overlapping = NetworkMap("10.1.0.0/16=vpc-inner,10.0.0.0/8=vpc-outer")
    assert overlapping.describe("10.1.2.3")["vpc_id"] == "vpc-inner"
    assert overlapping.describe("10.2.2.3")["vpc_id"] == "vpc-outer"


def test_no_private_networks_means_every_caller_is_public() -> None:
    assert NetworkMap().describe("10.0.0.1") == {}


# --- X-Forwarded-For -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", "", "203.0.113.9"),
        # A caller that is not a trusted proxy cannot choose its address by sending the header.
        ("203.0.113.9", "10.0.0.5", "203.0.113.9"),
        ("10.0.0.7", "10.0.0.5", "10.0.0.7"),
        # Through a trusted proxy, the address the proxy saw is believed.
        ("127.0.0.1", "198.51.100.4", "198.51.100.4"),
        ("172.20.0.2", "198.51.100.4", "198.51.100.4"),
        # The rightmost hop a trusted proxy did not add; anything further left is the client's say-so.
        ("127.0.0.1", "10.0.0.5, 198.51.100.4", "198.51.100.4"),
        ("127.0.0.1", "10.0.0.5,198.51.100.4,172.16.0.9", "198.51.100.4"),
        # Every hop a trusted proxy: the leftmost is the client.
        ("127.0.0.1", "172.16.0.8, 172.16.0.9", "172.16.0.8"),
        # A hop that is not an address ends the chain at the last good one.
        ("127.0.0.1", "garbage", "127.0.0.1"),
        ("127.0.0.1", "198.51.100.4, unknown", "127.0.0.1"),
        ("127.0.0.1", "unknown, 172.16.0.9", "172.16.0.9"),
        # Ports and brackets as some proxies write them.
        ("127.0.0.1", "198.51.100.4:51234", "198.51.100.4"),
        ("127.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
        ("127.0.0.1", "2001:db8::7", "2001:db8::7"),
        # Dual-stack sockets report IPv4 peers as IPv4-mapped IPv6 addresses.
        ("::ffff:127.0.0.1", "198.51.100.4", "198.51.100.4"),
        ("::ffff:203.0.113.9", "10.0.0.5", "203.0.113.9"),
    ],
)
def test_client_address(peer: str, forwarded_for: str | None, client: str) -> None:
    assert NETWORK.client_address(peer, forwarded_for) == client


def test_without_trusted_proxies_the_header_is_never_believed() -> None:
    assert NetworkMap("10.0.0.0/8").client_address("127.0.0.1", "10.0.0.5") == "127.0.0.1"


def test_a_spoofed_header_cannot_reach_a_private_network() -> None:
    client = NETWORK.client_address("203.0.113.9", "10.0.0.5")
    assert NETWORK.describe(client) == {}


def test_a_private_client_behind_a_trusted_proxy() -> None:
    client = NETWORK.client_address("127.0.0.1", "10.4.4.4")
    assert NETWORK.describe(client) == {"vpc_source_ip": "10.4.4.4", "vpc_id": "vpc-0abc"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("::ffff:10.0.0.1", "10.0.0.1"), ("2001:DB8::1", "2001:db8::1"), ("10.0.0.1", "10.0.0.1"), ("x", "x")],
)
def test_canonical(value: str, expected: str) -> None:
    assert canonical(value) == expected


# --- the condition keys a request carries ----------------------------------------------------------


def _ctx(source_ip: str, network: dict[str, str] | None, **extras: Any) -> Any:
    principal = Principal(
        "111122223333", "arn:aws:iam::111122223333:user/alice", "AIDAALICE", "IAMUser", name="alice"
    )
    if network:
        extras["network"] = network
    return SimpleNamespace(
        principal=principal,
        now=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        region="us-east-1",
        source_ip=source_ip,
        extras=extras,
    )


def test_public_caller_carries_aws_source_ip() -> None:
    context = base_context(_ctx("203.0.113.9", NETWORK.describe("203.0.113.9")))
    assert context["aws:sourceip"] == ["203.0.113.9"]
    assert "aws:vpcsourceip" not in context and "aws:sourcevpc" not in context


def test_private_caller_carries_vpc_keys_instead_of_source_ip() -> None:
    context = base_context(_ctx("10.2.3.4", NETWORK.describe("10.2.3.4")))
    assert context["aws:vpcsourceip"] == ["10.2.3.4"]
    assert context["aws:sourcevpc"] == ["vpc-0abc"]
    assert "aws:sourceip" not in context


def test_private_network_without_a_vpc_id() -> None:
    context = base_context(_ctx("192.168.1.1", NETWORK.describe("192.168.1.1")))
    assert context["aws:vpcsourceip"] == ["192.168.1.1"]
    assert "aws:sourcevpc" not in context and "aws:sourceip" not in context


def test_global_keys() -> None:
    context = base_context(_ctx("203.0.113.9", None, secure_transport=True))
    assert context["aws:principaltype"] == ["User"]
    assert context["aws:username"] == ["alice"]
    assert context["aws:userid"] == ["AIDAALICE"]
    assert context["aws:principalarn"] == ["arn:aws:iam::111122223333:user/alice"]
    assert context["aws:principalaccount"] == ["111122223333"]
    assert context["aws:securetransport"] == ["true"]
    assert context["aws:currenttime"] == ["2024-05-01T12:00:00Z"]
    assert context["aws:epochtime"] == ["1714564800"]
    assert context["aws:requestedregion"] == ["us-east-1"]
    assert context["aws:viaawsservice"] == ["false"]


def test_root_and_role_principal_types() -> None:
    ctx = _ctx("203.0.113.9", None)
    ctx.principal = Principal.account_root("111122223333")
    assert base_context(ctx)["aws:principaltype"] == ["Account"]
    assert "aws:username" not in base_context(ctx)
    ctx.principal = Principal(
        "111122223333",
        "arn:aws:sts::111122223333:assumed-role/Deploy/ci",
        "AROADEPLOY:ci",
        "AssumedRole",
        name="Deploy",
    )
    context = base_context(ctx)
    assert context["aws:principaltype"] == ["AssumedRole"]
    assert context["aws:principalarn"] == ["arn:aws:iam::111122223333:role/Deploy"]
    assert "aws:username" not in context


def test_via_service_keys() -> None:
    context = base_context(
        _ctx("10.2.3.4", None, **{"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"})
    )
    assert context["kms:viaservice"] == ["secretsmanager.us-east-1.amazonaws.com"]
    assert context["aws:viaawsservice"] == ["true"]
