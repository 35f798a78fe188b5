"""The IAM authorisation table: every IAM operation, the action(s) it is authorised as, the resource each
targets and the condition keys it offers, checked before the handler runs.

Each operation maps to one or more :class:`Step` s. A step names its action (``iam:<Operation>`` unless
it says otherwise), a *target* (the resource ARN) and the *keys* it adds to the request context:

- targets that exist are named by their real ARN, with their path, found by name; ones that do not
  (yet) exist by the ARN they would have (path ``/``, or the request's ``Path`` for Create*), so the
  answer to a caller without permission is the same whether or not the entity exists (AWS behaviour);
- operations on "my own" credentials without ``UserName`` (GetUser, *AccessKey*) target the caller's
  own user, or the account root's ARN when the root calls;
- List* operations target the path ARN AWS evaluates them on (``arn:aws:iam::<account>:user/<prefix>``),
  GetAccountAuthorizationDetails and SimulateCustomPolicy ``*``;
- the target's tags are offered as ``aws:ResourceTag/…`` and ``iam:ResourceTag/…`` (users, roles and
  customer-managed policies; groups have no tags), request tags as ``aws:RequestTag/…`` and
  ``aws:TagKeys`` (``aws:TagKeys`` also for Untag*), the policy being attached or detached as
  ``iam:PolicyARN``, and ``iam:PermissionsBoundary`` where AWS defines it: the boundary being set
  (Create*, Put*PermissionsBoundary) or the entity's current one (its inline and managed policy
  changes, Delete*PermissionsBoundary).

Handlers contain no authorisation; they use the entity rows found here (``ctx.extras``) through
:func:`khoa.services.iam.lookups.lookup_entity`, so they act on the entity that was authorised.
Targets are resolved through the store, and evaluated by the :class:`Authorizer`, both given to
:func:`table` by ``build_service``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.authorization import AuthorizationTable, Rule
from khoa.services.iam import errors
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.lookups import cached_entity
from khoa.services.iam.names import ENTITY_ARN, GROUP, ROLE, USER, entity_arn, parse_policy_arn, policy_arn
from khoa.services.iam.store import IamStore

Context = dict[str, list[str]]


@dataclass(frozen=True)
class Target:
    """The resource a step authorises: its ARN, whose tags are its resource tags, its boundary."""

    arn: str
    tags_owner: str | None = None
    boundary: str | None = None


Resolve = Callable[[IamStore, RequestContext, dict[str, Any]], Target | None]  # None: step does not apply
Keys = Callable[[dict[str, Any], Target], Context]


@dataclass(frozen=True)
class Step:
    """One authorisation of an operation: ``action`` on the resource ``target`` resolves to, with the
    resource's tags and the condition keys ``keys`` produce (evaluated lazily, only when needed)."""

    target: Resolve
    keys: tuple[Keys, ...] = ()
    action: str = ""  # "" means iam:<Operation>
    when: str = ""  # run only when this request parameter is present and not empty


# -- targets ---------------------------------------------------------------------------------------------


def _found(store: IamStore, ctx: RequestContext, kind: str, name: str) -> Target:
    row = cached_entity(store, ctx, kind, name)
    if row is None:
        return Target(entity_arn(ctx.account_id, kind, "/", name))
    return Target(
        row.arn,
        row.principal_id if kind != GROUP else None,
        row.permissions_boundary if kind != GROUP else None,
    )


def entity(kind: str, param: str) -> Resolve:
    """The user, group or role named by ``param``: its real ARN, or the ARN it would have."""

    def resolve(store: IamStore, ctx: RequestContext, params: dict[str, Any]) -> Target:
        return _found(store, ctx, kind, params[param])

    return resolve


def new_entity(kind: str, param: str) -> Resolve:
    """The ARN a Create* call would give the new user, group or role."""
    return lambda store, ctx, params: Target(
        entity_arn(ctx.account_id, kind, params.get("Path", "/"), params[param])
    )


