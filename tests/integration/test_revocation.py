"""Revocation through Khoa's own API takes effect at once on the node that made it (issue 11, 11c).

Credentials and policies are cached per process (KHOA_CREDENTIAL_CACHE_SECONDS,
KHOA_POLICY_CACHE_SECONDS). A revoking call bumps the node's revocation epoch, and every worker process
drops its caches before its next lookup: the very next call with a deleted key, or after a detached
policy, is refused, on one worker or several. The caches are long here (60 s) so that only the epoch
can explain a prompt refusal.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.test_auth import call
from tests.support.errors import code_of
from tests.support.identity import Caller, new_user, session
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

LONG_CACHES = {
    "KHOA_CREDENTIAL_CACHE_SECONDS": "60",
    "KHOA_POLICY_CACHE_SECONDS": "60",
    "KHOA_METADATA_CACHE_SECONDS": "60",
}
READ_SECRETS = {"Effect": "Allow", "Action": "secretsmanager:DescribeSecret", "Resource": "*"}
MIN_CALLS_PER_WORKER = 3


@dataclass
class Node:
    server: KhoaServer
    workers: int


# One server of each kind for the whole module: every test works on a secret, user, policy, group, key
# or parameter of its own (unique names), so the tests do not meet, and each fills the caches itself
# before it revokes anything. Both servers re-check open change streams every RECHECK seconds; the
# stream tests (below) use the two-worker one, and no other test depends on that setting.
RECHECK = 1.0


def _start(tmp_path_factory: pytest.TempPathFactory, workers: int) -> KhoaServer:
    data = tmp_path_factory.mktemp(f"revocation-{workers}w") / "data"
    env = {**LONG_CACHES, "KHOA_STREAM_RECHECK_SECONDS": str(RECHECK)}
    args = ["--workers", str(workers)] if workers > 1 else []
    return KhoaServer(data, extra_env=env, extra_args=args).start()


@pytest.fixture(scope="module")
def one_worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = _start(tmp_path_factory, 1)
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def two_worker_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = _start(tmp_path_factory, 2)
    yield instance
    instance.stop()


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def node(request: pytest.FixtureRequest) -> Node:
    workers: int = request.param
    server = request.getfixturevalue("one_worker_server" if workers == 1 else "two_worker_server")
    return Node(server, workers)


def _secret(server: KhoaServer) -> str:
    name = f"revocation/{uuid.uuid4().hex[:8]}"
    server.client("secretsmanager").create_secret(Name=name, SecretString="s")
    return name


def _by_worker(node: Node, caller: Caller, secret: str) -> dict[str, frozenset[str]]:
    """DescribeSecret as ``caller`` over new connections until every worker process answered a few
    times; each worker's outcomes ("ok" or the error code). The test harness names the worker."""
    return _each_worker(node, caller, "secretsmanager", "secretsmanager.DescribeSecret", {"SecretId": secret})


def _each_worker(
    node: Node, caller: Caller, service: str, target: str, payload: dict[str, object]
) -> dict[str, frozenset[str]]:
    """``target`` as ``caller`` over new connections until every worker process answered a few
    times; each worker's outcomes ("ok" or the error code). The test harness names the worker."""
    seen: dict[str, list[str]] = {}
    for _ in range(400):
        reply = call(
            node.server.endpoint,
            target,
            payload,
            service=service,
            access_key=caller.access_key_id,
            secret_key=caller.secret_access_key,
        )
        outcome = "ok" if reply.status == 200 else reply.code
        seen.setdefault(reply.headers["x-khoa-test-worker"], []).append(outcome)
        if len(seen) == node.workers and all(len(v) >= MIN_CALLS_PER_WORKER for v in seen.values()):
            return {worker: frozenset(outcomes) for worker, outcomes in seen.items()}
    raise AssertionError(f"not every worker answered: {seen}")


def test_a_deleted_access_key_fails_on_the_very_next_call(node: Node) -> None:
    iam = node.server.client("iam")
    secret = _secret(node.server)
    user = new_user(node.server, iam, READ_SECRETS)
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"ok"})}  # every worker has cached it
    iam.delete_access_key(UserName=user.name, AccessKeyId=user.access_key_id)
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"UnrecognizedClientException"})}
    sts = user.client("sts")
    assert code_of(sts.get_caller_identity) == "InvalidClientTokenId"


def test_an_inactive_access_key_fails_on_the_very_next_call(node: Node) -> None:
    iam = node.server.client("iam")
    secret = _secret(node.server)
    user = new_user(node.server, iam, READ_SECRETS)
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"ok"})}
    iam.update_access_key(UserName=user.name, AccessKeyId=user.access_key_id, Status="Inactive")
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"UnrecognizedClientException"})}
    iam.update_access_key(UserName=user.name, AccessKeyId=user.access_key_id, Status="Active")
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"ok"})}


