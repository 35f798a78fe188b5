"""The checklist: one :class:`Rule` per item, ids pinned (docs/review.md lists them with their fixes).

Each check reads the :class:`~khoa.review.snapshot.Snapshot` (whole tables, loaded once) or runs a
few set-based queries of its own; none issues a query per secret, key or principal. Messages name
resources, policies, counts and times, never a value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Row

from khoa.access import aws_managed
from khoa.access.matching import wildcard_match
from khoa.access.policy import Policy, PolicyError, Statement
from khoa.access.public import public_statements
from khoa.audit.signing import vouched_public_keys
from khoa.audit.stored import StoredFiles
from khoa.audit.usage import UsageReader
from khoa.audit.verify import load_public_keys, load_records, verify_trail
from khoa.review.model import Rule, Severity
from khoa.review.snapshot import DAY, Snapshot, key_arn
from khoa.scan.detect import detector
from khoa.services.secretsmanager import schedule
from khoa.storage import schema

Found = Iterator[tuple[str, str]]

INSTALLATION = "khoa://installation"
SECRET_READ = ("secretsmanager:GetSecretValue", "secretsmanager:BatchGetSecretValue")
KEY_USE = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:Sign",
    "kms:GenerateMac",
)
WILDCARD_ACTIONS = ("*", "secretsmanager:*", "kms:*")
# A grant's operations that use the key (CreateGrant and friends are management).
GRANT_USE = {action.split(":", 1)[1] for action in KEY_USE} | {"ReEncryptFrom", "ReEncryptTo", "Verify"}


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(document: str | None, source: str) -> Policy | None:
    """A stored policy, or None when there is none or it does not parse (evaluation denies it)."""
    if not document:
        return None
    try:
        return Policy.parse(document, source)
    except PolicyError:
        return None


def _account_of(principal: str) -> str | None:
    """The account of an ``AWS`` principal value (an account id or an ARN); None for a unique id."""
    if principal.isdigit() and len(principal) == 12:
        return principal
    if principal.startswith("arn:"):
        parts = principal.split(":")
        return parts[4] if len(parts) > 4 and parts[4] else None
    return None


def _is_account(principal: str, account: str) -> bool:
    """The account itself (its id or its root ARN), which delegates to the account's IAM policies."""
    return principal == account or principal == f"arn:aws:iam::{account}:root"


def _wildcard_actions(statement: Statement) -> list[str]:
    if statement.not_actions:
        return [f"NotAction {', '.join(statement.not_actions)}"]
    return [a for a in statement.actions if a.lower() in WILDCARD_ACTIONS]


def _covers(statement: Statement, service: str) -> bool:
    """Could the statement's Resource include a secret (``secretsmanager``) or a key (``kms``)?"""
    if statement.not_resources or not statement.resources:
        return True
    sample = (
        f"arn:aws:{service}:us-east-1:111122223333:{'secret:x' if service == 'secretsmanager' else 'key/x'}"
    )
    return any(
        wildcard_match(pattern.split("${", 1)[0] + "*" if "${" in pattern else pattern, sample)
        for pattern in statement.resources
    )


def _allows(statement: Statement, actions: Iterable[str]) -> bool:
    return statement.effect == "Allow" and any(statement.matches_action(a) for a in actions)


def _secret_policies(snapshot: Snapshot) -> Iterator[tuple[Row[Any], Policy]]:
    """Each secret's resource policies (stored as a JSON map of policy name → document)."""
    for secret in snapshot.secrets:
        if not secret.resource_policy:
            continue
        try:
            stored = json.loads(secret.resource_policy)
        except ValueError:
            continue
        documents = stored.values() if isinstance(stored, dict) else ()
        for document in documents:
            policy = _parse(document if isinstance(document, str) else None, "resource")
            if policy is not None:
                yield secret, policy


