"""Secret tags: TagResource and UntagResource (tags are also set by CreateSecret).

Neither works on a secret scheduled for deletion: AWS answers InvalidRequestException, as it does to
every other change of such a secret (LocalStack's AWS-recorded test_tag_untag_resource_on_deleted_secret).
"""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import errors, names
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import MAX_TAGS


def validate_tags(tags: list[dict[str, str]]) -> None:
    for tag in tags:
        if "Key" not in tag or "Value" not in tag:
            raise errors.invalid_parameter("Each tag must have a Key and a Value.")
        if tag["Key"].lower().startswith("aws:"):
            raise errors.invalid_parameter("Invalid tag key. Tag keys can't start with aws:.")
    seen: dict[str, str] = {}
    for tag in tags:
        # Condition keys are case-insensitive: two tags whose keys differ only in case would be one
        # aws:RequestTag/<key> to a policy, which could then judge the request on the wrong value. (A
        # key given twice is one tag, the last value kept, and one value in the condition key.)
        first = seen.setdefault(tag["Key"].lower(), tag["Key"])
        if first != tag["Key"]:
            raise errors.tag_keys_collide(first, tag["Key"])
    if len({t["Key"] for t in tags}) > MAX_TAGS:
        raise errors.too_many_tags(MAX_TAGS)


def tag_resource(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"])
    validate_tags(params["Tags"])
    sm.store.tag(record.secret_id, params["Tags"], ctx.now.timestamp())
    return {}


def untag_resource(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"])
    sm.store.untag(record.secret_id, params["TagKeys"], ctx.now.timestamp())
    return {}


OPERATIONS = {"TagResource": tag_resource, "UntagResource": untag_resource}
