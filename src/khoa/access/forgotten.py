"""A deleted IAM user or role stops being named by the resource policies that named it.

AWS binds an IAM user or role named in a resource policy's ``Principal`` (or ``NotPrincipal``) to that
principal's unique ID when the policy is saved. Once the principal is deleted, the policy shows the
unique ID where the ARN was, and a new user or role created later with the same name is a stranger to
it: "if you delete and recreate the user or role, the relationship is broken" (IAM User Guide, AWS JSON
policy elements: Principal). Without this, anyone allowed to create users could delete-and-recreate
(or merely recreate) a name and inherit every key policy, trust policy and secret policy that named it.

Khoa evaluates principals by name, so it makes the same thing true at the moment of deletion: in the
same transaction that deletes the principal, every stored resource policy of every account that names
it (KMS key policies, role trust policies, Secrets Manager resource policies) gets the principal's
unique ID in place of each value that named it, as AWS then displays it; so does every KMS grant that
names it as grantee or retiring principal. A unique ID is never reused,
so the rewritten statement names nobody. Only ``Principal``/``NotPrincipal`` values change; a
condition on ``aws:PrincipalArn`` compares strings, in AWS as here, and is left as written.

Policies are kept as their writers sent them (GetKeyPolicy, GetResourcePolicy and GetRole return them
verbatim) and are read here as evaluation reads them, JSON-decoded: a value written with escapes
(``user/b\\u006fb``) names the principal as much as the plain one does, and is rewritten with it.
Names are compared exactly, as the evaluator and the check that a named principal exists compare
them: a case variant (``user/Bob`` for ``bob``) never named the principal, and cannot be saved
while no principal has that exact name.

A renamed user (a new name or path: a new ARN, the same unique ID) keeps what named it, and the old
name becomes free: every value that named the user by its old ARN names the new one instead
(:func:`follow_rename`), as AWS updates resource policies that name a renamed user as principal.
Otherwise whoever next took the old name, by CreateUser or by renaming themselves into it, would
inherit everything that named the user, and the user would lose it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Table, or_, select, update
from sqlalchemy.engine import Connection

from khoa.storage import schema

# Every stored document with Principal elements: (table, its key column, its policy column, whether
# the column holds a JSON map of policy documents by name, as Secrets Manager stores a secret's).
_POLICY_COLUMNS: tuple[tuple[Table, str, str, bool], ...] = (
    (schema.kms_keys, "key_id", "policy", False),
    (schema.iam_principals, "principal_id", "assume_role_policy", False),
    (schema.sm_secrets, "secret_id", "resource_policy", True),
)
_PRINCIPAL_ELEMENTS = ("Principal", "NotPrincipal")
# A JSON \uXXXX escape: the one way a policy's text can spell a name without containing it.
_UNICODE_ESCAPE = "\\u"
# Columns that hold one principal value each: a KMS grant's grantee and retiring principal.
_PRINCIPAL_COLUMNS: tuple[tuple[Table, str, str], ...] = (
    (schema.kms_grants, "grant_id", "grantee_principal"),
    (schema.kms_grants, "grant_id", "retiring_principal"),
)


def names_user(arn: str) -> Callable[[str], bool]:
    """Which principal values name the user ``arn`` (as the evaluator matches users: by ARN)."""
    return lambda value: value == arn


def names_role(account_id: str, name: str) -> Callable[[str], bool]:
    """Which principal values name role ``name`` of ``account_id`` (as the evaluator matches roles:
    by name, whatever the path: role names are unique in an account)."""
    prefix = f"arn:aws:iam::{account_id}:role/"
    return lambda value: value.startswith(prefix) and value.rsplit("/", 1)[-1] == name


def forget_principal(conn: Connection, name: str, names: Callable[[str], bool], unique_id: str) -> int:
    """In the caller's transaction: replace each ``"AWS"`` principal value that ``names`` the deleted
    principal (called ``name``) with its ``unique_id``, in every stored resource policy and grant;
    returns how many rows changed."""
    return _replace(conn, name, names, unique_id)


def follow_rename(conn: Connection, old_name: str, old_arn: str, new_arn: str) -> int:
    """In the caller's transaction: every principal value naming a user by ``old_arn`` (its name was
    ``old_name``) names it by ``new_arn`` instead; returns how many rows changed."""
    return _replace(conn, old_name, names_user(old_arn), new_arn)


def _replace(conn: Connection, name: str, names: Callable[[str], bool], replacement: str) -> int:
    """Replace each principal value ``names`` matches with ``replacement`` in every stored resource
    policy and grant.

    A policy is stored as its writer sent it and evaluated once JSON has decoded it, so a value that
    names the principal may be written with escapes: ``user/b\\u006fb`` is ``user/bob``. Only rows that
    can name it are read: a policy whose text contains ``name`` or any ``\\u`` escape (the only escape
    that can stand for a character of a user or role name; ``\\/`` and the others leave the name
    itself in the text), each decided on its decoded document. A grant column holds one plain value,
    so its text is the value."""
    changed = 0
    for table, key_name, policy_name, by_name in _POLICY_COLUMNS:
        key: Column[Any] = table.c[key_name]
        column: Column[Any] = table.c[policy_name]
        may_name = or_(
            column.contains(name, autoescape=True), column.contains(_UNICODE_ESCAPE, autoescape=True)
        )
        rows = conn.execute(select(key, column).where(may_name)).all()
        for row_key, text in rows:
            rewrite = _rewritten_map if by_name else _rewritten
            rewritten = rewrite(text, names, replacement)
            if rewritten is not None:
                conn.execute(update(table).where(key == row_key).values({policy_name: rewritten}))
                changed += 1
    for table, key_name, column_name in _PRINCIPAL_COLUMNS:
        key, column = table.c[key_name], table.c[column_name]
        rows = conn.execute(select(key, column).where(column.contains(name, autoescape=True))).all()
        for row_key, value in rows:
            if names(value):
                conn.execute(update(table).where(key == row_key).values({column_name: replacement}))
                changed += 1
    return changed


def _rewritten_map(text: str, names: Callable[[str], bool], replacement: str) -> str | None:
    """A JSON map of policy documents by name, each rewritten as by ``_rewritten``."""
    try:
        documents = json.loads(text)
    except ValueError:
        return None
    if not isinstance(documents, dict):
        return None
    replaced = False
    for name, document in documents.items():
        rewritten = _rewritten(document, names, replacement) if isinstance(document, str) else None
        if rewritten is not None:
            documents[name] = rewritten
            replaced = True
    return json.dumps(documents) if replaced else None


def _rewritten(text: str, names: Callable[[str], bool], replacement: str) -> str | None:
    """``text`` with the principal values ``names`` matches replaced (None: nothing to replace, or not
    a policy this can read: such a stored policy is already read as an explicit deny everywhere)."""
    try:
        document = json.loads(text)
    except ValueError:
        return None
    statements = document.get("Statement") if isinstance(document, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return None
    replaced = False
    for statement in statements:
        if not isinstance(statement, dict):
            continue
        for element in _PRINCIPAL_ELEMENTS:
            principals = statement.get(element)
            if not isinstance(principals, dict) or "AWS" not in principals:
                continue
            values = principals["AWS"]
            if isinstance(values, str) and names(values):
                principals["AWS"] = replacement
                replaced = True
            elif isinstance(values, list) and any(isinstance(v, str) and names(v) for v in values):
                principals["AWS"] = [replacement if isinstance(v, str) and names(v) else v for v in values]
                replaced = True
    return json.dumps(document, indent=2) if replaced else None