def _key_policies(snapshot: Snapshot) -> Iterator[tuple[Row[Any], Policy]]:
    for key in snapshot.keys:
        if key.key_manager != "CUSTOMER":
            continue  # AWS managed keys' policies are Khoa's own (the account and its services)
        policy = _parse(key.policy, "resource")
        if policy is not None:
            yield key, policy


def _identity_policies(snapshot: Snapshot) -> Iterator[tuple[Row[Any], str, Policy]]:
    """(principal, where the policy comes from, policy) for every identity policy that applies to a user
    or role: inline, customer managed and AWS managed attachments, and those of the user's groups."""
    groups_of: dict[str, list[Row[Any]]] = {}
    for group_id, members in snapshot.group_members.items():
        for user_id in members:
            groups_of.setdefault(user_id, []).append(snapshot.principals[group_id])
    inline: dict[str, list[tuple[str, str]]] = {}
    for owner, name, document in snapshot.inline_policies:
        inline.setdefault(owner.principal_id, []).append((name, document))
    for principal in snapshot.principals.values():
        if principal.kind == "group":
            continue
        owners = [principal, *groups_of.get(principal.principal_id, [])]
        for owner in owners:
            via = "" if owner is principal else f" (through group {owner.name})"
            for name, document in inline.get(owner.principal_id, []):
                policy = _parse(document, "identity")
                if policy is not None:
                    yield principal, f"inline policy {name}{via}", policy
            for arn in snapshot.attachments.get(owner.principal_id, []):
                managed = snapshot.managed_policies.get(arn) or aws_managed.document(arn)
                policy = _parse(managed, "identity")
                if policy is not None:
                    yield principal, f"managed policy {arn}{via}", policy


# -- Secrets -------------------------------------------------------------------------------------


def secret_rotation_disabled(snapshot: Snapshot) -> Found:
    credentials = snapshot.credential_secrets
    for secret in snapshot.secrets:
        if secret.secret_id in credentials and not secret.rotation_enabled:
            yield secret.arn, f"secret {secret.name} holds credentials but rotation is not enabled"


def rotation_untested(snapshot: Snapshot) -> Found:
    for secret in snapshot.secrets:
        if secret.rotation_enabled and secret.last_rotated_at is None:
            yield (
                secret.arn,
                f"secret {secret.name} has rotation configured but no rotation has ever completed",
            )


def rotation_overdue(snapshot: Snapshot) -> Found:
    for secret in snapshot.secrets:
        if not secret.rotation_enabled or secret.last_rotated_at is None or not secret.rotation_rules:
            continue
        try:
            rules = json.loads(secret.rotation_rules)
            last = datetime.fromtimestamp(secret.last_rotated_at, UTC)
            _, window_end = schedule.next_window(rules, last)
        except Exception:  # noqa: BLE001, S112 - rules the schedule cannot read are not this rule's finding
            continue
        if window_end.timestamp() < snapshot.now:
            yield (
                secret.arn,
                (
                    f"secret {secret.name} last rotated {_when(secret.last_rotated_at)}; "
                    "its next rotation window "
                    f"closed {_when(window_end.timestamp())} without a successful rotation"
                ),
            )


def secret_default_key(snapshot: Snapshot) -> Found:
    for secret in snapshot.secrets:
        if not snapshot.is_production(secret):
            continue
        reference = secret.kms_key_id
        if reference:
            if reference.endswith("alias/aws/secretsmanager"):
                default = True
            else:
                key = snapshot.resolve_key(secret.account_id, secret.region, reference)
                default = key is not None and key.key_manager == "AWS"
        else:
            default = True
        if default:
            yield (
                secret.arn,
                (
                    f"production secret {secret.name} is encrypted under the AWS managed key "
                    "aws/secretsmanager"
                ),
            )


def naming_convention(snapshot: Snapshot) -> Found:
    for secret in snapshot.secrets:
        if not snapshot.naming.fullmatch(secret.name):
            yield (
                secret.arn,
                (f"secret name {secret.name!r} does not match the naming pattern {snapshot.naming.pattern}"),
            )


