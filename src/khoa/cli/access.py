"""``khoa access explain`` — why a request is (or was) allowed or denied, against the installation.

An operator command (like ``khoa audit verify``: it reads the database directly, also while the server
runs). Two forms (pinned):

- ``khoa access explain --principal ARN --action ACTION --resource ARN`` evaluates the request now;
- ``khoa access explain --event-id ID`` rebuilds a recorded call from its audit event (the caller, the
  action(s) its service's authorisation table evaluates the operation as, its resource, source address
  and time) and evaluates it against today's policies.

Both print the decision in AWS's words, every policy that applied (identity-based, resource-based,
permissions boundary, session, service control policies) and the statements that matched, the one that
decided first. The evaluation is the server's own (``access.authorize.Authorizer.decide``), so the
answer is the one the server would give; service-specific condition keys other than
``kms:CallerAccount`` are not rebuilt, and a session's own session policy is not recorded in the trail.

Exit codes: 0 the explanation was printed (whatever the decision); 1 the event, principal or
installation was not found; 2 usage error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, cast

import typer
from sqlalchemy import Connection, Engine, select

from khoa.access.authorize import Authorizer, access_denied
from khoa.access.directory import Directory, parsed, parsed_scp
from khoa.access.policy import Policy, Statement
from khoa.auth.principal import Principal
from khoa.cli.common import (
    AsJson,
    CliError,
    DatabaseUrl,
    DataDir,
    installation,
    installation_settings,
    stdout_console,
    usage_error,
)
from khoa.protocol.context import RequestContext
from khoa.services.authorization import AuthorizationTable
from khoa.storage import schema

app = typer.Typer(help="Explain access decisions.", no_args_is_help=True)

_ARN = re.compile(r"^arn:aws:([a-z0-9-]+):([a-z0-9-]*):(\d{12}|aws)?:(.+)$")
_ON_RESOURCE = re.compile(r" on resource: (\S+)")
_P = schema.iam_principals


@dataclass
class Applied:
    """The policies that took part, each named, for the report."""

    identity: list[tuple[str, Policy]] = field(default_factory=list)
    resource: tuple[str, Policy] | None = None
    boundary: tuple[str, Policy] | None = None
    session: list[tuple[str, Policy]] = field(default_factory=list)
    scps: list[tuple[str, Policy]] = field(default_factory=list)

    def named(self) -> list[tuple[str, str, Policy]]:
        out = [("identity-based", name, p) for name, p in self.identity]
        if self.resource:
            out.append(("resource-based", *self.resource))
        if self.boundary:
            out.append(("permissions boundary", *self.boundary))
        out += [("session", name, p) for name, p in self.session]
        out += [("service control policy", name, p) for name, p in self.scps]
        return out


def _tables() -> dict[str, AuthorizationTable]:
    """Every service's authorisation table, for the IAM action(s) an operation is evaluated as. The
    tables' checks are never called here, so they are built without their collaborators."""
    from khoa.services.cloudtrail import authtable as cloudtrail
    from khoa.services.iam import authtable as iam
    from khoa.services.kms import authtable as kms
    from khoa.services.leaks import authtable as leaks
    from khoa.services.secretsmanager import authtable as secretsmanager
    from khoa.services.ssm import authtable as ssm
    from khoa.services.sts import authtable as sts

    none = cast(Any, None)
    built = [m.table(none) for m in (cloudtrail, iam, kms, leaks, secretsmanager, ssm, sts)]
    return {table.service: table for table in built}


