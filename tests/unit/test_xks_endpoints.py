"""Where an XKS proxy may be: public https on 443, or inside the operator's networks."""

from __future__ import annotations

import pytest

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