# -- Access --------------------------------------------------------------------------------------


def _external_principals(statement: Statement, account: str) -> list[str]:
    """Who outside ``account`` an Allow statement names (``*`` only when no condition bounds it)."""
    if statement.effect != "Allow":
        return []
    if statement.not_principals is not None:
        return ["everyone except the NotPrincipal"]
    found = []
    for kind, value in statement.principals or ():
        if kind != "AWS" or value == "*":
            continue  # "*" is judged with its conditions below; services act for the account
        other = _account_of(value)
        if other is not None and other != account:
            found.append(value)
    return found


def _caller_account_bound(statement: Statement, account: str) -> bool:
    """A ``*`` Allow whose ``StringEquals kms:CallerAccount`` (or ``aws:PrincipalAccount``) names only the
    resource's own account: AWS's pattern for keys shared with every principal of the account."""
    for operator, entries in statement.condition.items():
        if operator != "StringEquals":
            continue
        for key, raw in entries.items():
            values = raw if isinstance(raw, list) else [raw]
            if key.lower() in ("kms:calleraccount", "aws:principalaccount") and values == [account] * len(
                values
            ):
                return True
    return False


def _public(policy: Policy, account: str) -> list[Statement]:
    return [s for s in public_statements(policy) if not _caller_account_bound(s, account)]


def external_access(snapshot: Snapshot) -> Found:
    resources: list[tuple[str, str, str, Policy]] = [
        (secret.arn, secret.account_id, f"secret {secret.name}", policy)
        for secret, policy in _secret_policies(snapshot)
    ]
    resources += [
        (key_arn(key.region, key.account_id, key.key_id), key.account_id, f"key {key.key_id}", policy)
        for key, policy in _key_policies(snapshot)
    ]
    for arn, account, what, policy in resources:
        public = _public(policy, account)
        outside: list[str] = []
        if public:
            outside.append("anyone (a * principal without a condition that bounds the caller)")
        for statement in policy.statements:
            if statement not in public:
                outside += _external_principals(statement, account)
        if outside:
            yield arn, f"the resource policy of {what} allows {', '.join(dict.fromkeys(outside))}"
    for grant in snapshot.grants:
        other = _account_of(grant.grantee_principal)
        if other is not None and other != grant.account_id:
            yield (
                key_arn(grant.region, grant.account_id, grant.key_id),
                (f"grant {grant.grant_id} of key {grant.key_id} lets {grant.grantee_principal} use it"),
            )


def overly_permissive_policy(snapshot: Snapshot) -> Found:
    for principal, where, policy in _identity_policies(snapshot):
        for statement in policy.statements:
            if statement.effect != "Allow":
                continue
            actions = _wildcard_actions(statement)
            covered = [s for s in ("secretsmanager", "kms") if _covers(statement, s)]
            relevant = [
                a
                for a in actions
                if a == "*" or a.startswith("NotAction") or a.split(":")[0].lower() in covered
            ]
            if relevant and covered:
                yield (
                    principal.arn,
                    (
                        f"{where} of {principal.kind} {principal.name} allows {', '.join(relevant)} on "
                        f"{' and '.join('secrets' if s == 'secretsmanager' else 'keys' for s in covered)}"
                    ),
                )
                break
    resources: list[tuple[str, str, str, Policy]] = [
        (secret.arn, secret.account_id, f"secret {secret.name}", policy)
        for secret, policy in _secret_policies(snapshot)
    ]
    resources += [
        (key_arn(key.region, key.account_id, key.key_id), key.account_id, f"key {key.key_id}", policy)
        for key, policy in _key_policies(snapshot)
    ]
    for arn, account, what, policy in resources:
        problems: list[str] = []
        if _public(policy, account):
            problems.append("allows a * principal without a restricting condition")
        for statement in policy.statements:
            if statement.effect != "Allow":
                continue
            actions = _wildcard_actions(statement)
            principals = [value for _kind, value in statement.principals or ()]
            if actions and (
                statement.not_principals is not None or any(not _is_account(p, account) for p in principals)
            ):
                problems.append(f"allows {', '.join(actions)} to {', '.join(principals) or 'NotPrincipal'}")
        if problems:
            yield arn, f"the resource policy of {what} {'; '.join(dict.fromkeys(problems))}"


