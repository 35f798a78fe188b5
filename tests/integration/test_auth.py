"""SigV4 authentication against a running server: every refusal has AWS's code, status and message.

Requests are built with botocore's own ``SigV4Auth`` + ``AWSRequest`` (with the signing clock frozen
when a test needs a signature from the past or the future) and sent with urllib, so the server sees
exactly what an SDK would send, or a precisely damaged variant of it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import json
import re
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.support.iam import allow, trust
from tests.support.identity import new_user, session
from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)
AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result

    @property
    def code(self) -> str:
        return str(self.json.get("__type", ""))

    @property
    def message(self) -> str | None:
        return self.json.get("message")

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-amzn-requestid")


def build_request(
    endpoint: str,
    target: str | None,
    body: bytes | dict[str, Any] = b"{}",
    *,
    sign: bool = True,
    service: str = "kms",
    region: str = REGION,
    access_key: str = ACCESS_KEY_ID,
    secret_key: str = SECRET_ACCESS_KEY,
    token: str | None = None,
    at: dt.datetime | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    path: str = "/",
) -> AWSRequest:
    """A request as botocore would sign it; ``at`` freezes the signing clock (naive UTC)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Content-Type": JSON_CONTENT_TYPE}
    if target is not None:
        all_headers["X-Amz-Target"] = target
    all_headers.update(headers or {})
    request = AWSRequest(method=method, url=endpoint + path, data=data, headers=all_headers)
    if sign:
        signer = SigV4Auth(Credentials(access_key, secret_key, token), service, region)
        if at is None:
            signer.add_auth(request)
        else:
            with mock.patch("botocore.auth.get_current_datetime", return_value=at):
                signer.add_auth(request)
    return request


