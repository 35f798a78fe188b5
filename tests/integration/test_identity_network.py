"""Where a request comes from, as policies see it.

Khoa has no VPCs, so it maps them honestly: a caller inside a configured private network
(``KHOA_PRIVATE_NETWORKS``, CIDRs optionally named with a VPC id) carries ``aws:VpcSourceIp`` and
``aws:SourceVpc`` *instead of* ``aws:SourceIp``, as a request through a VPC endpoint does in AWS.
``X-Forwarded-For`` is believed only from ``KHOA_TRUSTED_PROXIES``. These tests run two servers: one
where loopback is a private network (no proxies), and one behind a "proxy" at 127.0.0.1 that forwards
for clients in 10.0.0.0/8 (private) or anywhere else (public).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.support.errors import code_of, refused
from tests.support.iam import allow, deny, document
from tests.support.identity import Caller, explicit, implicit, new_user, parameter_arn
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

INSIDE = "10.20.30.40"
OUTSIDE = "203.0.113.9"


def _start(tmp_path_factory: pytest.TempPathFactory, label: str, **env: str) -> KhoaServer:
    data: Path = tmp_path_factory.mktemp(label) / "data"
    return KhoaServer(data, extra_env=env).start()


@pytest.fixture(scope="module")
def loopback_vpc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    """Loopback is the private network of vpc-0abc; no trusted proxies."""
    instance = _start(tmp_path_factory, "net-private", KHOA_PRIVATE_NETWORKS="127.0.0.0/8=vpc-0abc")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    """Clients reach the server through a trusted proxy (127.0.0.1); 10.0.0.0/8 is vpc-0abc."""
    instance = _start(
        tmp_path_factory,
        "net-proxied",
        KHOA_PRIVATE_NETWORKS="10.0.0.0/8=vpc-0abc, 172.16.0.0/12",
        KHOA_TRUSTED_PROXIES="127.0.0.1/32",
    )
    yield instance
    instance.stop()


def forwarded_for(client: Any, value: str | None) -> Any:
    """Have the client's requests carry X-Forwarded-For, added after signing as a proxy would."""
    if value is not None:

        def add_header(request: Any, **_: Any) -> None:
            request.headers["X-Forwarded-For"] = value

        client.meta.events.register("before-send.*.*", add_header)
    return client


def via(caller: Caller, service: str, chain: str | None) -> Any:
    return forwarded_for(caller.client(service, fresh=True), chain)


def _parameter(server: KhoaServer, name: str = "") -> str:
    name = name or f"/net/{unique('p')}"
    server.client("ssm").put_parameter(Name=name, Value="value", Type="String", Overwrite=True)
    return name


def _when(operator: str, key: str, value: str | list[str]) -> dict[str, Any]:
    return {"Condition": {operator: {key: value}}}


# -- a private network: VPC keys instead of aws:SourceIp --------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "outcome"),
    [
        (_when("StringEquals", "aws:SourceVpc", "vpc-0abc"), "ok"),
        (_when("IpAddress", "aws:VpcSourceIp", "127.0.0.0/8"), "ok"),
        (_when("IpAddress", "aws:VpcSourceIp", "127.0.0.1/32"), "ok"),
        (_when("StringEquals", "aws:SourceVpc", "vpc-0other"), "AccessDeniedException"),
        (_when("IpAddress", "aws:VpcSourceIp", "10.0.0.0/8"), "AccessDeniedException"),
        # No aws:SourceIp at all from inside a private network, so address conditions on it fail...
        (_when("IpAddress", "aws:SourceIp", "127.0.0.0/8"), "AccessDeniedException"),
        (_when("IpAddress", "aws:SourceIp", "0.0.0.0/0"), "AccessDeniedException"),
        # ... unless written to tolerate its absence.
        (_when("IpAddressIfExists", "aws:SourceIp", "192.0.2.0/24"), "ok"),
        (_when("Null", "aws:SourceIp", "true"), "ok"),
        (_when("Null", "aws:SourceVpc", "false"), "ok"),
    ],
)
def test_requests_from_a_private_network_carry_vpc_keys(
    loopback_vpc: KhoaServer, condition: dict[str, Any], outcome: str
) -> None:
    parameter = _parameter(loopback_vpc)
    user = new_user(loopback_vpc, loopback_vpc.client("iam"), allow("ssm:GetParameter", "*", **condition))
    assert code_of(user.client("ssm").get_parameter, Name=parameter) == outcome