def _principal(conn: Connection, arn: str) -> Principal:
    """The caller an ARN names: an account root, an IAM user, a role (as a session of it) or a session."""
    match = _ARN.match(arn)
    if match is None or match.group(3) in (None, "aws"):
        raise usage_error(f"--principal {arn!r} is not a principal ARN (arn:aws:iam::ACCOUNT:user/NAME, …)")
    service, account, rest = match.group(1), str(match.group(3)), match.group(4)
    if service == "iam" and rest == "root":
        found = conn.execute(
            select(schema.accounts.c.account_id).where(schema.accounts.c.account_id == account)
        )
        if found.first() is None:
            raise CliError(f"account {account} does not exist in this installation")
        return Principal.account_root(account)
    if service == "iam" and rest.startswith("user/"):
        row = conn.execute(select(_P).where(_P.c.arn == arn, _P.c.kind == "user")).first()
        if row is None:
            raise CliError(f"no IAM user {arn} in this installation")
        return Principal(
            account, arn, row.principal_id, "IAMUser", name=row.name, principal_id=row.principal_id
        )
    session = "explain"
    if service == "iam" and rest.startswith("role/"):
        role_name = rest.rsplit("/", 1)[-1]
    elif service == "sts" and rest.startswith("assumed-role/") and rest.count("/") == 2:
        _, role_name, session = rest.split("/")
    else:
        raise usage_error(f"--principal {arn!r} names no user, role, session or account root")
    row = conn.execute(
        select(_P).where(
            _P.c.account_id == account, _P.c.kind == "role", _P.c.name_lower == role_name.lower()
        )
    ).first()
    if row is None:
        raise CliError(f"no IAM role {role_name} in account {account}")
    return Principal(
        account,
        f"arn:aws:sts::{account}:assumed-role/{row.name}/{session}",
        f"{row.principal_id}:{session}",
        "AssumedRole",
        name=row.name,
        principal_id=row.principal_id,
        session_name=session,
    )


def _owner_policies(conn: Connection, principal: Principal) -> list[tuple[str, Policy]]:
    """The caller's identity-based policies by name (inline, then attached; a user's groups' too)."""
    if principal.is_root or not principal.principal_id:
        return []
    owners = [principal.principal_id]
    owners += list(
        conn.execute(
            select(schema.iam_group_members.c.group_id).where(
                schema.iam_group_members.c.user_id == principal.principal_id
            )
        ).scalars()
    )
    names = {
        r.principal_id: f"{r.kind} {r.name}"
        for r in conn.execute(select(_P).where(_P.c.principal_id.in_(owners)))
    }
    inline = schema.iam_inline_policies
    out = [
        (
            f"inline policy {r.policy_name} of {names.get(r.owner_id, r.owner_id)}",
            parsed(r.document, "identity"),
        )
        for r in conn.execute(select(inline).where(inline.c.owner_id.in_(owners)))
    ]
    managed, versions, attached = (
        schema.iam_managed_policies,
        schema.iam_policy_versions,
        schema.iam_attachments,
    )
    rows = conn.execute(
        select(managed.c.arn, versions.c.document, attached.c.owner_id)
        .join(versions, versions.c.policy_arn == managed.c.arn)
        .join(attached, attached.c.policy_arn == managed.c.arn)
        .where(attached.c.owner_id.in_(owners), versions.c.version_id == managed.c.default_version)
    )
    out += [
        (f"managed policy {r.arn} (on {names.get(r.owner_id, r.owner_id)})", parsed(r.document, "identity"))
        for r in rows
    ]
    return out


def _boundary(conn: Connection, principal: Principal) -> tuple[str, Policy] | None:
    if principal.is_root or not principal.principal_id:
        return None
    arn = conn.execute(
        select(_P.c.permissions_boundary).where(_P.c.principal_id == principal.principal_id)
    ).scalar()
    if not arn:
        return None
    managed, versions = schema.iam_managed_policies, schema.iam_policy_versions
    document = conn.execute(
        select(versions.c.document)
        .join(managed, managed.c.arn == versions.c.policy_arn)
        .where(managed.c.arn == arn, versions.c.version_id == managed.c.default_version)
    ).scalar()
    return (f"boundary {arn}", parsed(document, "boundary") if document else Policy((), "boundary"))


