"""KMS behaviours pinned to AWS's (issue 14): ListAliases shows the predefined ``alias/aws/...`` aliases.

AWS's API reference for ListAliases: the response "might also include aliases that have no TargetKeyId
field. These are predefined aliases that AWS has created but has not yet associated with a KMS key."
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import caught_code
from tests.support.server import ACCOUNT_ID, KhoaServer, fresh_region

PREDEFINED = {
    "alias/aws/acm",
    "alias/aws/dynamodb",
    "alias/aws/ebs",
    "alias/aws/elasticfilesystem",
    "alias/aws/es",
    "alias/aws/glue",
    "alias/aws/kinesisvideo",
    "alias/aws/lambda",
    "alias/aws/rds",
    "alias/aws/redshift",
    "alias/aws/s3",
    "alias/aws/secretsmanager",
    "alias/aws/ssm",
    "alias/aws/xray",
}


def _pages(kms: Any, **kwargs: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    while True:
        page = kms.list_aliases(**kwargs)
        pages.append(page["Aliases"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            return pages
        kwargs["Marker"] = page["NextMarker"]


def test_list_aliases_includes_predefined_aliases_without_keys(server: KhoaServer) -> None:
    region = fresh_region()
    kms = server.client("kms", region)
    ssm = server.client("ssm", region)

    # A fresh region: every predefined alias is listed, none has a key or dates yet.
    fresh = {a["AliasName"]: a for page in _pages(kms) for a in page}
    assert set(fresh) == PREDEFINED
    for name, alias in fresh.items():
        assert alias == {"AliasName": name, "AliasArn": f"arn:aws:kms:{region}:{ACCOUNT_ID}:{name}"}

    # The account's own aliases sit among them, and a service's first use gives its alias a key.
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    own = [f"alias/{prefix}-{uuid.uuid4().hex[:8]}" for prefix in ("a", "aws0", "b", "z", "Zed")]
    for name in own:
        kms.create_alias(AliasName=name, TargetKeyId=key_id)
    ssm.put_parameter(Name=f"/fidelity/{uuid.uuid4().hex[:8]}", Value="v", Type="SecureString")
    managed = kms.describe_key(KeyId="alias/aws/ssm")["KeyMetadata"]
    assert managed["KeyManager"] == "AWS"

    everything = [a for page in _pages(kms) for a in page]
    names = [a["AliasName"] for a in everything]
    assert len(names) == len(set(names)) == len(PREDEFINED) + len(own)
    assert set(names) == PREDEFINED | set(own)
    by_name = {a["AliasName"]: a for a in everything}
    assert by_name["alias/aws/ssm"]["TargetKeyId"] == managed["KeyId"]
    assert "CreationDate" in by_name["alias/aws/ssm"]
    assert "TargetKeyId" not in by_name["alias/aws/s3"]
    assert all(by_name[name]["TargetKeyId"] == key_id for name in own)

    # Paging with any Limit yields the same sequence, without repeats or gaps.
    for limit in (1, 2, 3, 7, 13, len(names) - 1, len(names), 100):
        pages = _pages(kms, Limit=limit)
        assert all(len(page) <= limit for page in pages)
        assert [a["AliasName"] for page in pages for a in page] == names

    # Khoa runs no S3: DescribeKey on its predefined alias finds no key (AWS would create one; see
    # docs/differences.md), and the alias stays listed without one.
    with pytest.raises(ClientError) as exc:
        kms.describe_key(KeyId="alias/aws/s3")
    assert caught_code(exc) == "NotFoundException"
    assert "TargetKeyId" not in {a["AliasName"]: a for page in _pages(kms) for a in page}["alias/aws/s3"]

    # A KeyId filter lists only that key's aliases: a predefined alias without a key belongs to none.
    assert {a["AliasName"] for page in _pages(kms, KeyId=key_id) for a in page} == set(own)
    assert [a["AliasName"] for page in _pages(kms, KeyId=managed["KeyId"]) for a in page] == ["alias/aws/ssm"]