def renamed(kind: str, param: str, new_name: str) -> Resolve:
    """For Update{User,Group}: the entity's ARN after the change, when it changes (AWS requires the
    permission on both the old and the new name)."""

    def resolve(store: IamStore, ctx: RequestContext, params: dict[str, Any]) -> Target | None:
        row = cached_entity(store, ctx, kind, params[param])
        if row is None:
            return None  # the first step authorised the ARN it would have; the handler reports it missing
        arn = entity_arn(
            ctx.account_id, kind, params.get("NewPath", row.path), params.get(new_name, row.name)
        )
        return None if arn == row.arn else Target(arn)

    return resolve


def user_or_caller(store: IamStore, ctx: RequestContext, params: dict[str, Any]) -> Target:
    """The user named by ``UserName``; without it the caller's own user (the root's ARN for the root)."""
    name = params.get("UserName")
    if name is not None:
        return _found(store, ctx, USER, name)
    principal = ctx.principal
    if principal.is_root:
        return Target(principal.arn)
    if principal.kind != "IAMUser":
        raise errors.needs_user_name()
    return _found(store, ctx, USER, principal.name)


def key_owner(store: IamStore, ctx: RequestContext, params: dict[str, Any]) -> Target:
    """GetAccessKeyLastUsed: the key's owner (user or root) in the caller's account; ``*`` when the key
    is not one of this account's long-term keys."""
    key = store.keys.find(ctx.account_id, params["AccessKeyId"])
    if key is None or key.principal_kind not in ("IAMUser", "Root"):
        return Target("*")
    if key.principal_kind == "Root":
        return Target(f"arn:aws:iam::{ctx.account_id}:root")
    return _found(store, ctx, USER, key.principal_name)


def policy(param: str) -> Resolve:
    """The managed policy ARN in ``param`` as given (its path is part of it); a customer-managed policy
    of the caller's account offers its tags. Policies of other accounts are not looked up."""

    def resolve(store: IamStore, ctx: RequestContext, params: dict[str, Any]) -> Target:
        arn = params[param]
        account, _path, _name = parse_policy_arn(arn)
        if account != ctx.account_id:
            return Target(arn)
        row = store.policies.find(arn)
        return Target(arn, row.policy_id if row is not None else None)

    return resolve


def new_policy(store: IamStore, ctx: RequestContext, params: dict[str, Any]) -> Target:
    return Target(policy_arn(ctx.account_id, params.get("Path", "/"), params["PolicyName"]))


def path_of(kind: str) -> Resolve:
    """List* operations: AWS evaluates them on the path ARN, e.g. ``arn:aws:iam::<account>:user/``."""
    return lambda store, ctx, params: Target(
        f"arn:aws:iam::{ctx.account_id}:{kind}{params.get('PathPrefix') or '/'}"
    )


def everything(store: IamStore, ctx: RequestContext, params: dict[str, Any]) -> Target:
    return Target("*")


def simulation_source(store: IamStore, ctx: RequestContext, params: dict[str, Any]) -> Target:
    """SimulatePrincipalPolicy: the PolicySourceArn as given (it must name a user, group or role)."""
    arn = params["PolicySourceArn"]
    if ENTITY_ARN.match(arn) is None:
        raise errors.invalid_input(
            f"Invalid ARN: {arn}. The PolicySourceArn must name a user, group or role."
        )
    return Target(arn)


# -- condition keys --------------------------------------------------------------------------------------


def request_tags(params: dict[str, Any], target: Target) -> Context:
    tags = params.get("Tags") or []
    context: Context = {f"aws:requesttag/{t['Key']}": [t["Value"]] for t in tags}
    if tags:
        context["aws:tagkeys"] = [t["Key"] for t in tags]
    return context


def tag_keys(params: dict[str, Any], target: Target) -> Context:
    return {"aws:tagkeys": list(params["TagKeys"])} if params.get("TagKeys") else {}