def test_a_detached_policy_is_denied_on_the_very_next_call(node: Node) -> None:
    iam = node.server.client("iam")
    secret = _secret(node.server)
    policy_arn = iam.create_policy(
        PolicyName=f"read-{uuid.uuid4().hex[:8]}",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [READ_SECRETS]}),
    )["Policy"]["Arn"]
    user = new_user(node.server, iam)
    iam.attach_user_policy(UserName=user.name, PolicyArn=policy_arn)
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"ok"})}
    iam.detach_user_policy(UserName=user.name, PolicyArn=policy_arn)
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"AccessDeniedException"})}


def test_a_deleted_inline_policy_and_a_removed_group_membership_are_denied_at_once(node: Node) -> None:
    iam = node.server.client("iam")
    secret = _secret(node.server)
    user = new_user(node.server, iam, READ_SECRETS)
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"ok"})}
    iam.delete_user_policy(UserName=user.name, PolicyName="inline")
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"AccessDeniedException"})}

    group = f"readers-{uuid.uuid4().hex[:8]}"
    iam.create_group(GroupName=group)
    iam.put_group_policy(
        GroupName=group,
        PolicyName="read",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [READ_SECRETS]}),
    )
    iam.add_user_to_group(GroupName=group, UserName=user.name)
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"ok"})}
    iam.remove_user_from_group(GroupName=group, UserName=user.name)
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"AccessDeniedException"})}


def test_a_secret_resource_policy_deny_applies_at_once(node: Node) -> None:
    iam = node.server.client("iam")
    secret = _secret(node.server)
    user = new_user(node.server, iam, READ_SECRETS)
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"ok"})}
    deny = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": {"AWS": user.arn},
                "Action": "secretsmanager:DescribeSecret",
                "Resource": "*",
            }
        ],
    }
    node.server.client("secretsmanager").put_resource_policy(SecretId=secret, ResourcePolicy=json.dumps(deny))
    assert set(_by_worker(node, user, secret).values()) == {frozenset({"AccessDeniedException"})}


def _tagged_for_blue(action: str) -> dict[str, object]:
    return {
        "Effect": "Allow",
        "Action": action,
        "Resource": "*",
        "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}},
    }


def test_a_removed_resource_tag_denies_on_the_very_next_call(node: Node) -> None:
    """A resource's tags are policy facts: taking the tag an ABAC policy asks for takes the access
    away at once, on every worker, for a KMS key, a secret and a parameter alike."""
    server = node.server
    kms, sm, ssm = server.client("kms"), server.client("secretsmanager"), server.client("ssm")
    key_id = kms.create_key(Tags=[{"TagKey": "team", "TagValue": "blue"}])["KeyMetadata"]["KeyId"]
    secret = _secret(server)
    sm.tag_resource(SecretId=secret, Tags=[{"Key": "team", "Value": "blue"}])
    parameter = f"/revocation/{uuid.uuid4().hex[:8]}"
    ssm.put_parameter(Name=parameter, Value="v", Type="String", Tags=[{"Key": "team", "Value": "blue"}])
    user = new_user(
        server,
        server.client("iam"),
        _tagged_for_blue("kms:DescribeKey"),
        _tagged_for_blue("secretsmanager:DescribeSecret"),
        _tagged_for_blue("ssm:GetParameter"),
    )
    calls = {
        "kms": (
            "TrentService.DescribeKey",
            {"KeyId": key_id},
            lambda: kms.untag_resource(KeyId=key_id, TagKeys=["team"]),
        ),
        "secretsmanager": (
            "secretsmanager.DescribeSecret",
            {"SecretId": secret},
            lambda: sm.untag_resource(SecretId=secret, TagKeys=["team"]),
        ),
        "ssm": (
            "AmazonSSM.GetParameter",
            {"Name": parameter},
            lambda: ssm.remove_tags_from_resource(
                ResourceType="Parameter", ResourceId=parameter, TagKeys=["team"]
            ),
        ),
    }
    for service, (target, payload, untag) in calls.items():
        assert set(_each_worker(node, user, service, target, payload).values()) == {frozenset({"ok"})}, (
            service
        )
        untag()
        denied = set(_each_worker(node, user, service, target, payload).values())
        assert denied == {frozenset({"AccessDeniedException"})}, service