def test_a_deny_outside_corporate_addresses_also_denies_the_private_network(loopback_vpc: KhoaServer) -> None:
    """AWS's well-known pitfall, reproduced faithfully: ``NotIpAddress aws:SourceIp`` is true when the
    key is absent, so the Deny also catches requests from a private network unless it tests the VPC."""
    parameter = _parameter(loopback_vpc)
    iam = loopback_vpc.client("iam")
    naive = new_user(
        loopback_vpc,
        iam,
        allow("ssm:GetParameter"),
        deny("ssm:*", **_when("NotIpAddress", "aws:SourceIp", "198.51.100.0/24")),
    )
    assert refused(naive.client("ssm").get_parameter, Name=parameter) == (
        "AccessDeniedException",
        explicit(naive.arn, "ssm:GetParameter", parameter_arn(parameter)),
    )
    careful = new_user(
        loopback_vpc,
        iam,
        allow("ssm:GetParameter"),
        deny(
            "ssm:*",
            Condition={
                "NotIpAddress": {"aws:SourceIp": "198.51.100.0/24"},
                "StringNotEquals": {"aws:SourceVpc": "vpc-0abc"},
            },
        ),
    )
    careful.client("ssm").get_parameter(Name=parameter)


def test_forwarded_for_is_ignored_without_trusted_proxies(loopback_vpc: KhoaServer) -> None:
    parameter = _parameter(loopback_vpc)
    iam = loopback_vpc.client("iam")
    loopback = new_user(
        loopback_vpc,
        iam,
        allow("ssm:GetParameter", "*", **_when("IpAddress", "aws:VpcSourceIp", "127.0.0.1")),
    )
    claims_public = new_user(
        loopback_vpc, iam, allow("ssm:GetParameter", "*", **_when("IpAddress", "aws:SourceIp", OUTSIDE))
    )
    claims_other = new_user(
        loopback_vpc,
        iam,
        allow("ssm:GetParameter", "*", **_when("IpAddress", "aws:VpcSourceIp", "10.0.0.0/8")),
    )
    for chain in (OUTSIDE, INSIDE, f"{INSIDE}, {OUTSIDE}"):
        via(loopback, "ssm", chain).get_parameter(Name=parameter)
        assert (
            code_of(via(claims_public, "ssm", chain).get_parameter, Name=parameter) == "AccessDeniedException"
        )
        assert (
            code_of(via(claims_other, "ssm", chain).get_parameter, Name=parameter) == "AccessDeniedException"
        )


# -- behind a trusted proxy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "source_ip", "vpc_source_ip", "vpc"),
    [
        (None, "127.0.0.1", None, None),  # the proxy's own request: public, as the peer
        (OUTSIDE, OUTSIDE, None, None),
        (INSIDE, None, INSIDE, "vpc-0abc"),
        ("172.16.5.5", None, "172.16.5.5", None),  # a private network without a VPC id
        # Walk from the right: the first hop the proxy did not add is the client...
        (f"{INSIDE}, {OUTSIDE}", OUTSIDE, None, None),
        (f"{OUTSIDE}, {INSIDE}", None, INSIDE, "vpc-0abc"),
        # ... and anything left of it could have been written by that client.
        (f"{INSIDE}, 127.0.0.1", None, INSIDE, "vpc-0abc"),
        # A hop that is not an address stops the walk at the last good one.
        ("not-an-address", "127.0.0.1", None, None),
    ],
)
def test_forwarded_for_from_a_trusted_proxy(
    proxied: KhoaServer, chain: str | None, source_ip: str | None, vpc_source_ip: str | None, vpc: str | None
) -> None:
    parameter = _parameter(proxied)
    user = new_user(proxied, proxied.client("iam"), allow("ssm:GetParameter"))
    iam = proxied.client("iam")
    for key, value in (
        ("aws:SourceIp", source_ip),
        ("aws:VpcSourceIp", vpc_source_ip),
        ("aws:SourceVpc", vpc),
    ):
        operator = "StringEquals" if key == "aws:SourceVpc" else "IpAddress"
        # Deny unless the key holds exactly the expected value (or is absent, when none is expected).
        if value is None:
            condition = {"Null": {key: "false"}}
        else:
            condition = {f"Not{operator}" if operator == "IpAddress" else "StringNotEquals": {key: value}}
        iam.put_user_policy(
            UserName=user.name,
            PolicyName=f"check-{key.split(':')[1]}",
            PolicyDocument=document(deny("ssm:*", Condition=condition)),
        )
    assert via(user, "ssm", chain).get_parameter(Name=parameter)["Parameter"]["Name"] == parameter