def policy_arn_key(params: dict[str, Any], target: Target) -> Context:
    return {"iam:policyarn": [params["PolicyArn"]]}


def new_boundary(params: dict[str, Any], target: Target) -> Context:
    boundary = params.get("PermissionsBoundary")
    return {"iam:permissionsboundary": [boundary]} if boundary else {}


def current_boundary(params: dict[str, Any], target: Target) -> Context:
    return {"iam:permissionsboundary": [target.boundary]} if target.boundary else {}


# -- the table -------------------------------------------------------------------------------------------

_LABEL = {USER: "User", GROUP: "Group", ROLE: "Role"}
_NAME = {USER: "UserName", GROUP: "GroupName", ROLE: "RoleName"}


def _steps() -> dict[str, tuple[Step, ...]]:
    user, group, role = entity(USER, "UserName"), entity(GROUP, "GroupName"), entity(ROLE, "RoleName")
    new_user, new_role = new_entity(USER, "UserName"), new_entity(ROLE, "RoleName")
    table: dict[str, tuple[Step, ...]] = {
        # users
        "CreateUser": (
            Step(new_user, (request_tags, new_boundary)),
            Step(new_user, (request_tags,), "iam:TagUser", when="Tags"),
            Step(
                new_entity(USER, "UserName"),
                (new_boundary,),
                "iam:PutUserPermissionsBoundary",
                when="PermissionsBoundary",
            ),
        ),
        "GetUser": (Step(user_or_caller),),
        "ListUsers": (Step(path_of(USER)),),
        "UpdateUser": (Step(user), Step(renamed(USER, "UserName", "NewUserName"))),
        "DeleteUser": (Step(user),),
        # groups and membership (authorised on the group, as AWS does)
        "CreateGroup": (Step(new_entity(GROUP, "GroupName")),),
        "GetGroup": (Step(group),),
        "ListGroups": (Step(path_of(GROUP)),),
        "UpdateGroup": (Step(group), Step(renamed(GROUP, "GroupName", "NewGroupName"))),
        "DeleteGroup": (Step(group),),
        "AddUserToGroup": (Step(group),),
        "RemoveUserFromGroup": (Step(group),),
        "ListGroupsForUser": (Step(user),),
        # roles
        "CreateRole": (
            Step(new_role, (request_tags, new_boundary)),
            Step(new_role, (request_tags,), "iam:TagRole", when="Tags"),
            Step(
                new_entity(ROLE, "RoleName"),
                (new_boundary,),
                "iam:PutRolePermissionsBoundary",
                when="PermissionsBoundary",
            ),
        ),
        "GetRole": (Step(role),),
        "ListRoles": (Step(path_of(ROLE)),),
        "UpdateRole": (Step(role),),
        "UpdateRoleDescription": (Step(role),),
        "UpdateAssumeRolePolicy": (Step(role),),
        "DeleteRole": (Step(role),),
        # access keys: the named user, else the caller's own
        "CreateAccessKey": (Step(user_or_caller),),
        "ListAccessKeys": (Step(user_or_caller),),
        "UpdateAccessKey": (Step(user_or_caller),),
        "DeleteAccessKey": (Step(user_or_caller),),
        "GetAccessKeyLastUsed": (Step(key_owner),),
        # customer-managed policies and their versions
        "CreatePolicy": (
            Step(new_policy, (request_tags,)),
            Step(new_policy, (request_tags,), "iam:TagPolicy", when="Tags"),
        ),
        "GetPolicy": (Step(policy("PolicyArn")),),
        "DeletePolicy": (Step(policy("PolicyArn")),),
        "ListPolicies": (Step(path_of("policy")),),
        "CreatePolicyVersion": (Step(policy("PolicyArn")),),
        "GetPolicyVersion": (Step(policy("PolicyArn")),),
        "ListPolicyVersions": (Step(policy("PolicyArn")),),
        "DeletePolicyVersion": (Step(policy("PolicyArn")),),
        "SetDefaultPolicyVersion": (Step(policy("PolicyArn")),),
        "ListEntitiesForPolicy": (Step(policy("PolicyArn")),),
        # permissions boundaries
        "PutUserPermissionsBoundary": (Step(user, (new_boundary,)),),
        "DeleteUserPermissionsBoundary": (Step(user, (current_boundary,)),),
        "PutRolePermissionsBoundary": (Step(role, (new_boundary,)),),
        "DeleteRolePermissionsBoundary": (Step(role, (current_boundary,)),),
        # tags
        "TagUser": (Step(user, (request_tags,)),),
        "UntagUser": (Step(user, (tag_keys,)),),
        "ListUserTags": (Step(user),),
        "TagRole": (Step(role, (request_tags,)),),
        "UntagRole": (Step(role, (tag_keys,)),),
        "ListRoleTags": (Step(role),),
        "TagPolicy": (Step(policy("PolicyArn"), (request_tags,)),),
        "UntagPolicy": (Step(policy("PolicyArn"), (tag_keys,)),),
        "ListPolicyTags": (Step(policy("PolicyArn")),),
        # the whole account, and simulation
        "GetAccountAuthorizationDetails": (Step(everything),),
        "SimulateCustomPolicy": (Step(everything),),
        "SimulatePrincipalPolicy": (Step(simulation_source),),
    }
    for kind, label in _LABEL.items():
        target = entity(kind, _NAME[kind])
        # iam:PermissionsBoundary (the entity's current boundary) is defined for users' and roles'
        # policy changes; groups have no boundary.
        bounded: tuple[Keys, ...] = (current_boundary,) if kind != GROUP else ()
        table[f"Put{label}Policy"] = (Step(target, bounded),)
        table[f"Get{label}Policy"] = (Step(target),)
        table[f"Delete{label}Policy"] = (Step(target, bounded),)
        table[f"List{label}Policies"] = (Step(target),)
        table[f"Attach{label}Policy"] = (Step(target, (policy_arn_key, *bounded)),)
        table[f"Detach{label}Policy"] = (Step(target, (policy_arn_key, *bounded)),)
        table[f"ListAttached{label}Policies"] = (Step(target),)
    return table


