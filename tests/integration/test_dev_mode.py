"""``khoa server --dev``: any credentials, the first account's root, region from the scope, resets."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.integration.test_auth import call
from tests.support.server import ACCOUNT_ID, KhoaServer, free_port


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(tmp_path_factory.mktemp("khoa-dev") / "data", dev=True).start()
    yield instance
    instance.stop()


def _client(
    server: KhoaServer, region: str = "us-east-1", key: str = "testing", secret: str = "testing"
) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=server.endpoint,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def _post(server: KhoaServer, path: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{server.endpoint}{path}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_health_reports_dev_mode(dev_server: KhoaServer) -> None:
    with urllib.request.urlopen(f"{dev_server.endpoint}/_khoa/health") as response:
        assert json.loads(response.read())["dev"] is True


@pytest.mark.parametrize(
    ("key", "secret"),
    [("testing", "testing"), ("AKIAIOSFODNN7EXAMPLE", "anything/at/all"), ("ASIAFAKE", "x")],
)
def test_any_credentials_are_accepted(dev_server: KhoaServer, key: str, secret: str) -> None:
    assert (
        _client(dev_server, key=key, secret=secret).list_keys()["ResponseMetadata"]["HTTPStatusCode"] == 200
    )


def test_session_tokens_and_broken_signatures_are_accepted(dev_server: KhoaServer) -> None:
    assert call(dev_server.endpoint, "TrentService.ListKeys", token="testing").status == 200
    assert call(dev_server.endpoint, "TrentService.ListKeys", service="s3").status == 200
    assert call(dev_server.endpoint, "TrentService.ListKeys", sign=False).status == 200


def test_protocol_errors_still_apply(dev_server: KhoaServer) -> None:
    assert call(dev_server.endpoint, "TrentService.Nope").code == "UnknownOperationException"
    assert call(dev_server.endpoint, "TrentService.ListKeys", b"{").code == "SerializationException"
    assert call(dev_server.endpoint, "TrentService.DescribeKey", {}).code == "ValidationException"


def test_every_caller_is_the_first_account(dev_server: KhoaServer) -> None:
    one = _client(dev_server, key="first-caller").create_key()["KeyMetadata"]
    two = _client(dev_server, key="second-caller").create_key()["KeyMetadata"]
    assert one["AWSAccountId"] == two["AWSAccountId"] == ACCOUNT_ID
    assert one["Arn"].startswith(f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/")
    listed = {k["KeyId"] for k in _client(dev_server, key="third-caller").list_keys()["Keys"]}
    assert {one["KeyId"], two["KeyId"]} <= listed


def test_region_comes_from_the_credential_scope(dev_server: KhoaServer) -> None:
    tokyo = _client(dev_server, region="ap-northeast-1")
    key = tokyo.create_key(Description="tokyo")["KeyMetadata"]
    assert key["Arn"].startswith(f"arn:aws:kms:ap-northeast-1:{ACCOUNT_ID}:key/")
    assert key["KeyId"] in {k["KeyId"] for k in tokyo.list_keys()["Keys"]}
    assert key["KeyId"] not in {
        k["KeyId"] for k in _client(dev_server, region="eu-west-1").list_keys()["Keys"]
    }


def test_unsigned_requests_use_the_default_region(dev_server: KhoaServer) -> None:
    reply = call(dev_server.endpoint, "TrentService.CreateKey", {}, sign=False)
    assert reply.json["KeyMetadata"]["Arn"].startswith(f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:")


@pytest.mark.parametrize("path", ["/_khoa/reset", "/moto-api/reset"])
def test_reset_wipes_every_region(dev_server: KhoaServer, path: str) -> None:
    _post(dev_server, "/_khoa/reset")
    regions = ["us-east-1", "eu-central-1"]
    for region in regions:
        client = _client(dev_server, region=region)
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        client.create_alias(AliasName="alias/before-reset", TargetKeyId=key_id)
        client.tag_resource(KeyId=key_id, Tags=[{"TagKey": "t", "TagValue": "v"}])
    assert _post(dev_server, path) == (200, {"status": "ok"})
    for region in regions:
        client = _client(dev_server, region=region)
        assert client.list_keys()["Keys"] == []
        assert [a for a in client.list_aliases()["Aliases"] if a["AliasName"] == "alias/before-reset"] == []
    # the server keeps working, and names can be reused
    client = _client(dev_server)
    key_id = client.create_key()["KeyMetadata"]["KeyId"]
    client.create_alias(AliasName="alias/before-reset", TargetKeyId=key_id)
    assert client.describe_key(KeyId="alias/before-reset")["KeyMetadata"]["KeyId"] == key_id


def test_reset_needs_post(dev_server: KhoaServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(f"{dev_server.endpoint}/_khoa/reset")
    assert excinfo.value.code == 404


def test_reset_is_not_available_without_dev(server: KhoaServer) -> None:
    client = server.client("kms")
    key_id = client.create_key(Description="must survive")["KeyMetadata"]["KeyId"]
    for path in ("/_khoa/reset", "/moto-api/reset"):
        status, _ = _post(server, path)
        assert status == 404
    assert client.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "must survive"


def test_signatures_are_checked_without_dev(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", access_key="testing", secret_key="testing")
    assert reply.code == "UnrecognizedClientException"


# -- binding --------------------------------------------------------------------------------------


def _start(tmp_path: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "khoa",
        "server",
        "--port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "d"),
    ]
    # stdout would carry the root credentials if the server ever got as far as creating them.
    return subprocess.run(
        [*command, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_dev_refuses_a_non_loopback_host(tmp_path: Path, host: str) -> None:
    env = KhoaServer(tmp_path / "d").env()
    result = _start(tmp_path, ["--dev", "--host", host], env)
    assert result.returncode == 2, result.stderr
    assert "loopback" in result.stderr
    assert not (tmp_path / "d" / "khoa.db").exists()


def test_dev_from_the_environment_refuses_a_non_loopback_host(tmp_path: Path) -> None:
    env = {**KhoaServer(tmp_path / "d").env(), "KHOA_DEV": "1"}
    result = _start(tmp_path, ["--host", "0.0.0.0"], env)
    assert result.returncode == 2, result.stderr
    assert "loopback" in result.stderr


def test_dev_prints_a_warning(dev_server: KhoaServer) -> None:
    log = dev_server.log_path.read_text(errors="replace")
    assert "development mode" in log
    assert "NOT checked" in log
