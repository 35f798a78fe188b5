"""Where Organizations' SQL lives: organizations, member accounts, policies and their attachments.

Service control policies are read for evaluation by ``access.directory`` (cached with the caller's
policies); every write here is followed by the pipeline's revocation bump, so a new guardrail applies
to the next request on this node.
"""

from __future__ import annotations

import json
import secrets
import string
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, insert, select, update

from khoa.storage import schema
from khoa.storage.database import first_account

_ORGS = schema.org_organizations
_MEMBERS = schema.org_accounts
_POLICIES = schema.org_policies
_ATTACHED = schema.org_attachments
_ACCOUNTS = schema.accounts

SCP = "SERVICE_CONTROL_POLICY"
FULL_ACCESS_ID = "p-FullAWSAccess"
FULL_ACCESS_CONTENT = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}, indent=4
)
_ALNUM = string.ascii_lowercase + string.digits


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


def new_org_id() -> str:
    return f"o-{_random(10)}"


def new_root_id() -> str:
    return f"r-{_random(4)}"


def new_policy_id() -> str:
    return f"p-{_random(8)}"


def _attach_full_access(conn: Connection, org_id: str, target_id: str) -> None:
    conn.execute(insert(_ATTACHED).values(org_id=org_id, policy_id=FULL_ACCESS_ID, target_id=target_id))


def join(conn: Connection, org_id: str, account_id: str, method: str, now: float) -> None:
    """Add ``account_id`` to the organization with FullAWSAccess attached, as AWS does for a new member.

    Only on that organization's own management account's action: its CreateOrganization (the account
    itself) or the operator's ``khoa account create`` for the installation's first account's
    organization (:func:`join_installation_organization`). Never for whoever created an organization
    first, or a tenant's organization would govern accounts it was never given."""
    conn.execute(
        insert(_MEMBERS).values(account_id=account_id, org_id=org_id, joined_method=method, joined_at=now)
    )
    _attach_full_access(conn, org_id, account_id)


def join_installation_organization(engine: Engine, account_id: str, now: float) -> str | None:
    """``khoa account create``: a new account joins the organization whose management account is the
    installation's first account, as AWS's CreateAccount called by that account would add it. Returns
    the organization's id, or None when the first account manages none.

    Never any other organization: any account (a tenant) may create one, as on AWS, but an account
    joins a tenant's organization only through that organization's own management account, which
    Khoa offers no way to do (no CreateAccount, no invitations), so a tenant's organization holds its
    management account alone."""
    with engine.begin() as conn:
        management = first_account(conn)
        if management is None or management == account_id:
            return None
        org_id = conn.execute(
            select(_ORGS.c.org_id).where(_ORGS.c.management_account_id == management)
        ).scalar()
        if org_id is None:
            return None
        member = conn.execute(select(_MEMBERS.c.org_id).where(_MEMBERS.c.account_id == account_id)).scalar()
        if member is not None:
            return str(member)  # already in one (an account is in one organization at most)
        join(conn, org_id, account_id, "CREATED", now)
    return str(org_id)


class OrganizationStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- organizations and accounts ----------------------------------------------------------------

    def organization_of(self, account_id: str) -> Row[Any] | None:
        """The organization ``account_id`` belongs to (as management account or member)."""
        with self._engine.connect() as conn:
            return conn.execute(
                select(_ORGS)
                .join(_MEMBERS, _MEMBERS.c.org_id == _ORGS.c.org_id)
                .where(_MEMBERS.c.account_id == account_id)
            ).first()

    def create_organization(self, account_id: str, feature_set: str, now: float) -> Row[Any] | None:
        """Create an organization managed by ``account_id``; None if the account is already in one."""
        org_id, root_id = new_org_id(), new_root_id()
        with self._engine.begin() as conn:
            if conn.execute(select(_MEMBERS.c.org_id).where(_MEMBERS.c.account_id == account_id)).first():
                return None
            conn.execute(
                insert(_ORGS).values(
                    org_id=org_id,
                    management_account_id=account_id,
                    root_id=root_id,
                    feature_set=feature_set,
                    scp_enabled=False,
                    created_at=now,
                )
            )
            conn.execute(
                insert(_POLICIES).values(
                    org_id=org_id,
                    policy_id=FULL_ACCESS_ID,
                    name="FullAWSAccess",
                    description="Allows access to every operation",
                    policy_type=SCP,
                    content=FULL_ACCESS_CONTENT,
                    aws_managed=True,
                    created_at=now,
                )
            )
            _attach_full_access(conn, org_id, root_id)
            join(conn, org_id, account_id, "INVITED", now)
            return conn.execute(select(_ORGS).where(_ORGS.c.org_id == org_id)).first()

    def accounts(self, org_id: str) -> list[Row[Any]]:
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    select(_MEMBERS, _ACCOUNTS.c.name)
                    .join(_ACCOUNTS, _ACCOUNTS.c.account_id == _MEMBERS.c.account_id, isouter=True)
                    .where(_MEMBERS.c.org_id == org_id)
                    .order_by(_MEMBERS.c.joined_at, _MEMBERS.c.account_id)
                ).all()
            )

    def set_scp_enabled(self, org_id: str, enabled: bool) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(_ORGS).where(_ORGS.c.org_id == org_id).values(scp_enabled=enabled))

    # -- policies -----------------------------------------------------------------------------------

    def policies(self, org_id: str, policy_type: str) -> list[Row[Any]]:
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    select(_POLICIES)
                    .where(_POLICIES.c.org_id == org_id, _POLICIES.c.policy_type == policy_type)
                    .order_by(_POLICIES.c.created_at, _POLICIES.c.policy_id)
                ).all()
            )

    def policy(self, org_id: str, policy_id: str) -> Row[Any] | None:
        with self._engine.connect() as conn:
            return conn.execute(
                select(_POLICIES).where(_POLICIES.c.org_id == org_id, _POLICIES.c.policy_id == policy_id)
            ).first()

    def name_taken(self, org_id: str, name: str, other_than: str = "") -> bool:
        with self._engine.connect() as conn:
            return (
                conn.execute(
                    select(_POLICIES.c.policy_id).where(
                        _POLICIES.c.org_id == org_id,
                        _POLICIES.c.name == name,
                        _POLICIES.c.policy_id != other_than,
                    )
                ).first()
                is not None
            )

    def create_policy(self, org_id: str, values: dict[str, Any], now: float) -> str:
        policy_id = new_policy_id()
        with self._engine.begin() as conn:
            conn.execute(
                insert(_POLICIES).values(
                    org_id=org_id, policy_id=policy_id, aws_managed=False, created_at=now, **values
                )
            )
        return policy_id

    def update_policy(self, org_id: str, policy_id: str, values: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(_POLICIES)
                .where(_POLICIES.c.org_id == org_id, _POLICIES.c.policy_id == policy_id)
                .values(**values)
            )

    def delete_policy(self, org_id: str, policy_id: str) -> bool:
        """Delete an unattached policy; False (nothing deleted) if it is attached somewhere."""
        with self._engine.begin() as conn:
            if conn.execute(
                select(_ATTACHED.c.target_id).where(
                    _ATTACHED.c.org_id == org_id, _ATTACHED.c.policy_id == policy_id
                )
            ).first():
                return False
            conn.execute(
                delete(_POLICIES).where(_POLICIES.c.org_id == org_id, _POLICIES.c.policy_id == policy_id)
            )
        return True

    # -- attachments --------------------------------------------------------------------------------

    def targets(self, org_id: str, policy_id: str) -> list[str]:
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    select(_ATTACHED.c.target_id)
                    .where(_ATTACHED.c.org_id == org_id, _ATTACHED.c.policy_id == policy_id)
                    .order_by(_ATTACHED.c.target_id)
                ).scalars()
            )

    def policies_for_target(self, org_id: str, target_id: str, policy_type: str) -> list[Row[Any]]:
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    select(_POLICIES)
                    .join(
                        _ATTACHED,
                        (_ATTACHED.c.org_id == _POLICIES.c.org_id)
                        & (_ATTACHED.c.policy_id == _POLICIES.c.policy_id),
                    )
                    .where(_ATTACHED.c.org_id == org_id, _ATTACHED.c.target_id == target_id)
                    .where(_POLICIES.c.policy_type == policy_type)
                    .order_by(_POLICIES.c.created_at, _POLICIES.c.policy_id)
                ).all()
            )

    def attach(self, org_id: str, policy_id: str, target_id: str) -> bool:
        """Attach; False if it already was."""
        with self._engine.begin() as conn:
            if conn.execute(
                select(_ATTACHED.c.policy_id).where(
                    _ATTACHED.c.org_id == org_id,
                    _ATTACHED.c.policy_id == policy_id,
                    _ATTACHED.c.target_id == target_id,
                )
            ).first():
                return False
            conn.execute(insert(_ATTACHED).values(org_id=org_id, policy_id=policy_id, target_id=target_id))
        return True

    def detach(self, org_id: str, policy_id: str, target_id: str, policy_type: str) -> str:
        """Detach: "detached", "not-attached", or "last" (the target would be left without a policy of
        its type, which AWS refuses)."""
        with self._engine.begin() as conn:
            attached = conn.execute(
                select(_ATTACHED.c.policy_id)
                .join(
                    _POLICIES,
                    (_ATTACHED.c.org_id == _POLICIES.c.org_id)
                    & (_ATTACHED.c.policy_id == _POLICIES.c.policy_id),
                )
                .where(_ATTACHED.c.org_id == org_id, _ATTACHED.c.target_id == target_id)
                .where(_POLICIES.c.policy_type == policy_type)
            ).scalars()
            ids = set(attached)
            if policy_id not in ids:
                return "not-attached"
            if len(ids) == 1:
                return "last"
            conn.execute(
                delete(_ATTACHED).where(
                    _ATTACHED.c.org_id == org_id,
                    _ATTACHED.c.policy_id == policy_id,
                    _ATTACHED.c.target_id == target_id,
                )
            )
        return "detached"