def _scps(conn: Connection, directory: Directory, account_id: str) -> list[tuple[str, Policy]]:
    if not directory.scps_for(account_id):
        return []
    members, orgs = schema.org_accounts, schema.org_organizations
    policies, attached = schema.org_policies, schema.org_attachments
    org = conn.execute(
        select(orgs)
        .join(members, members.c.org_id == orgs.c.org_id)
        .where(members.c.account_id == account_id)
    ).first()
    if org is None:
        return []
    rows = conn.execute(
        select(attached.c.target_id, policies.c.policy_id, policies.c.name, policies.c.content)
        .join(
            policies,
            (policies.c.org_id == attached.c.org_id) & (policies.c.policy_id == attached.c.policy_id),
        )
        .where(attached.c.org_id == org.org_id, attached.c.target_id.in_((org.root_id, account_id)))
        .order_by(attached.c.target_id != org.root_id, policies.c.policy_id)
    )
    return [
        (
            f"SCP {r.name} ({r.policy_id}) on "
            + (f"root {r.target_id}" if r.target_id == org.root_id else f"account {r.target_id}"),
            parsed_scp(r.content),
        )
        for r in rows
    ]


def _resource_policy(conn: Connection, action: str, resource: str) -> tuple[str, str, bool] | None:
    """(description, document, must-allow) of the resource's own policy, when it has one."""
    match = _ARN.match(resource)
    if match is None:
        return None
    service, rest = match.group(1), match.group(4)
    if service == "kms" and rest.startswith("key/"):
        keys = schema.kms_keys
        document = conn.execute(select(keys.c.policy).where(keys.c.key_id == rest[4:])).scalar()
        return (f"key policy of {resource}", document, True) if document else None
    if service == "secretsmanager":
        secrets = schema.sm_secrets
        document = conn.execute(select(secrets.c.resource_policy).where(secrets.c.arn == resource)).scalar()
        return (f"resource policy of {resource}", document, False) if document else None
    if service == "iam" and rest.startswith("role/") and action.lower().startswith("sts:"):
        document = conn.execute(select(_P.c.assume_role_policy).where(_P.c.arn == resource)).scalar()
        return (f"trust policy of {resource}", document, True) if document else None
    return None


def _matching(
    applied: Applied, principal: Principal, action: str, resource: str, facts: dict[str, list[str]]
) -> list[dict[str, str]]:
    from khoa.access.evaluate import principal_match

    out = []
    for kind, name, policy in applied.named():
        for statement in policy.statements:
            if not (
                statement.matches_action(action)
                and statement.matches_resource(resource, facts)
                and statement.matches_conditions(facts)
            ):
                continue
            if kind == "resource-based" and principal_match(statement, principal) is None:
                continue
            out.append({"kind": kind, "policy": name, "effect": statement.effect, "sid": _sid(statement)})
    return out


def _sid(statement: Statement) -> str:
    return statement.sid or "(no Sid)"


