"""The leak store's SQL on SQLite and PostgreSQL alike: rows written twice stay one, matches are the
account's only, statuses come from the resources, settling marks what stopped working, the keyset
sweeps page, and a token bucket is shared."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import Engine, insert

from khoa.crypto.barrier import Barrier
from khoa.crypto.fingerprint import Fingerprinter
from khoa.services.leaks.store import LeakStore
from khoa.storage import fingerprints, schema

ACCOUNT, OTHER = "111122223333", "444455556666"


def _secret(store_engine: Engine, version_ids: list[str], stages: dict[str, str]) -> tuple[str, str]:
    secret_id = str(uuid.uuid4())
    arn = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:s-{secret_id[:6]}"
    with store_engine.begin() as conn:
        conn.execute(
            insert(schema.sm_secrets).values(
                secret_id=secret_id,
                account_id=ACCOUNT,
                region="us-east-1",
                name=f"s-{secret_id}",
                arn=arn,
                created_at=time.time(),
                last_changed_at=time.time(),
                rotation_enabled=False,
            )
        )
        for version_id in version_ids:
            conn.execute(
                insert(schema.sm_versions).values(
                    secret_id=secret_id,
                    version_id=version_id,
                    created_at=time.time(),
                    value_kind="string",
                    kms_key_arn="k",
                    encrypted_data_key=b"k",
                    encrypted_value=b"v",
                )
            )
        for stage, version_id in stages.items():
            conn.execute(
                insert(schema.sm_stages).values(secret_id=secret_id, stage=stage, version_id=version_id)
            )
    return secret_id, arn


def test_fingerprints_match_within_the_account_with_the_resource_state(store_engine: Engine) -> None:
    store = LeakStore(store_engine)
    secret_id, arn = _secret(store_engine, ["v1", "v2"], {"AWSCURRENT": "v2"})
    for version_id, digest in (("v1", "a" * 64), ("v2", "b" * 64)):
        resource = fingerprints.Resource(
            ACCOUNT, "us-east-1", fingerprints.SECRET, secret_id, arn, version_id
        )
        with store_engine.begin() as conn:
            fingerprints.add(conn, resource, [(None, digest)], 1.0)
            fingerprints.add(conn, resource, [(None, digest)], 2.0)  # again: still one row
    found = store.matches(ACCOUNT, ["a" * 64, "b" * 64, "c" * 64])
    assert sorted((m.version_id, m.stages) for m in found) == [("v1", []), ("v2", ["AWSCURRENT"])]
    assert store.matches(OTHER, ["a" * 64, "b" * 64]) == []
    assert store.settle(50.0) == 1  # v1 has no label: former since now
    assert {m.version_id: m.invalid_since for m in store.matches(ACCOUNT, ["a" * 64, "b" * 64])} == {
        "v1": 50.0,
        "v2": None,
    }
    assert store.settle(60.0) == 0
    with store_engine.begin() as conn:
        fingerprints.labels_moved(conn, secret_id, {"AWSCURRENT": "v2"}, {"AWSCURRENT": "v1"}, 70.0)
    states = {m.version_id: m.invalid_since for m in store.matches(ACCOUNT, ["a" * 64, "b" * 64])}
    assert states == {"v1": None, "v2": 70.0}


def _parameter(store_engine: Engine, modified_at: list[float]) -> tuple[str, str]:
    """A String parameter whose version n (from 1) was written at ``modified_at[n - 1]``."""
    param_id = str(uuid.uuid4())
    with store_engine.begin() as conn:
        conn.execute(
            insert(schema.ssm_parameters).values(
                param_id=param_id,
                account_id=ACCOUNT,
                region="us-east-1",
                name=f"/p/{param_id}",
                parent_path="/p",
                version=len(modified_at),
                tier="Standard",
            )
        )
        for version, at in enumerate(modified_at, start=1):
            conn.execute(
                insert(schema.ssm_parameter_versions).values(
                    param_id=param_id,
                    version=version,
                    param_type="String",
                    value="v",
                    data_type="text",
                    tier="Standard",
                    modified_at=at,
                    modified_by="test",
                )
            )
    return param_id, f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/p/{param_id}"


def test_a_parameter_match_is_superseded_when_a_later_version_was_first_written(store_engine: Engine) -> None:
    store = LeakStore(store_engine)
    several, several_arn = _parameter(store_engine, [10.0, 30.0, 20.0, 40.0])  # version 3 written before 2
    closed, closed_arn = _parameter(store_engine, [10.0, 15.0])
    digests = {}
    for param_id, arn, version, invalid_since in (
        (several, several_arn, "1", None),
        (several, several_arn, "2", None),
        (several, several_arn, "4", None),
        (closed, closed_arn, "1", 12.0),  # its write recorded when: no lookup
        ("deleted", "arn:aws:ssm:us-east-1:111122223333:parameter/gone", "1", None),
    ):
        digest = f"{len(digests):064d}"
        digests[digest] = (param_id, version)
        resource = fingerprints.Resource(ACCOUNT, "us-east-1", fingerprints.PARAMETER, param_id, arn, version)
        with store_engine.begin() as conn:
            fingerprints.add(conn, resource, [(None, digest)], 1.0, invalid_since)
    found = {
        (m.resource_id, m.version_id): (m.current_version, m.superseded_at)
        for m in store.matches(ACCOUNT, list(digests))
    }
    assert found == {
        (several, "1"): (4, 20.0),  # the earliest write of a later version
        (several, "2"): (4, 20.0),
        (several, "4"): (4, None),  # the latest
        (closed, "1"): (2, None),
        ("deleted", "1"): (None, None),
    }


def test_the_sweeps_page_in_keyset_order(store_engine: Engine) -> None:
    store = LeakStore(store_engine)
    _secret(store_engine, ["v1", "v2", "v3"], {"AWSCURRENT": "v3"})
    first = store.secret_versions_after(None, 2)
    rest = store.secret_versions_after((first[-1].secret_id, first[-1].version_id), 2)
    assert [r.version_id for r in first + rest] == ["v1", "v2", "v3"]
    assert not any(r.fingerprinted for r in first + rest)
    assert store.parameter_versions_after(None, 10) == []
    assert store.parameter_versions_after(("x", 1), 10) == []
    assert store.unfingerprinted_keys(10) == [] and store.unfingerprinted_sessions(time.time(), 10) == []


def test_a_bucket_is_shared_and_refills(store_engine: Engine) -> None:
    one, two = LeakStore(store_engine), LeakStore(store_engine)  # two processes' stores
    assert one.take_token("k", 100.0, 2.0, 1.0)
    assert two.take_token("k", 100.0, 2.0, 1.0)
    assert not one.take_token("k", 100.0, 2.0, 1.0)
    assert two.take_token("k", 101.0, 2.0, 1.0)
    assert not two.take_token("k", 101.5, 2.0, 1.0)


def test_the_fingerprint_key_is_made_once_and_sealed(store_engine: Engine) -> None:
    barrier = Barrier(bytes(32))
    first: Any = fingerprints.load_fingerprinter(store_engine, barrier)
    again = fingerprints.load_fingerprinter(store_engine, barrier)
    assert isinstance(first, Fingerprinter)
    assert first.digest("x") == again.digest("x")
    with store_engine.connect() as conn:
        stored = conn.execute(schema.meta.select().where(schema.meta.c.name == "leak_fingerprint_key")).one()
    assert len(stored.value) > 32  # sealed (format byte, nonce, tag), not the key


def test_key_ids_and_session_tokens_are_found_by_the_credentials_rows(store_engine: Engine) -> None:
    """A key id is found by the credential's rows' key id (one match per credential, however many rows
    it has; not another account's), a session token by the digest the unexpired session keeps."""
    store = LeakStore(store_engine)
    user_arn = f"arn:aws:iam::{ACCOUNT}:user/u"
    key = fingerprints.Resource(
        ACCOUNT,
        "",
        fingerprints.ACCESS_KEY,
        "AKIAKEYID00000000001",
        user_arn,
        access_key_id="AKIAKEYID00000000001",
    )
    theirs = fingerprints.Resource(
        OTHER, "", fingerprints.ACCESS_KEY, "AKIAKEYID00000000002", "x", access_key_id="AKIAKEYID00000000002"
    )
    with store_engine.begin() as conn:
        fingerprints.add(conn, key, [(None, "d" * 64), (None, "e" * 64)], 1.0)  # its secret's, an old id's
        fingerprints.add(conn, theirs, [(None, "f" * 64)], 1.0)
        for access_key_id, expires_at, token in (("ASIALIVE", 200.0, "1" * 64), ("ASIAGONE", 50.0, "2" * 64)):
            conn.execute(
                insert(schema.sts_sessions).values(
                    access_key_id=access_key_id,
                    account_id=ACCOUNT,
                    secret_sealed=b"s",
                    token_digest=token,
                    role_id="AROA1",
                    role_arn=f"arn:aws:iam::{ACCOUNT}:role/r",
                    session_name="s",
                    created_at=1.0,
                    expires_at=expires_at,
                )
            )
    found = store.matches(
        ACCOUNT,
        [],
        key_ids=["AKIAKEYID00000000001", "AKIAKEYID00000000002"],
        token_digests=["1" * 64, "2" * 64],
        now=100.0,
    )
    assert sorted((m.matched_on, m.fingerprint, m.resource_id, m.resource_arn) for m in found) == [
        ("access-key-id", "AKIAKEYID00000000001", "AKIAKEYID00000000001", user_arn),
        ("session-token", "1" * 64, "ASIALIVE", f"arn:aws:iam::{ACCOUNT}:role/r"),
    ]
    states = {m.resource_id: (m.key_status, m.session_exists, m.expires_at) for m in found}
    assert states == {"AKIAKEYID00000000001": (None, False, None), "ASIALIVE": (None, True, 200.0)}
    assert store.matches(ACCOUNT, [], key_ids=[], token_digests=[], now=100.0) == []