def test_secrets_readable_only_from_the_vpc_and_only_the_current_version(proxied: KhoaServer) -> None:
    """The must-show: GetSecretValue on secret:prod/* only for AWSCURRENT and only from
    aws:VpcSourceIp 10.0.0.0/8 — denied from elsewhere, denied for AWSPREVIOUS, allowed otherwise."""
    sm = proxied.client("secretsmanager")
    prefix = f"prod/{unique('app')}"
    secret = sm.create_secret(Name=f"{prefix}/db", SecretString="v1")["ARN"]
    sm.put_secret_value(SecretId=secret, SecretString="v2")
    staging = sm.create_secret(Name=f"staging/{unique('app')}/db", SecretString="s")["ARN"]
    user = new_user(
        proxied,
        proxied.client("iam"),
        allow(
            "secretsmanager:GetSecretValue",
            f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:prod/*",
            Condition={
                "StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"},
                "IpAddress": {"aws:VpcSourceIp": "10.0.0.0/8"},
            },
        ),
    )
    inside = via(user, "secretsmanager", INSIDE)
    assert inside.get_secret_value(SecretId=secret, VersionStage="AWSCURRENT")["SecretString"] == "v2"
    assert refused(inside.get_secret_value, SecretId=secret, VersionStage="AWSPREVIOUS") == (
        "AccessDeniedException",
        implicit(user.arn, "secretsmanager:GetSecretValue", secret),
    )
    assert (
        code_of(inside.get_secret_value, SecretId=staging, VersionStage="AWSCURRENT")
        == "AccessDeniedException"
    )
    for chain in (OUTSIDE, None, "192.168.1.1", f"{INSIDE}, {OUTSIDE}"):
        assert refused(
            via(user, "secretsmanager", chain).get_secret_value, SecretId=secret, VersionStage="AWSCURRENT"
        ) == (
            "AccessDeniedException",
            implicit(user.arn, "secretsmanager:GetSecretValue", secret),
        ), chain


def test_parameters_readable_only_under_the_production_path_from_the_vpc(proxied: KhoaServer) -> None:
    app = unique("myapp")
    production = [_parameter(proxied, f"/{app}/production/{n}") for n in ("db/url", "api-key")]
    staging = _parameter(proxied, f"/{app}/staging/db/url")
    lookalike = _parameter(proxied, f"/{app}/production-old/db")
    user = new_user(
        proxied,
        proxied.client("iam"),
        allow(
            ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
            [
                f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/{app}/production",
                f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/{app}/production/*",
            ],
            Condition={"IpAddress": {"aws:VpcSourceIp": "10.0.0.0/8"}},
        ),
    )
    inside = via(user, "ssm", INSIDE)
    for name in production:
        assert inside.get_parameter(Name=name)["Parameter"]["Value"] == "value"
    assert len(inside.get_parameters(Names=production)["Parameters"]) == 2
    listed = inside.get_parameters_by_path(Path=f"/{app}/production", Recursive=True)["Parameters"]
    assert sorted(p["Name"] for p in listed) == sorted(production)
    for name in (staging, lookalike):
        assert refused(inside.get_parameter, Name=name) == (
            "AccessDeniedException",
            implicit(user.arn, "ssm:GetParameter", parameter_arn(name)),
        )
    assert code_of(inside.get_parameters, Names=[production[0], staging]) == "AccessDeniedException"
    outside = via(user, "ssm", OUTSIDE)
    assert refused(outside.get_parameter, Name=production[0]) == (
        "AccessDeniedException",
        implicit(user.arn, "ssm:GetParameter", parameter_arn(production[0])),
    )
    assert code_of(via(user, "ssm", None).get_parameter, Name=production[0]) == "AccessDeniedException"


def test_the_trail_records_the_address_policies_saw(proxied: KhoaServer) -> None:
    user = new_user(proxied, proxied.client("iam"))
    seen: dict[str, str] = {}
    for chain, expected in ((INSIDE, INSIDE), (f"{INSIDE}, {OUTSIDE}", OUTSIDE), (None, "127.0.0.1")):
        client = via(user, "kms", chain)
        try:
            client.list_keys()
        except ClientError as exc:
            seen[exc.response["ResponseMetadata"]["RequestId"]] = expected
        else:  # pragma: no cover - the user has no policy
            raise AssertionError("ListKeys was allowed")
    events = proxied.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": user.name}]
    )["Events"]
    records = {r["requestID"]: r for r in (json.loads(e["CloudTrailEvent"]) for e in events)}
    for request_id, expected in seen.items():
        assert records[request_id]["sourceIPAddress"] == expected
        assert records[request_id]["errorCode"] == "AccessDeniedException"


def _subscribe(server: KhoaServer, caller: Caller, secret: str, chain: str | None) -> tuple[int, str]:
    """Open the change stream for ``secret`` as ``caller`` through the proxy for the client ``chain``
    (X-Forwarded-For, added after signing as a proxy would); its status and first line (or error)."""
    url = f"{server.endpoint}/_khoa/events?SecretId={urllib.parse.quote(secret, safe='')}"
    request = AWSRequest(method="GET", url=url, headers={"Accept": "text/event-stream"})
    SigV4Auth(Credentials(caller.access_key_id, caller.secret_access_key), "secretsmanager", REGION).add_auth(
        request
    )
    headers = dict(request.headers.items())
    if chain is not None:
        headers["X-Forwarded-For"] = chain
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, response.readline().decode().strip()
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())["__type"]


def test_the_change_stream_sees_the_address_and_network_the_api_sees(proxied: KhoaServer) -> None:
    """A subscription is authorised as DescribeSecret from the client's address through the trusted
    proxy (it was the proxy's own address, which an internal-range Allow admitted), and its record
    names that address."""
    secret = unique("net/stream")
    proxied.client("secretsmanager").create_secret(Name=secret, SecretString="v")
    public = new_user(
        proxied,
        proxied.client("iam"),
        allow("secretsmanager:DescribeSecret", "*", **_when("IpAddress", "aws:SourceIp", f"{OUTSIDE}/32")),
    )
    assert _subscribe(proxied, public, secret, OUTSIDE) == (200, ": subscribed")
    assert _subscribe(proxied, public, secret, "198.51.100.7") == (400, "AccessDeniedException")
    assert _subscribe(proxied, public, secret, None) == (400, "AccessDeniedException")  # the proxy itself
    private = new_user(
        proxied,
        proxied.client("iam"),
        allow("secretsmanager:DescribeSecret", "*", **_when("StringEquals", "aws:SourceVpc", "vpc-0abc")),
    )
    assert _subscribe(proxied, private, secret, INSIDE) == (200, ": subscribed")
    assert _subscribe(proxied, private, secret, OUTSIDE) == (400, "AccessDeniedException")
    events = proxied.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": public.name}]
    )["Events"]
    addresses = sorted(json.loads(e["CloudTrailEvent"])["sourceIPAddress"] for e in events)
    assert addresses == sorted([OUTSIDE, "198.51.100.7", "127.0.0.1"])
