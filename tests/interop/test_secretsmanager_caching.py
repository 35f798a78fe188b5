"""aws-secretsmanager-caching, unmodified, reading secrets through Khoa with a botocore client.

SecretCache calls DescribeSecret to learn which version has the stage it wants, then GetSecretValue
with that VersionId, and refreshes the description after its refresh interval: a value written in
between is seen only after that interval.
"""

from __future__ import annotations

import json
import time
from typing import Any

import botocore.session
import pytest
from aws_secretsmanager_caching import InjectKeywordedSecretString, SecretCache, SecretCacheConfig
from botocore.config import Config

from tests.support.names import secret_name
from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, KhoaServer


@pytest.fixture
def botocore_client(server: KhoaServer) -> Any:
    session = botocore.session.get_session()
    return session.create_client(
        "secretsmanager",
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 1}),
    )


def test_cache_sees_a_new_value_after_the_refresh_interval(server: KhoaServer, botocore_client: Any) -> None:
    sm = server.client("secretsmanager")
    name = secret_name("cached")
    sm.create_secret(Name=name, SecretString="first")
    # the cache refreshes after a random 1-2 seconds (between half the interval and the interval)
    cache = SecretCache(config=SecretCacheConfig(secret_refresh_interval=2), client=botocore_client)
    assert cache.get_secret_string(name) == "first"

    sm.put_secret_value(SecretId=name, SecretString="second")
    assert cache.get_secret_string(name) == "first"  # still cached
    deadline = time.monotonic() + 10
    seen = "first"
    while seen == "first" and time.monotonic() < deadline:
        time.sleep(0.25)
        seen = cache.get_secret_string(name)
    assert seen == "second"
    # earlier versions by stage
    assert cache.get_secret_string(name, "AWSPREVIOUS") == "first"


def test_cache_reads_binary_secrets_and_arns(server: KhoaServer, botocore_client: Any) -> None:
    sm = server.client("secretsmanager")
    name = secret_name("cached")
    arn = sm.create_secret(Name=name, SecretBinary=b"\x00\x01binary")["ARN"]
    cache = SecretCache(config=SecretCacheConfig(), client=botocore_client)
    assert cache.get_secret_binary(name) == b"\x00\x01binary"
    assert cache.get_secret_binary(arn) == b"\x00\x01binary"
    assert cache.get_secret_string(name) is None


def test_cache_refresh_now(server: KhoaServer, botocore_client: Any) -> None:
    sm = server.client("secretsmanager")
    name = secret_name("cached")
    sm.create_secret(Name=name, SecretString="old")
    cache = SecretCache(config=SecretCacheConfig(secret_refresh_interval=3600), client=botocore_client)
    assert cache.get_secret_string(name) == "old"
    sm.update_secret(SecretId=name, SecretString="new")
    assert cache.get_secret_string(name) == "old"
    assert cache.refresh_secret_now(name) is True
    assert cache.get_secret_string(name) == "new"


def test_decorator_injects_json_fields(server: KhoaServer, botocore_client: Any) -> None:
    sm = server.client("secretsmanager")
    name = secret_name("cached")
    sm.create_secret(Name=name, SecretString=json.dumps({"username": "app", "password": "pw"}))
    cache = SecretCache(config=SecretCacheConfig(), client=botocore_client)

    @InjectKeywordedSecretString(secret_id=name, cache=cache, user="username", secret="password")
    def connect(user: str, secret: str) -> tuple[str, str]:
        return user, secret

    assert connect() == ("app", "pw")


def test_cache_surfaces_missing_secrets(botocore_client: Any) -> None:
    cache = SecretCache(config=SecretCacheConfig(), client=botocore_client)
    with pytest.raises(botocore_client.exceptions.ResourceNotFoundException):
        cache.get_secret_string(secret_name("cached"))