def send(request: AWSRequest, *, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
    """Send a (possibly signed) request; ``body``/``headers`` replace parts after signing."""
    prepared = request.prepare()
    all_headers = dict(prepared.headers.items())
    all_headers.update(headers or {})
    data = prepared.body if body is None else body
    http = urllib.request.Request(prepared.url, data=data, headers=all_headers, method=prepared.method)
    try:
        with urllib.request.urlopen(http, timeout=30) as response:
            return Reply(
                response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
            )
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def call(endpoint: str, target: str | None, body: bytes | dict[str, Any] = b"{}", **kwargs: Any) -> Reply:
    return send(build_request(endpoint, target, body, **kwargs))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def assert_error(reply: Reply, code: str, message: str | None = None, status: int = 400) -> None:
    assert reply.status == status, reply.body
    assert reply.headers.get("content-type") == JSON_CONTENT_TYPE
    assert reply.code == code, reply.body
    if message is not None:
        assert reply.message == message
    assert reply.request_id and uuid.UUID(reply.request_id)


def with_authorization(server: KhoaServer, authorization: str, **kwargs: Any) -> Reply:
    request = build_request(server.endpoint, "TrentService.ListKeys", **kwargs)
    return send(request, headers={"Authorization": authorization})


def signed_authorization(server: KhoaServer) -> tuple[AWSRequest, str]:
    request = build_request(server.endpoint, "TrentService.ListKeys")
    return request, request.headers["Authorization"]


# -- the happy path -------------------------------------------------------------------------------


def test_correctly_signed_request_succeeds(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys")
    assert reply.status == 200
    assert reply.headers["content-type"] == JSON_CONTENT_TYPE
    assert "Keys" in reply.json
    assert reply.request_id and uuid.UUID(reply.request_id)


@pytest.mark.parametrize("minutes", [-4, 4])
def test_clock_skew_under_five_minutes_is_accepted(server: KhoaServer, minutes: int) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", at=utcnow() + dt.timedelta(minutes=minutes))
    assert reply.status == 200, reply.body


def test_date_header_instead_of_x_amz_date(server: KhoaServer) -> None:
    request = build_request(server.endpoint, "TrentService.ListKeys", headers={"Date": "placeholder"})
    assert "X-Amz-Date" not in request.headers
    assert "date" in request.headers["Authorization"]
    assert send(request).status == 200


def test_unsigned_headers_do_not_matter(server: KhoaServer) -> None:
    request = build_request(server.endpoint, "TrentService.ListKeys")
    assert send(request, headers={"User-Agent": "changed/1.0", "X-Unsigned": "yes"}).status == 200


# -- missing and malformed Authorization ----------------------------------------------------------


def test_missing_authorization(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", sign=False)
    assert_error(reply, "MissingAuthenticationTokenException", "Missing Authentication Token")


def test_authentication_comes_before_body_parsing(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.DescribeKey", b"{not json", sign=False)
    assert_error(reply, "MissingAuthenticationTokenException")


@pytest.mark.parametrize("drop", ["Credential", "Signature", "SignedHeaders"])
def test_authorization_missing_a_parameter(server: KhoaServer, drop: str) -> None:
    _, authorization = signed_authorization(server)
    parts = authorization.removeprefix("AWS4-HMAC-SHA256 ").split(", ")
    damaged = "AWS4-HMAC-SHA256 " + ", ".join(p for p in parts if not p.startswith(drop + "="))
    reply = with_authorization(server, damaged)
    assert_error(
        reply,
        "IncompleteSignatureException",
        f"Authorization header requires '{drop}' parameter. Authorization={damaged}",
    )


@pytest.mark.parametrize(
    "name", ["Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256"]
)
def test_a_header_verification_reads_may_appear_only_once(server: KhoaServer, name: str) -> None:
    """Two Authorization (or X-Amz-Date, token, payload hash) headers: which one the signer meant is
    a guess, so the request is refused rather than verified against the first."""
    extra = (
        {"X-Amz-Content-Sha256": hashlib.sha256(b"{}").hexdigest()} if name == "X-Amz-Content-Sha256" else {}
    )
    token = "a-session-token" if name == "X-Amz-Security-Token" else None
    request = build_request(server.endpoint, "TrentService.ListKeys", headers=extra, token=token).prepare()
    headers = list(request.headers.items())
    value = dict(headers).get(name, "anything")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/", skip_accept_encoding=True)
        for key, header_value in headers:
            connection.putheader(key, header_value)
        connection.putheader(name, value)
        connection.endheaders(request.body)
        response = connection.getresponse()
        reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()
    assert_error(
        reply,
        "IncompleteSignatureException",
        f"Only one '{name.lower()}' header is allowed in a signed request.",
    )


def test_authorization_with_nothing_but_the_algorithm(server: KhoaServer) -> None:
    reply = with_authorization(server, "AWS4-HMAC-SHA256 ")
    assert_error(reply, "IncompleteSignatureException")
    assert reply.message is not None
    assert reply.message.startswith(
        "Authorization header requires 'Credential' parameter. "
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires 'SignedHeaders' parameter."
    )


def test_authorization_pair_without_equal_sign(server: KhoaServer) -> None:
    _, authorization = signed_authorization(server)
    damaged = authorization.replace(f"Credential={ACCESS_KEY_ID}/", f"Credential={ACCESS_KEY_ID} /")
    scope = damaged.split(f"{ACCESS_KEY_ID} ", 1)[1].split(",", 1)[0]
    reply = with_authorization(server, damaged)
    assert_error(
        reply,
        "IncompleteSignatureException",
        f"'{scope}' not a valid key=value pair (missing equal-sign) in Authorization header: '{damaged}'.",
    )


@pytest.mark.parametrize("change", ["drop-terminator", "extra-part", "key-only"])
def test_credential_with_wrong_number_of_parts(server: KhoaServer, change: str) -> None:
    _, authorization = signed_authorization(server)
    credential = authorization.split("Credential=", 1)[1].split(",", 1)[0]
    damaged_credential = {
        "drop-terminator": credential.rsplit("/", 1)[0],
        "extra-part": credential + "/extra",
        "key-only": ACCESS_KEY_ID,
    }[change]
    damaged = authorization.replace(credential, damaged_credential)
    reply = with_authorization(server, damaged)
    assert_error(
        reply,
        "IncompleteSignatureException",
        "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, "
        f"got '{damaged_credential}'",
    )


def test_unsupported_algorithm(server: KhoaServer) -> None:
    _, authorization = signed_authorization(server)
    reply = with_authorization(server, authorization.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512", 1))
    assert_error(reply, "IncompleteSignatureException", "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'")


def test_malformed_x_amz_date(server: KhoaServer) -> None:
    request = build_request(server.endpoint, "TrentService.ListKeys")
    reply = send(request, headers={"X-Amz-Date": "yesterday"})
    assert_error(
        reply,
        "IncompleteSignatureException",
        "Date must be in ISO-8601 'basic format'. Got 'yesterday'. See http://en.wikipedia.org/wiki/ISO_8601",
    )


# -- signatures that do not match -----------------------------------------------------------------


def test_wrong_secret(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", secret_key="not-" + SECRET_ACCESS_KEY)
    assert_error(reply, "InvalidSignatureException", SIGNATURE_MISMATCH)


def test_body_changed_after_signing(server: KhoaServer) -> None:
    request = build_request(server.endpoint, "TrentService.ListKeys", {"Limit": 5})
    reply = send(request, body=json.dumps({"Limit": 6}).encode())
    assert_error(reply, "InvalidSignatureException", SIGNATURE_MISMATCH)


def test_signed_header_changed_after_signing(server: KhoaServer) -> None:
    request = build_request(server.endpoint, "TrentService.ListKeys")
    reply = send(request, headers={"X-Amz-Target": "TrentService.ListAliases"})
    assert_error(reply, "InvalidSignatureException", SIGNATURE_MISMATCH)


def test_an_operation_header_added_after_signing_is_refused(server: KhoaServer) -> None:
    """Signed without X-Amz-Target, a request's body could be sent as any operation: DescribeSecret's
    {"SecretId": ...}, captured by a proxy, replayed as GetSecretValue. The target must be signed."""
    sm = server.client("secretsmanager")
    name = f"auth-target-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString="never sent")
    request = build_request(server.endpoint, None, {"SecretId": name}, service="secretsmanager")
    assert "x-amz-target" not in request.headers["Authorization"]
    for target in ("secretsmanager.DescribeSecret", "secretsmanager.GetSecretValue"):
        reply = send(request, headers={"X-Amz-Target": target})
        assert_error(
            reply,
            "InvalidSignatureException",
            "There were headers present in the request which were not signed: x-amz-target",
        )
        assert b"never sent" not in reply.body


def test_signature_digits_changed(server: KhoaServer) -> None:
    _, authorization = signed_authorization(server)
    signature = authorization.rsplit("Signature=", 1)[1]
    flipped = ("1" if signature[0] == "0" else "0") + signature[1:]
    reply = with_authorization(server, authorization.replace(signature, flipped))
    assert_error(reply, "InvalidSignatureException", SIGNATURE_MISMATCH)


# -- time -----------------------------------------------------------------------------------------


def _stamp(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y%m%dT%H%M%SZ")


def test_expired_signature(server: KhoaServer) -> None:
    signed_at = utcnow().replace(microsecond=0) - dt.timedelta(minutes=6)
    reply = call(server.endpoint, "TrentService.ListKeys", at=signed_at)
    assert_error(reply, "InvalidSignatureException")
    match = re.fullmatch(
        r"Signature expired: (\S+) is now earlier than (\S+) \((\S+) - 5 min\.\)", reply.message or ""
    )
    assert match, reply.message
    sent, limit, now = match.groups()
    assert all(AMZ_DATE.fullmatch(value) for value in match.groups())
    assert sent == signed_at.strftime("%Y%m%dT%H%M%SZ")
    assert _stamp(now) - _stamp(limit) == dt.timedelta(minutes=5)
    assert abs(_stamp(now) - utcnow()) < dt.timedelta(seconds=30)


def test_signature_not_yet_current(server: KhoaServer) -> None:
    signed_at = utcnow().replace(microsecond=0) + dt.timedelta(minutes=6)
    reply = call(server.endpoint, "TrentService.ListKeys", at=signed_at)
    assert_error(reply, "InvalidSignatureException")
    match = re.fullmatch(
        r"Signature not yet current: (\S+) is still later than (\S+) \((\S+) \+ 5 min\.\)",
        reply.message or "",
    )
    assert match, reply.message
    sent, limit, now = match.groups()
    assert sent == signed_at.strftime("%Y%m%dT%H%M%SZ")
    assert _stamp(limit) - _stamp(now) == dt.timedelta(minutes=5)
    assert abs(_stamp(now) - utcnow()) < dt.timedelta(seconds=30)


def test_skew_is_checked_before_the_access_key(server: KhoaServer) -> None:
    reply = call(
        server.endpoint,
        "TrentService.ListKeys",
        access_key="AKIAUNKNOWNKEY000000",
        at=utcnow() - dt.timedelta(hours=2),
    )
    assert_error(reply, "InvalidSignatureException")
    assert (reply.message or "").startswith("Signature expired: ")


# -- credential scope -----------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["secretsmanager", "sts", "s3", "KMS"])
def test_credential_scoped_to_the_wrong_service(server: KhoaServer, service: str) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", service=service)
    assert_error(
        reply, "InvalidSignatureException", "Credential should be scoped to correct service: 'kms'. "
    )


@pytest.mark.parametrize("region", ["nowhere", "US-EAST-1", "us-east", "aws-global", "us_east_1"])
def test_credential_scoped_to_an_invalid_region(server: KhoaServer, region: str) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", region=region)
    assert_error(
        reply, "InvalidSignatureException", f"Credential should be scoped to a valid region, not '{region}'. "
    )


def test_credential_scope_date_must_match_the_request_date(server: KhoaServer) -> None:
    request, authorization = signed_authorization(server)
    today = request.headers["X-Amz-Date"][:8]
    yesterday = (_stamp(request.headers["X-Amz-Date"]) - dt.timedelta(days=1)).strftime("%Y%m%d")
    reply = with_authorization(server, authorization.replace(f"/{today}/", f"/{yesterday}/"))
    assert_error(reply, "InvalidSignatureException")
    assert (reply.message or "").startswith(
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
        f"'{yesterday}' != '{today}'"
    )


def test_the_region_comes_from_the_credential_scope(server: KhoaServer) -> None:
    key = call(server.endpoint, "TrentService.CreateKey", {}, region="eu-west-3").json["KeyMetadata"]
    assert key["Arn"].startswith("arn:aws:kms:eu-west-3:")
    in_paris = call(server.endpoint, "TrentService.ListKeys", region="eu-west-3").json["Keys"]
    in_virginia = call(server.endpoint, "TrentService.ListKeys", region="us-east-1").json["Keys"]
    assert key["KeyId"] in {k["KeyId"] for k in in_paris}
    assert key["KeyId"] not in {k["KeyId"] for k in in_virginia}


# -- who is calling -------------------------------------------------------------------------------


def test_unknown_access_key(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", access_key="AKIAUNKNOWNKEY000000")
    assert_error(
        reply, "UnrecognizedClientException", "The security token included in the request is invalid."
    )


def test_session_token_with_a_long_term_key(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", token="not-a-session-token")
    assert_error(
        reply, "UnrecognizedClientException", "The security token included in the request is invalid."
    )


def test_unknown_temporary_access_key(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", access_key="ASIAUNKNOWNKEY000000", token="t")
    assert_error(reply, "UnrecognizedClientException")


# -- through boto3: SDK exception handling sees AWS's codes ---------------------------------------


def _client_error(server: KhoaServer, **kwargs: Any) -> ClientError:
    client = server.client("kms", **kwargs)
    with pytest.raises(ClientError) as excinfo:
        client.list_keys()
    return excinfo.value


def test_boto3_sees_invalid_signature(server: KhoaServer) -> None:
    error = _client_error(server, aws_secret_access_key="wrong-secret")
    assert error.response["Error"]["Code"] == "InvalidSignatureException"
    assert error.response["Error"]["Message"] == SIGNATURE_MISMATCH
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error.response["ResponseMetadata"]["RequestId"]


def test_boto3_sees_unrecognized_client(server: KhoaServer) -> None:
    error = _client_error(server, aws_access_key_id="AKIAUNKNOWNKEY000000")
    assert error.response["Error"]["Code"] == "UnrecognizedClientException"
    assert error.response["Error"]["Message"] == "The security token included in the request is invalid."
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unsigned_boto3_client(server: KhoaServer) -> None:
    from botocore import UNSIGNED

    client = boto3.client(
        "kms",
        endpoint_url=server.endpoint,
        region_name=REGION,
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as excinfo:
        client.list_keys()
    assert excinfo.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


# -- presigned URLs (SigV4 in the query string) ------------------------------------------------------


def _open(url: str, method: str = "GET") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _code(body: str) -> str:
    match = re.search(r"<Code>([^<]*)</Code>", body)
    return match.group(1) if match else body


def test_a_presigned_get_caller_identity_url_answers_for_its_signer(server: KhoaServer) -> None:
    """The query-string form of SigV4 (a presigned STS GetCallerIdentity URL, what EKS tokens and
    Vault-style logins hand to a verifier): signed by botocore, opened with plain HTTP."""
    sts = server.client("sts")
    url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET")
    status, body = _open(url)
    assert status == 200, body
    assert "<Arn>arn:aws:iam::" in body and ":root</Arn>" in body
    # botocore signs the method the operation uses (POST) unless told GET, and the method is signed.
    assert _code(_open(url, "POST")[1]) == "SignatureDoesNotMatch"
    posted = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60)
    assert _open(posted, "POST")[0] == 200


def test_a_presigned_url_is_refused_when_changed_expired_or_incomplete(server: KhoaServer) -> None:
    sts = server.client("sts")
    url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET")
    status, body = _open(url.replace("Version=2011-06-15", "Version=2011-06-16"))
    assert (status, _code(body)) == (403, "SignatureDoesNotMatch")
    assert SIGNATURE_MISMATCH in body
    status, body = _open(url.split("&X-Amz-Signature=")[0])
    assert (status, _code(body)) == (400, "IncompleteSignature")
    assert "X-Amz-Signature" in body
    status, body = _open(url + "&X-Amz-Signature=0000")
    assert (status, _code(body)) == (400, "IncompleteSignature")
    week = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=604801, HttpMethod="GET")
    assert "604800" in _open(week)[1]
    # Only plain digits: Python's int() would also read "6_0".
    status, body = _open(url.replace("X-Amz-Expires=60", "X-Amz-Expires=6_0"))
    assert (status, _code(body)) == (400, "IncompleteSignature")
    assert "X-Amz-Expires should be a number" in body
    # X-Amz-Expires bounds the URL's life (within the five-minute skew window, which bounds it too).
    signed_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=90)
    with mock.patch("botocore.auth.datetime.datetime", wraps=dt.datetime) as clock:
        clock.utcnow.return_value = signed_at.replace(tzinfo=None)
        clock.now.return_value = signed_at
        stale = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET")
    status, body = _open(stale)
    assert (status, _code(body)) == (403, "SignatureDoesNotMatch")
    assert "expired" in body


def test_numbers_in_a_signature_are_never_a_500(server: KhoaServer) -> None:
    """An X-Amz-Expires of more digits than int() reads (4,300) is past a week like any other; a Date
    header whose year, hour or offset no datetime holds is a malformed date (both were 500s)."""
    sts = server.client("sts")
    url = sts.generate_presigned_url("get_caller_identity", Params={}, ExpiresIn=60, HttpMethod="GET")
    status, body = _open(url.replace("X-Amz-Expires=60", "X-Amz-Expires=" + "9" * 4301))
    assert (status, _code(body)) == (400, "IncompleteSignature"), body
    assert "X-Amz-Expires must be less than a week (in seconds) that is 604800" in body
    # Leading zeros do not count: the URL is refused by its signature (the value is not the one signed).
    status, body = _open(url.replace("X-Amz-Expires=60", "X-Amz-Expires=" + "0" * 4400 + "60"))
    assert (status, _code(body)) == (403, "SignatureDoesNotMatch"), body
    for date in ("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 -2359"):
        request = build_request(server.endpoint, "TrentService.ListKeys")
        headers = {k: v for k, v in request.prepare().headers.items() if k.lower() != "x-amz-date"}
        http = urllib.request.Request(
            server.endpoint + "/", data=b"{}", headers={**headers, "Date": date}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(http, timeout=30)
        assert refused.value.code == 400, date
        assert json.loads(refused.value.read())["__type"] == "IncompleteSignatureException", date


def test_a_presigned_url_of_a_session_and_of_iam(server: KhoaServer) -> None:
    """A session's URL carries its token in X-Amz-Security-Token (checked as the header would be, and
    never recorded); an IAM URL reaches IAM by its credential scope and is authorised as usual."""
    iam = server.client("iam")
    user = new_user(server, iam, allow("sts:AssumeRole"))
    status, body = _open(user.client("sts").generate_presigned_url("get_caller_identity", HttpMethod="GET"))
    assert status == 200 and f":user/{user.name}</Arn>" in body
    role = iam.create_role(RoleName=user.name, AssumeRolePolicyDocument=trust({"AWS": user.arn}))["Role"]
    caller = session(user, role["Arn"], name="presigned")
    url = caller.client("sts").generate_presigned_url("get_caller_identity", HttpMethod="GET")
    status, body = _open(url)
    assert status == 200 and f"assumed-role/{user.name}/presigned</Arn>" in body
    # The token is signed: a URL whose token was swapped for another fails.
    assert _open(url.replace("X-Amz-Security-Token=", "X-Amz-Security-Token=x"))[0] in (400, 403)
    trail = server.client("cloudtrail")
    status, body = _open(iam.generate_presigned_url("list_users", HttpMethod="GET"))
    assert status == 200 and f"<UserName>{user.name}</UserName>" in body
    # The user may not list users: its own IAM URL is refused by authorisation, not by the signature.
    status, body = _open(user.client("iam").generate_presigned_url("list_users", HttpMethod="GET"))
    assert (status, _code(body)) == (403, "AccessDenied")
    # A refused presigned URL is recorded under the access key it claims, as a header's would be.
    forged = user.client("sts").generate_presigned_url("get_caller_identity", HttpMethod="GET")
    assert _open(forged.replace("X-Amz-Signature=", "X-Amz-Signature=0"))[0] in (400, 403)

    def records(access_key_id: str) -> list[dict[str, Any]]:
        found = trail.lookup_events(
            LookupAttributes=[{"AttributeKey": "AccessKeyId", "AttributeValue": access_key_id}]
        )["Events"]
        return [json.loads(event["CloudTrailEvent"]) for event in found]

    assert any(
        r["eventName"] == "GetCallerIdentity" and r.get("errorCode") for r in records(user.access_key_id)
    )
    recorded = records(caller.access_key_id)
    assert recorded and all(caller.session_token not in json.dumps(r) for r in recorded)


def test_a_date_header_is_read_in_utc(server: KhoaServer) -> None:
    """The Date header's digits are signed as UTC time: a request signed ten hours ago stays expired
    when its (unsigned) Date header is resent with another UTC offset and the same digits."""
    signed_at = utcnow() - dt.timedelta(hours=10)
    amz_date = signed_at.strftime("%Y%m%dT%H%M%SZ")
    body = b"Action=GetCallerIdentity&Version=2011-06-15"
    host = server.endpoint.split("//", 1)[1]
    scope = f"{amz_date[:8]}/{REGION}/sts/aws4_request"
    canonical = f"POST\n/\n\nhost:{host}\n\nhost\n{hashlib.sha256(body).hexdigest()}"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + SECRET_ACCESS_KEY).encode()
    for part in (amz_date[:8], REGION, "sts", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/{scope}, SignedHeaders=host, Signature={signature}"
    )
    for offset in ("GMT", "-1000"):
        request = urllib.request.Request(
            server.endpoint + "/",
            data=body,
            method="POST",
            headers={
                "Authorization": authorization,
                "Date": signed_at.strftime(f"%a, %d %b %Y %H:%M:%S {offset}"),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403, offset