def unused_access(snapshot: Snapshot) -> Found:
    days = snapshot.options.unused_days
    since = snapshot.now - days * DAY
    allowed: dict[str, list[str]] = {}  # principal ARN → how it is allowed
    created = {principal.arn: principal.created_at for principal in snapshot.principals.values()}
    for principal, where, policy in _identity_policies(snapshot):
        for statement in policy.statements:
            reads = _allows(statement, SECRET_READ) and _covers(statement, "secretsmanager")
            uses = _allows(statement, KEY_USE) and _covers(statement, "kms")
            if reads or uses:
                what = " and ".join(w for w, on in (("read secrets", reads), ("use keys", uses)) if on)
                allowed.setdefault(principal.arn, []).append(f"{where} lets it {what}")
                break
    for secret, policy in _secret_policies(snapshot):
        for statement in policy.statements:
            if _allows(statement, SECRET_READ):
                for kind, value in statement.principals or ():
                    if kind == "AWS" and value.startswith("arn:") and not value.endswith(":root"):
                        allowed.setdefault(value, []).append(f"the resource policy of secret {secret.name}")
    for key, policy in _key_policies(snapshot):
        for statement in policy.statements:
            if _allows(statement, KEY_USE):
                for kind, value in statement.principals or ():
                    if kind == "AWS" and value.startswith("arn:") and not value.endswith(":root"):
                        allowed.setdefault(value, []).append(f"the key policy of key {key.key_id}")
    for grant in snapshot.grants:
        try:
            operations = set(json.loads(grant.operations))
        except ValueError:
            continue
        value = grant.grantee_principal
        if operations & GRANT_USE and value.startswith("arn:") and not value.endswith(":root"):
            allowed.setdefault(value, []).append(f"grant {grant.grant_id} of key {grant.key_id}")
    if not allowed:
        return
    used = UsageReader(snapshot.engine, max_tail_windows=None).principals_used_since(since)
    for arn, reasons in sorted(allowed.items()):
        if arn in used or created.get(arn, 0.0) > since:
            continue  # used, or too new to judge
        yield (
            arn,
            (
                f"{arn} has not read a secret or used a key in {days:g} days but is allowed to: "
                + "; ".join(dict.fromkeys(reasons))
            ),
        )


# -- Keys ----------------------------------------------------------------------------------------


def key_rotation_disabled(snapshot: Snapshot) -> Found:
    for key in snapshot.keys:
        if (
            key.key_manager == "CUSTOMER"
            and key.key_spec == "SYMMETRIC_DEFAULT"
            and key.origin == "AWS_KMS"
            and key.state in ("Enabled", "Disabled")
            and not key.rotation_enabled
        ):
            yield (
                key_arn(key.region, key.account_id, key.key_id),
                (f"customer managed symmetric key {key.key_id} has automatic rotation disabled"),
            )


def key_pending_deletion_in_use(snapshot: Snapshot) -> Found:
    pending = [key for key in snapshot.keys if key.state == "PendingDeletion"]
    if not pending:
        return
    window = {key.key_id: (key.pending_window_days or 30) * DAY for key in pending}
    arns = {key.key_id: key_arn(key.region, key.account_id, key.key_id) for key in pending}
    uses = UsageReader(snapshot.engine, max_tail_windows=None).keys_last_use(list(arns.values()))
    last_use = {key_id: uses[arn].event_time for key_id, arn in arns.items() if arn in uses}
    for key in pending:
        when = last_use.get(key.key_id)
        if when is not None and when >= snapshot.now - window[key.key_id]:
            due = f" (deletion due {_when(key.deletion_date)})" if key.deletion_date else ""
            yield (
                key_arn(key.region, key.account_id, key.key_id),
                (
                    f"key {key.key_id} is pending deletion{due} but was used {_when(when)}, within its "
                    f"{key.pending_window_days or 30}-day window"
                ),
            )