def _explain_one(
    engine: Engine,
    principal: Principal,
    action: str,
    resource: str,
    *,
    region: str,
    source_ip: str,
    when: datetime,
) -> dict[str, Any]:
    directory = Directory(engine, cache_seconds=0)
    service = action.split(":", 1)[0].lower()
    ctx = RequestContext(
        principal=principal,
        region=region,
        request_id="khoa-access-explain",
        service=service,
        operation=action.split(":", 1)[-1],
        now=when,
        source_ip=source_ip,
    )
    match = _ARN.match(resource)
    resource_account = (
        match.group(3) if match and match.group(3) and match.group(3) != "aws" else principal.account_id
    )
    extra = {"kms:calleraccount": [principal.account_id]} if service == "kms" else {}
    with engine.connect() as conn:
        applied = Applied(
            identity=_owner_policies(conn, principal),
            boundary=_boundary(conn, principal),
            scps=_scps(conn, directory, principal.account_id),
        )
        own = _resource_policy(conn, action, resource)
    if own is not None:
        applied.resource = (own[0], parsed(own[1], "resource"))
    authorizer = Authorizer(directory)
    decision = authorizer.decide(
        ctx,
        action,
        resource,
        resource_account=resource_account,
        resource_policy=own[1] if own else None,
        key_policy=bool(own and own[2]),
        context=extra,
    )
    if principal.is_root:  # the root user is not subject to its account's IAM policies
        applied.identity, applied.boundary = [], None
    facts = authorizer.condition_context(ctx, resource_account)
    facts.update(extra)
    matching = _matching(applied, principal, action, resource, facts)
    decided = ""
    if decision.deciding_sid or decision.explicit_deny:
        decided = next(
            (
                f"{m['effect']} {m['sid']} in {m['policy']}"
                for m in matching
                if m["effect"] == "Deny"
                and m["kind"] == decision.policy_kind
                and (not decision.deciding_sid or m["sid"] == decision.deciding_sid)
            ),
            f"a Deny in a {decision.policy_kind} policy",
        )
    elif decision.allowed:
        allows = [
            m
            for m in matching
            if m["effect"] == "Allow" and m["kind"] in ("identity-based", "resource-based")
        ]
        if principal.is_root and resource_account == principal.account_id and own is None:
            decided = "the account root user (no IAM policy needed in its own account)"
        elif allows:
            decided = f"Allow {allows[0]['sid']} in {allows[0]['policy']}"
    else:
        decided = f"no statement: {decision.explain(action)}"
    return {
        "principal": principal.arn,
        "action": action,
        "resource": resource,
        "allowed": decision.allowed,
        "explicitDeny": decision.explicit_deny,
        "decidedBy": decision.policy_kind or ("allow" if decision.allowed else ""),
        "decidingStatement": decided,
        "message": "" if decision.allowed else str(access_denied(ctx, action, resource, decision).message),
        "policies": [{"kind": kind, "policy": name} for kind, name, _ in applied.named()],
        "matchingStatements": matching,
    }