STEPS = _steps()


def _resource_tags(store: IamStore, owner_id: str) -> Context:
    context: Context = {}
    for tag in store.tags.of(owner_id):
        context[f"aws:resourcetag/{tag['Key']}"] = [tag["Value"]]
        context[f"iam:resourcetag/{tag['Key']}"] = [tag["Value"]]
    return context


def _run(iam: IamBackend, steps: tuple[Step, ...]) -> Callable[[RequestContext, dict[str, Any]], None]:
    def check(ctx: RequestContext, params: dict[str, Any]) -> None:
        for step in steps:
            if step.when and not params.get(step.when):
                continue
            target = step.target(iam.store, ctx, params)
            if target is not None:
                _authorize_step(iam, ctx, params, step, target)

    return check


def _authorize_step(
    iam: IamBackend, ctx: RequestContext, params: dict[str, Any], step: Step, target: Target
) -> None:
    def context() -> Context:
        # Evaluated only when policies must really be evaluated (not for the account root).
        facts: Context = _resource_tags(iam.store, target.tags_owner) if target.tags_owner else {}
        for keys in step.keys:
            facts.update(keys(params, target))
        return facts

    iam.authorizer.authorize(ctx, step.action or f"iam:{ctx.operation}", target.arn, context=context)


def table(iam: IamBackend) -> AuthorizationTable:
    """IAM's authorisation table, resolving targets through ``iam.store`` and evaluating them with
    ``iam.authorizer``."""
    rules = {}
    for operation, steps in STEPS.items():
        actions = tuple(dict.fromkeys(step.action or f"iam:{operation}" for step in steps))
        rules[operation] = Rule(actions, _run(iam, steps))
    return AuthorizationTable("iam", rules)
