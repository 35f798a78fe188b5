"""PutParameter, GetParameter(s), DeleteParameter(s) and GetParameterHistory."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms.internal import InternalKms
from khoa.services.ssm import errors, names, patterns, policies, public, references, values
from khoa.services.ssm.backend import ParametersBackend
from khoa.services.ssm.store import MAX_TAGS, NewVersion, ParameterRow, ParameterStore, VersionRow

STANDARD_MAX = 4096
ADVANCED_MAX = 8192
_DATA_TYPES = ("text", "aws:ec2:image", "aws:ssm:integration")
_AMI = re.compile(r"ami-[0-9a-f]{8}([0-9a-f]{9})?")


def _choose_tier(requested: str | None, existing: ParameterRow | None, value: str, has_policies: bool) -> str:
    tier = requested or (existing.tier if existing else "Standard")
    if tier == "Intelligent-Tiering":
        needs_advanced = (
            len(value) > STANDARD_MAX
            or has_policies
            or (existing is not None and existing.tier == "Advanced")
        )
        tier = "Advanced" if needs_advanced else "Standard"
    if existing is not None and existing.tier == "Advanced" and tier == "Standard":
        raise errors.validation(
            "This parameter uses the advanced-parameter tier. You can't downgrade a parameter "
            "from the advanced-parameter tier to the standard-parameter tier. If necessary, "
            "you can delete the advanced parameter and recreate it as a standard parameter."
        )
    limit = ADVANCED_MAX if tier == "Advanced" else STANDARD_MAX
    if len(value) > limit:
        if tier == "Standard":
            raise errors.validation(
                "Standard tier parameters support a maximum parameter value of 4096 "
                "characters. To create a larger parameter value, upgrade the parameter to "
                "use the advanced-parameter tier. For more information, see "
                "https://docs.aws.amazon.com/systems-manager/latest/userguide/"
                "parameter-store-advanced-parameters.html"
            )
        raise errors.validation(
            "Advanced tier parameters support a maximum parameter value of 8192 characters."
        )
    if has_policies and tier != "Advanced":
        raise errors.code(
            "IncompatiblePolicyException",
            "Parameter policies are supported only by advanced-tier parameters.",
        )
    return tier


def _check_value(
    params: dict[str, Any], param_type: str, value: str, previous: VersionRow | None = None
) -> None:
    pattern = params.get("AllowedPattern", previous.allowed_pattern if previous else None)
    if pattern:
        patterns.check_value(pattern, value)
    data_type = params.get("DataType", previous.data_type if previous else "text")
    if data_type not in _DATA_TYPES:
        raise errors.validation(
            f"The following data type is not supported: {data_type} (Data type names are all lowercase.)"
        )
    if data_type == "aws:ec2:image" and param_type != "String":
        raise errors.validation(
            "The data type aws:ec2:image is supported only for the String parameter type."
        )
    if params.get("KeyId") and param_type != "SecureString":
        raise errors.validation("KeyId is required for SecureString type parameter only.")


def _check_tags(tags: list[dict[str, str]]) -> None:
    from khoa.services.ssm.tags import check_keys

    check_keys(tags)
    if len({t["Key"] for t in tags}) > MAX_TAGS:
        raise errors.too_many_tags(MAX_TAGS)


def put_parameter(ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = names.clean(params["Name"])
    if name.startswith("arn:"):
        raise errors.validation(
            "Parameter name: You can't enter the Amazon Resource Name (ARN) for a parameter, only the "
            "parameter name itself."
        )
    names.validate(ctx, name)
    name = names.canonical(name)
    value: str = params["Value"]
    overwrite = params.get("Overwrite", False)
    if params.get("Tags") and overwrite:
        raise errors.validation(
            "Invalid request: tags and overwrite can't be used together. To create a parameter "
            "with tags, please remove overwrite flag. To update tags for an existing parameter, "
            "please use AddTagsToResource or RemoveTagsFromResource."
        )
    _check_tags(params.get("Tags", []))
    existing = lookup(ssm.store, ctx, name)
    if existing is not None and not overwrite:
        raise errors.already_exists()
    previous = ssm.store.version(existing.param_id, existing.version) if existing else None
    param_type = params.get("Type") or (previous.param_type if previous else None)
    if param_type is None:
        raise errors.validation("A parameter type is required when you create a parameter.")
    if not value:
        raise errors.validation(
            "1 validation error detected: Value '' at 'value' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1"
        )
    _check_value(params, param_type, value, previous)
    if "Policies" in params:
        policy_list = policies.parse(params["Policies"])
    elif existing is not None and existing.policies:
        # Updating a parameter doesn't change the policies attached to it (AWS keeps them).
        policy_list = json.loads(existing.policies)
    else:
        policy_list = []
    tier = _choose_tier(params.get("Tier"), existing, value, bool(policy_list))
    data_type = params.get("DataType", previous.data_type if previous else "text")
    if data_type == "aws:ec2:image" and not _AMI.fullmatch(value):
        # AWS validates aws:ec2:image values after answering: the call succeeds, but a value that isn't
        # an AMI ID is never stored (the parameter is neither created nor updated).
        return {"Version": existing.version + 1 if existing else 1, "Tier": tier}
    arn = names.parameter_arn(ctx, name)  # the same for "/x" and "x"
    key_id = None
    ciphertext = None
    stored_value: str | None = value
    if param_type == "SecureString":
        key_id = params.get("KeyId") or (
            previous.key_id if previous and previous.param_type == "SecureString" else values.DEFAULT_KEY
        )
        ciphertext = values.encrypt(ssm.kms, ctx, key_id, arn, value)
        stored_value = None
    secure_value = value if param_type == "SecureString" else None  # the store fingerprints it
    policies_text = json.dumps(policy_list) if policy_list else None
    content = NewVersion(
        param_type=param_type,
        value=stored_value,
        ciphertext=ciphertext,
        key_id=key_id,
        description=params.get("Description", previous.description if previous else None),
        allowed_pattern=params.get("AllowedPattern", previous.allowed_pattern if previous else None),
        data_type=params.get("DataType", previous.data_type if previous else "text"),
        tier=tier,
        policies=policies_text,
        modified_at=ctx.now.timestamp(),
        modified_by=ctx.principal.arn,
    )
    expires = policies.expires_at(policy_list)
    if existing is None:
        tags = {t["Key"]: t["Value"] for t in params.get("Tags", [])}
        version = ssm.store.create(ctx.account_id, ctx.region, name, content, expires, tags, secure_value)
    else:
        version = ssm.store.add_version(existing, content, expires, secure_value)
    return {"Version": version, "Tier": tier}


def lookup(store: ParameterStore, ctx: RequestContext, name: str) -> ParameterRow | None:
    """The parameter ``name`` names in the caller's account and region: ``/x`` and ``x`` are one
    parameter (see :func:`names.canonical`), stored as ``x`` or, if created before names were
    normalised, as ``/x``."""
    return find(store, ctx, names.Selector(name))


def find(store: ParameterStore, ctx: RequestContext, selector: names.Selector) -> ParameterRow | None:
    """The parameter a selector names (``/x``, ``x`` and a one-level ARN all name the same one)."""
    row = store.get(ctx.account_id, ctx.region, names.canonical(selector.name))
    alternative = selector.alternative()
    if row is None and alternative is not None:
        row = store.get(ctx.account_id, ctx.region, alternative)
    return row


def shown_name(row: ParameterRow, selector: names.Selector) -> str:
    """The Name GetParameter(s) and GetParameterHistory answer with: the form the caller asked for, as
    AWS echoes it ("/x" or "x" for the same parameter); by ARN, the stored name."""
    if selector.by_arn:
        return row.name
    return selector.name


def resolve(
    store: ParameterStore, ctx: RequestContext, selector: names.Selector
) -> tuple[ParameterRow, VersionRow]:
    row = find(store, ctx, selector)
    if row is None:
        raise errors.not_found()
    number = row.version
    if selector.version is not None:
        number = selector.version
    elif selector.label is not None:
        labelled = store.labels.of(row.param_id).get(selector.label)
        if labelled is None:
            raise errors.version_not_found(
                f"Systems Manager could not find version with label {selector.label} "
                f"of parameter {row.name}. Verify the label and try again."
            )
        number = labelled
    version = store.version(row.param_id, number)
    if version is None:
        raise errors.version_not_found(
            f"Systems Manager could not find version {number} of {row.name}. "
            "Verify the version and try again."
        )
    return row, version


def plain_value(
    kms: InternalKms, ctx: RequestContext, name: str, version: VersionRow, with_decryption: bool
) -> str:
    if version.param_type != "SecureString":
        return version.value or ""
    assert version.ciphertext is not None
    if not with_decryption:
        return base64.b64encode(version.ciphertext).decode()
    return values.decrypt(kms, ctx, names.parameter_arn(ctx, name), version.ciphertext)


def render(
    kms: InternalKms,
    ctx: RequestContext,
    row: ParameterRow,
    version: VersionRow,
    with_decryption: bool,
    selector: names.Selector | None = None,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "Name": row.name if selector is None else shown_name(row, selector),
        "Type": version.param_type,
        "Value": plain_value(kms, ctx, row.name, version, with_decryption),
        "Version": version.version,
        "LastModifiedDate": from_epoch(version.modified_at),
        "ARN": names.parameter_arn(ctx, row.name),
        "DataType": version.data_type,
    }
    if selector is not None and selector.raw:
        result["Selector"] = selector.raw
    return result


def _get_one(ssm: ParametersBackend, ctx: RequestContext, name: str, with_decryption: bool) -> dict[str, Any]:
    name = names.clean(name)
    if " " in name:
        raise errors.validation(errors.NAME_RULES)  # AWS refuses spaces inside a name
    if name.startswith(references.PREFIX):
        return references.secret_parameter(ssm.read_secret, ctx, name, with_decryption)
    public_arn = public.arn(ctx, public.PREFIX)
    if name.startswith(public_arn):  # a public parameter by its (account-less) ARN
        name = public.PREFIX + name[len(public_arn) :]
    selector = names.parse_selector(ctx, name)
    if public.is_public(selector.name):
        return _public_one(ssm, ctx, selector)
    row, version = resolve(ssm.store, ctx, selector)
    return render(ssm.kms, ctx, row, version, with_decryption, selector)


def _public_one(ssm: ParametersBackend, ctx: RequestContext, selector: names.Selector) -> dict[str, Any]:
    value = public.tree(ssm.regions).get(selector.name)
    if value is None:
        raise errors.not_found()
    if selector.label is not None:  # public parameters carry no labels
        raise errors.version_not_found(
            f"Systems Manager could not find version with label {selector.label} "
            f"of parameter {selector.name}. Verify the label and try again."
        )
    if selector.version is not None and selector.version != 1:  # each has one version
        raise errors.version_not_found(
            f"Systems Manager could not find version {selector.version} of {selector.name}. "
            "Verify the version and try again."
        )
    result = public.parameter(ctx, selector.name, value)
    if selector.raw:
        result["Selector"] = selector.raw
    return result


def get_parameter(ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"Parameter": _get_one(ssm, ctx, params["Name"], params.get("WithDecryption", False))}


def get_parameters(ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    found: list[dict[str, Any]] = []
    invalid: list[str] = []
    seen: set[str] = set()
    for name in params["Names"]:
        if name in seen:
            continue
        seen.add(name)
        try:
            found.append(_get_one(ssm, ctx, name, params.get("WithDecryption", False)))
        except AWSError as error:
            if error.code in ("ParameterNotFound", "ParameterVersionNotFound", "ValidationException"):
                invalid.append(name)
            else:
                raise
    # AWS lists the parameters GetParameters returns in alphabetical order.
    found.sort(key=lambda parameter: parameter["Name"])
    return {"Parameters": found, "InvalidParameters": invalid}


def delete_parameter(ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    selector = names.parse_selector(ctx, params["Name"])
    if names.reserved(selector.name):
        raise names.reserved_error(selector.name)
    # AWS deletes whole parameters only: a name with a version or label selector names no parameter
    # (DeleteParameters lists it among InvalidParameters), rather than deleting every version of it.
    row = find(ssm.store, ctx, selector) if selector.version is None and selector.label is None else None
    if row is None:
        raise errors.not_found()
    ssm.store.destroy(row.param_id)
    return {}


def delete_parameters(ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    deleted: list[str] = []
    invalid: list[str] = []
    for name in dict.fromkeys(params["Names"]):
        try:
            selector = names.parse_selector(ctx, name)
        except AWSError:
            invalid.append(name)
            continue
        if names.reserved(selector.name):
            raise names.reserved_error(selector.name)
        row = find(ssm.store, ctx, selector) if selector.version is None and selector.label is None else None
        if row is None:
            invalid.append(name)
            continue
        ssm.store.destroy(row.param_id)
        deleted.append(name)
    return {"DeletedParameters": deleted, "InvalidParameters": invalid}


def get_parameter_history(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    selector = names.parse_selector(ctx, params["Name"])
    row = find(ssm.store, ctx, selector)
    if row is None:
        raise errors.not_found()
    shown = shown_name(row, selector)
    labels_by_version: dict[int, list[str]] = {}
    for label, number in sorted(ssm.store.labels.of(row.param_id).items()):
        labels_by_version.setdefault(number, []).append(label)
    history = ssm.store.versions(row.param_id)
    limit = params.get("MaxResults", 50)
    offset = _decode_token(params.get("NextToken"))
    page = history[offset : offset + limit]
    now = ctx.now.timestamp()
    entries = []
    for version in page:
        entry: dict[str, Any] = {
            "Name": shown,
            "Type": version.param_type,
            "LastModifiedDate": from_epoch(version.modified_at),
            "LastModifiedUser": version.modified_by,
            "Value": plain_value(ssm.kms, ctx, row.name, version, params.get("WithDecryption", False)),
            "Version": version.version,
            "Labels": labels_by_version.get(version.version, []),
            "Tier": version.tier,
            "Policies": policies.describe(version.policies, now),
            "DataType": version.data_type,
        }
        if version.key_id:
            entry["KeyId"] = version.key_id
        if version.description:
            entry["Description"] = version.description
        if version.allowed_pattern:
            entry["AllowedPattern"] = version.allowed_pattern
        entries.append(entry)
    result: dict[str, Any] = {"Parameters": entries}
    if offset + limit < len(history):
        result["NextToken"] = _encode_token(offset + limit)
    return result


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"h:{offset}".encode()).decode()


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        prefix, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(number)
    except (ValueError, UnicodeDecodeError):
        raise errors.code("InvalidNextToken", "The specified token isn't valid.") from None
    if prefix != "h" or offset < 0:
        raise errors.code("InvalidNextToken", "The specified token isn't valid.")
    return offset


def expire_due(store: ParameterStore, now: float) -> list[str]:
    """The job for Expiration policies: an expired parameter is deleted, as in AWS. It needs only the
    store, so the job runner can run it without the request-serving collaborators."""
    due = store.expired(now)
    for param_id, _ in due:
        store.destroy(param_id)
    return [name for _, name in due]


OPERATIONS = {
    "PutParameter": put_parameter,
    "GetParameter": get_parameter,
    "GetParameters": get_parameters,
    "DeleteParameter": delete_parameter,
    "DeleteParameters": delete_parameters,
    "GetParameterHistory": get_parameter_history,
}