def test_cache_lifetimes_are_settings(tmp_path: Path) -> None:
    """Out of range lifetimes refuse to start with a one-line reason."""
    instance = KhoaServer(tmp_path / "data", extra_env={"KHOA_CREDENTIAL_CACHE_SECONDS": "-1"})
    result = subprocess.run(
        [sys.executable, "-m", "khoa", "server", "--port", str(instance.port), "--data-dir", str(tmp_path)],
        env=instance.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "KHOA_CREDENTIAL_CACHE_SECONDS" in result.stderr


# -- change streams (finding 9) ----------------------------------------------------------------------


class Subscription:
    """An open ``/_khoa/events`` stream read on a thread: its lines (with arrival times) and its end."""

    def __init__(self, server: KhoaServer, secret: str, caller: Caller) -> None:
        url = f"{server.endpoint}/_khoa/events?SecretId={urllib.parse.quote(secret, safe='')}"
        request = AWSRequest(method="GET", url=url, headers={"Accept": "text/event-stream"})
        credentials = Credentials(caller.access_key_id, caller.secret_access_key, caller.session_token)
        SigV4Auth(credentials, "secretsmanager", REGION).add_auth(request)
        self.response = urllib.request.urlopen(
            urllib.request.Request(url, headers=dict(request.headers.items())), timeout=60
        )
        self.lines: list[tuple[float, str]] = []
        self.ended_at: float | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self.response:
                self.lines.append((time.monotonic(), raw.decode().rstrip("\n")))
        except OSError:
            pass
        self.ended_at = time.monotonic()

    def events(self) -> list[str]:
        return [line[7:] for _, line in self.lines if line.startswith("event: ")]

    def wait(self, check: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return True
            time.sleep(0.05)
        return check()

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def streaming(two_worker_server: KhoaServer) -> KhoaServer:
    """The module's two-worker server (long caches, streams re-checked every RECHECK seconds). The
    session test moves its clock forward: nothing the other tests make here depends on the clock."""
    return two_worker_server


def _subscribed(server: KhoaServer, caller: Caller, secret: str) -> Subscription:
    subscription = Subscription(server, secret, caller)
    assert subscription.wait(lambda: any(line == ": subscribed" for _, line in subscription.lines), 10)
    sm = server.client("secretsmanager")
    sm.put_secret_value(SecretId=secret, SecretString="delivered")
    assert subscription.wait(lambda: "VersionCreated" in subscription.events(), 10), subscription.lines
    return subscription


def test_a_stream_closes_when_its_access_key_is_deleted(streaming: KhoaServer) -> None:
    iam = streaming.client("iam")
    secret = _secret(streaming)
    user = new_user(streaming, iam, READ_SECRETS)
    subscription = _subscribed(streaming, user, secret)
    try:
        revoked_at = time.monotonic()
        iam.delete_access_key(UserName=user.name, AccessKeyId=user.access_key_id)
        assert subscription.wait(lambda: subscription.ended_at is not None, RECHECK + 5)
        assert subscription.ended_at is not None and subscription.ended_at - revoked_at < RECHECK + 2
        assert subscription.lines[-1][1] in ("", ": access revoked")
        delivered = len(subscription.events())
        streaming.client("secretsmanager").put_secret_value(SecretId=secret, SecretString="after")
        time.sleep(RECHECK + 0.5)
        assert len(subscription.events()) == delivered  # nothing after the revocation
    finally:
        subscription.close()


def test_a_stream_closes_when_its_policy_is_deleted(streaming: KhoaServer) -> None:
    iam = streaming.client("iam")
    secret = _secret(streaming)
    user = new_user(streaming, iam, READ_SECRETS)
    subscription = _subscribed(streaming, user, secret)
    try:
        iam.delete_user_policy(UserName=user.name, PolicyName="inline")
        assert subscription.wait(lambda: subscription.ended_at is not None, RECHECK + 5)
        delivered = len(subscription.events())
        streaming.client("secretsmanager").put_secret_value(SecretId=secret, SecretString="after")
        time.sleep(RECHECK + 0.5)
        assert len(subscription.events()) == delivered
        # and it cannot come back
        with pytest.raises(urllib.error.HTTPError) as refused:
            Subscription(streaming, secret, user)
        assert b"AccessDenied" in refused.value.read()
    finally:
        subscription.close()


def test_a_session_stream_closes_when_the_session_expires(streaming: KhoaServer) -> None:
    """No revocation call at all: the periodic re-check notices the session's end."""
    iam = streaming.client("iam")
    secret = _secret(streaming)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(
        RoleName=f"streamer-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(trust)
    )
    iam.put_role_policy(
        RoleName=role["Role"]["RoleName"],
        PolicyName="read",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [READ_SECRETS]}),
    )
    assumer = new_user(streaming, iam, {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"})
    caller = session(assumer, role["Role"]["Arn"], DurationSeconds=900)
    subscription = _subscribed(streaming, caller, secret)
    try:
        time.sleep(RECHECK + 0.5)
        assert subscription.ended_at is None  # still allowed: the stream goes on
        streaming.advance_clock(901)
        assert subscription.wait(lambda: subscription.ended_at is not None, RECHECK + 5)
    finally:
        subscription.close()