def _from_event(engine: Engine, event_id: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """The audit record of ``event_id``, the action(s) its operation is evaluated as, its resources."""
    events = schema.audit_events
    with engine.connect() as conn:
        text = conn.execute(select(events.c.record).where(events.c.event_id == event_id)).scalar()
    if text is None:
        raise CliError(f"no audit event {event_id} in this installation: see `aws cloudtrail lookup-events`")
    record = json.loads(text)
    service = str(record.get("eventSource", "")).split(".", 1)[0]
    operation = str(record.get("eventName", ""))
    table = _tables().get(service)
    rule = table.rules.get(operation) if table else None
    if table is None:
        actions = [f"{service}:{operation}"]  # a service whose table is not listed here: AWS's naming
    elif rule is None or not rule.actions:
        raise CliError(f"event {event_id} ({service} {operation}) needs no permission: nothing to explain")
    elif service == "kms" and operation == "ReEncrypt":
        actions = list(rule.actions)  # kms:ReEncryptFrom and kms:ReEncryptTo, both evaluated
    else:
        actions = list(rule.actions[:1])  # the operation's own action (extra ones depend on parameters)
    resources = [r["ARN"] for r in record.get("resources") or [] if r.get("ARN")]
    if not resources:
        found = _ON_RESOURCE.search(str(record.get("errorMessage", "")))
        resources = [found.group(1)] if found else []
    if not resources:
        resources = [_resource_from_parameters(record, service)]
    return record, actions, resources


def _resource_from_parameters(record: dict[str, Any], service: str) -> str:
    params = record.get("requestParameters") or {}
    region = record.get("awsRegion", "us-east-1")
    account = record.get("recipientAccountId") or record.get("userIdentity", {}).get("accountId", "")
    for key in ("SecretId", "KeyId", "RoleArn", "Name"):
        value = params.get(key)
        if isinstance(value, str) and value.startswith("arn:"):
            return value
        if key == "KeyId" and isinstance(value, str) and service == "kms" and not value.startswith("alias/"):
            return f"arn:aws:kms:{region}:{account}:key/{value}"
    return "*"


def _print(report: dict[str, Any]) -> None:
    console = stdout_console()
    verdict = (
        "ALLOWED"
        if report["allowed"]
        else ("DENIED (explicit deny)" if report["explicitDeny"] else "DENIED (implicit deny)")
    )
    lines = [
        f"Request:   {report['principal']} -> {report['action']} on {report['resource']}",
        f"Decision:  {verdict}",
        f"Decided by: {report['decidingStatement'] or report['decidedBy']}",
    ]
    if report["message"]:
        lines.append(f"AWS error: {report['message']}")
    lines.append("Policies that applied:")
    lines += [f"  {p['kind']}: {p['policy']}" for p in report["policies"]] or ["  (none)"]
    lines.append("Matching statements:")
    lines += [
        f"  {m['effect']:<5} {m['sid']}  ({m['kind']}: {m['policy']})" for m in report["matchingStatements"]
    ] or ["  (none)"]
    for line in lines:
        console.print(line, markup=False)


@app.command("explain")
def explain(
    event_id: Annotated[
        str | None, typer.Option("--event-id", metavar="ID", help="An audit event's eventID.")
    ] = None,
    principal: Annotated[
        str | None, typer.Option("--principal", metavar="ARN", help="The caller's ARN.")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", metavar="ACTION", help="e.g. kms:Decrypt.")
    ] = None,
    resource: Annotated[
        str | None, typer.Option("--resource", metavar="ARN", help="The resource's ARN.")
    ] = None,
    source_ip: Annotated[
        str, typer.Option("--source-ip", metavar="IP", help="aws:SourceIp of the request.")
    ] = "",
    region: Annotated[
        str, typer.Option("--region", metavar="REGION", help="aws:RequestedRegion.")
    ] = "us-east-1",
    as_json: AsJson = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Say which policies applied to a request and which statement decided. Exit 0: explained (allowed
    or denied); 1: event, principal or installation not found; 2: usage error."""
    asked = principal is not None or action is not None or resource is not None
    if event_id is not None and asked:
        raise usage_error("give either --event-id or --principal/--action/--resource, not both")
    if event_id is None and not (principal and action and resource):
        raise usage_error("give --event-id ID, or all of --principal ARN --action ACTION --resource ARN")
    if action is not None and not re.match(r"^[a-zA-Z0-9-]+:[A-Za-z0-9]+$", action):
        raise usage_error(f"--action {action!r} is not an action (service:Operation, e.g. kms:Decrypt)")
    settings = installation_settings(data_dir, database_url)
    reports = []
    with installation(settings) as engine:
        if event_id is not None:
            record, actions, resources = _from_event(engine, event_id)
            arn = record.get("userIdentity", {}).get("arn")
            if not arn:
                raise CliError(f"event {event_id} has no authenticated caller: nothing to explain")
            with engine.connect() as conn:
                caller = _principal(conn, arn)
            when = datetime.strptime(record["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            for each_action in actions:
                for each_resource in resources:
                    report = _explain_one(
                        engine,
                        caller,
                        each_action,
                        each_resource,
                        region=record.get("awsRegion", region),
                        source_ip=str(record.get("sourceIPAddress", "")),
                        when=when,
                    )
                    report["eventId"] = event_id
                    report["recordedError"] = record.get("errorCode", "")
                    reports.append(report)
        else:
            assert principal and action and resource
            with engine.connect() as conn:
                caller = _principal(conn, principal)
            reports.append(
                _explain_one(
                    engine,
                    caller,
                    action,
                    resource,
                    region=region,
                    source_ip=source_ip,
                    when=datetime.now(UTC),
                )
            )
    if as_json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
        return
    for report in reports:
        if report.get("eventId"):
            stdout_console().print(
                f"Event:     {report['eventId']} (recorded outcome: {report['recordedError'] or 'success'})",
                markup=False,
            )
        _print(report)


__all__ = ["app"]
