"""Where an XKS proxy may be: public https on 443, or inside the operator's networks."""

from __future__ import annotations

import ipaddress
import threading

import pytest

from khoa.services.kms import xks_endpoints
from khoa.services.kms.xks_endpoints import EndpointPolicy, parse_networks

PUBLIC = "https://93.184.216.34"  # a literal public address: no DNS in the test


@pytest.mark.parametrize(
    "endpoint",
    [
        PUBLIC,
        f"{PUBLIC}:443",
        "https://[2606:2800:220:1:248:1893:25c8:1946]",
    ],
)
def test_public_https_on_443_is_accepted_without_networks(endpoint: str) -> None:
    assert EndpointPolicy().refusal(endpoint) is None


@pytest.mark.parametrize(
    "endpoint",
    [
        f"{PUBLIC}:8443",  # another port
        "http://93.184.216.34",  # not https
        "https://127.0.0.1",
        "http://127.0.0.1:9440",
        "https://localhost",
        "https://[::1]",
        "https://[::ffff:127.0.0.1]",  # loopback written as IPv6
        "https://169.254.169.254",
        "https://10.1.2.3",
        "https://172.16.0.1",
        "https://192.168.1.1",
        "https://100.64.0.1",  # shared address space
        "https://0.0.0.0",
    ],
)
def test_anything_else_is_refused_without_networks(endpoint: str) -> None:
    assert EndpointPolicy().refusal(endpoint) is not None


def test_the_operators_networks_allow_any_port_and_http_only_on_loopback() -> None:
    policy = EndpointPolicy(parse_networks("10.1.0.0/16, 127.0.0.0/8"))
    assert policy.refusal("https://10.1.2.3:8443") is None
    assert policy.refusal("http://127.0.0.1:9441") is None
    assert policy.refusal("http://10.1.2.3") is not None  # http only for loopback
    assert policy.refusal("https://10.2.0.1") is not None  # outside the networks
    assert policy.refusal("https://169.254.169.254") is not None
    assert policy.refusal(f"{PUBLIC}:8443") is not None  # public addresses keep AWS's rule


def test_networks_must_be_cidrs() -> None:
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/8,not-a-network")


def test_a_name_that_does_not_resolve_in_time_is_refused_as_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tenant's name server that never answers holds a call no longer than its deadline, and only a
    few lookups may wait on such servers at once."""
    release = threading.Event()

    def slow(host: str) -> list[object]:
        release.wait(10)
        return []

    monkeypatch.setattr(xks_endpoints, "_lookup", slow)
    policy = EndpointPolicy(resolver=xks_endpoints.Resolver(pending=2))
    try:
        for _ in range(2):
            with pytest.raises(xks_endpoints.Refused) as refused:
                policy.admit("https://xks.example.com", timeout=0.05)
            assert refused.value.timed_out
        with pytest.raises(xks_endpoints.Refused, match="too many name lookups"):
            policy.admit("https://xks.example.com", timeout=5)
    finally:
        release.set()


def test_admit_names_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xks_endpoints, "_lookup", lambda host: [ipaddress.ip_address("93.184.216.34")])
    assert str(EndpointPolicy().admit("https://xks.example.com", timeout=1)) == "93.184.216.34"
    monkeypatch.setattr(
        xks_endpoints,
        "_lookup",
        lambda host: [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("127.0.0.1")],
    )
    assert EndpointPolicy().refusal("https://xks.example.com") is not None  # one address inward: refused