# -- Parameters ----------------------------------------------------------------------------------


def plaintext_secret_parameter(snapshot: Snapshot) -> Found:
    p, v = schema.ssm_parameters.c, schema.ssm_parameter_versions.c
    rows = snapshot.rows(
        select(p.account_id, p.region, p.name, v.param_type, v.value)
        .join(schema.ssm_parameter_versions, (v.param_id == p.param_id) & (v.version == p.version))
        .where(
            v.param_type.in_(("String", "StringList")),
            v.value.is_not(None),
            snapshot.in_account(p.account_id),
        )
    )
    with detector() as scanner:
        for row in rows:
            hits = scanner.scan(
                "parameter", [(n, line) for n, line in enumerate(row.value.splitlines(), start=1)]
            )
            if hits:
                name = row.name if row.name.startswith("/") else f"/{row.name}"
                kinds = ", ".join(sorted({hit.type for hit in hits}))
                yield (
                    f"arn:aws:ssm:{row.region}:{row.account_id}:parameter{name}",
                    (f"{row.param_type} parameter {row.name} holds what detect-secrets flags as: {kinds}"),
                )


# -- The installation ----------------------------------------------------------------------------


def audit_trail_unverified(snapshot: Snapshot) -> Found:
    settings = snapshot.settings
    resource = f"{INSTALLATION}/audit-trail"
    records = load_records(snapshot.engine)
    if records.digests or records.log_files:
        if snapshot.barrier is not None:
            # Only the keys the root key vouches for: one added through the database is no trail key.
            keys, untrusted = vouched_public_keys(snapshot.engine, snapshot.barrier)
            if untrusted:
                yield (
                    resource,
                    (
                        f"the root key does not vouch for {len(untrusted)} trail key(s) in the database: "
                        + ", ".join(sorted(untrusted))
                    ),
                )
        else:
            keys = load_public_keys(snapshot.engine)
        report = verify_trail(
            settings.effective_audit_dir,
            keys,
            records,
            stored=StoredFiles(snapshot.engine),
            directory_complete=settings.effective_database_url.startswith("sqlite"),
        )
        if not report.intact:
            kinds = ", ".join(sorted({finding.kind for finding in report.findings}))
            yield resource, f"the audit trail does not verify: {len(report.findings)} problem(s) ({kinds})"
    d, e = schema.audit_digests.c, schema.audit_events.c
    period = settings.audit_digest_seconds
    last_end = snapshot.rows(select(func.max(d.end_time)))[0][0]
    oldest = snapshot.rows(select(func.min(e.event_time)).where(e.event_time > (last_end or 0.0)))[0][0]
    if oldest is not None and oldest < snapshot.now - 2 * period:
        since = f"since {_when(last_end)}" if last_end else "ever"
        yield (
            resource,
            (
                f"digests are behind: no digest {since}, while events from {_when(oldest)} on wait for one "
                f"(the digest period is {period:g} s)"
            ),
        )


def alerts_not_routed(snapshot: Snapshot) -> Found:
    alerts = snapshot.settings.alerts
    resource = f"{INSTALLATION}/alerts"
    if not alerts.enabled:
        yield resource, "alerts are turned off (KHOA_ALERTS=0)"
    elif not alerts.webhook_url and not alerts.slack_url:
        yield resource, "alerts are raised but routed nowhere: no webhook and no Slack receiver is configured"


RULES: tuple[Rule, ...] = (
    Rule(
        "secret-rotation-disabled",
        Severity.MEDIUM,
        "a long-lived credential stays valid after a leak until someone changes it by hand",
        "Credential secrets rotate automatically",
        "Turn rotation on: aws secretsmanager rotate-secret --secret-id ARN --rotation-lambda-arn FN "
        "--rotation-rules AutomaticallyAfterDays=30",
        secret_rotation_disabled,
    ),
    Rule(
        "rotation-untested",
        Severity.MEDIUM,
        "a rotation that never completed may fail the day it is needed (an emergency rotation)",
        "Configured rotation has completed at least once",
        "Run it once now and watch it finish: aws secretsmanager rotate-secret --secret-id ARN",
        rotation_untested,
    ),
    Rule(
        "rotation-overdue",
        Severity.MEDIUM,
        "the credential has outlived its own policy; rotation is failing silently",
        "Rotation keeps to its schedule",
        "Find why rotation fails (docs/runbooks/rotation-troubleshooting.md), then rotate-secret ARN",
        rotation_overdue,
    ),
    Rule(
        "secret-default-key",
        Severity.MEDIUM,
        "the AWS managed key's policy cannot be narrowed: key access cannot be separated from secret access",
        "Production secrets use a customer managed key",
        "Re-encrypt under a customer managed key: "
        "aws secretsmanager update-secret --secret-id ARN --kms-key-id KEY",
        secret_default_key,
    ),
    Rule(
        "naming-convention",
        Severity.LOW,
        "hygiene: such names defeat prefix-scoped policies but grant nothing by themselves",
        "Secret names follow <env>/<app>/<kind>/<name>",
        "Create the secret under a conforming name, move its consumers, delete the old one",
        naming_convention,
    ),
    Rule(
        "external-access",
        Severity.HIGH,
        "someone outside the account, or anyone, can use the secret or key today",
        "No secret or key is usable from outside its account unintentionally",
        "Remove the outside principal from the resource policy or key policy, or retire the grant",
        external_access,
    ),
    Rule(
        "overly-permissive-policy",
        Severity.HIGH,
        "wildcard actions or principals grant deletion, policy changes and reads nobody reviewed",
        "Policies name the actions and principals they mean",
        "Replace * actions with the actions needed, * principals with named ones (or a bounding condition)",
        overly_permissive_policy,
    ),
    Rule(
        "unused-access",
        Severity.LOW,
        "least privilege: unused standing access is risk without benefit, but not an exposure by itself",
        "Principals use the secrets and keys they are allowed to",
        "Remove the permission (policy statement, resource policy entry or grant) the principal does not use",
        unused_access,
    ),
    Rule(
        "key-rotation-disabled",
        Severity.MEDIUM,
        "one key version protects everything it ever encrypted, for as long as the key lives",
        "Customer managed symmetric keys rotate automatically",
        "aws kms enable-key-rotation --key-id KEY",
        key_rotation_disabled,
    ),
    Rule(
        "key-pending-deletion-in-use",
        Severity.HIGH,
        "deleting a key in use makes what it encrypted unrecoverable",
        "Keys scheduled for deletion are no longer used",
        "aws kms cancel-key-deletion --key-id KEY, then find its users (docs/runbooks/kms-key-recovery.md)",
        key_pending_deletion_in_use,
    ),
    Rule(
        "plaintext-secret-parameter",
        Severity.HIGH,
        "a credential in a String parameter is stored unencrypted and readable with ssm:GetParameter alone",
        "Credentials are not stored as plaintext parameters",
        "Store it as a SecureString (or a secret), rotate the exposed value, delete the String parameter",
        plaintext_secret_parameter,
    ),
    Rule(
        "audit-trail-unverified",
        Severity.HIGH,
        "without a verifiable trail no one can show who used what, or notice tampering",
        "The audit trail verifies and its digests are current",
        "Run khoa audit verify to see what broke; khoa audit digest closes a period now",
        audit_trail_unverified,
    ),
    Rule(
        "alerts-not-routed",
        Severity.MEDIUM,
        "alerts nobody receives are noticed only after the incident",
        "Alerts reach a person",
        "Set KHOA_ALERT_WEBHOOK_URL or KHOA_ALERT_SLACK_URL on the server",
        alerts_not_routed,
    ),
)
