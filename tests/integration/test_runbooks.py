"""The runbooks' commands work as written: each ```sh block of docs/runbooks/*.md runs, in order, in a
POSIX shell (``sh -e``) against a real server, with the installed ``aws`` and ``khoa`` commands on its
PATH (each run forked from an interpreter that imported them once: see "started warm" below) and the
runbook's ``$CAPITALS`` set by the test to a situation made for it (here: a repository holding a
leaked database password, an access key pair and a SecureString value). After the last block the test
checks that the runbook did what it says.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support import pgcluster
from tests.support.cli_here import create_account, register
from tests.support.identity import Caller, eventually, new_user
from tests.support.pgcluster import PgDatabase
from tests.support.rotation import holder, rotate_now, stages_of, value_of
from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

pg_cluster = pgcluster.pg_cluster
pg_database = pgcluster.pg_database

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
EMERGENCY = RUNBOOKS / "secret-rotation-emergency.md"
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.M | re.S)


# -- `aws` and `khoa` in the blocks: the installed commands, started warm -----------------------------
# The runbooks run some fifty `aws` and `khoa` commands, and an interpreter importing a command line
# costs each about half a second of CPU, most of the blocks' time. So on the blocks' PATH, `aws` and
# `khoa` are launchers (an interpreter without site-packages) that hand their arguments, environment,
# working directory and standard streams to a process that has imported both command lines once; it
# forks, and the child runs the installed script's entry point as the script does, in that
# environment, and exits with its status.

_BIN = Path(sys.executable).parent

_FORKER = r"""
import importlib, json, os, socket, sys, traceback

if os.environ.get("LC_CTYPE", "") == "UTF-8":  # what the aws script does before importing the CLI
    os.environ["LC_CTYPE"] = "en_US.UTF-8"
import awscli
import awscli.clidriver
import awscli.handlers  # the plugins every aws command loads
import khoa.console
import khoa.cli.main
for module in ("scan", "secrets", "functions", "access"):  # the khoa commands the runbooks run
    importlib.import_module(f"khoa.cli.{module}")


def aws():  # the installed aws script
    if os.environ.get("LC_CTYPE", "") == "UTF-8":
        os.environ["LC_CTYPE"] = "en_US.UTF-8"
    importlib.reload(awscli)  # its import reads AWS_DATA_PATH: this command's
    return awscli.clidriver.main()


def khoa_script():  # the installed khoa script
    sys.argv[0] = sys.argv[0].removesuffix(".exe")
    return khoa.console.main()


SCRIPTS = {"aws": aws, "khoa": khoa_script}


def run(connection):
    _, fds, _, _ = socket.recv_fds(connection, 1, 3)
    request = json.loads(b"".join(iter(lambda: connection.recv(1 << 16), b"")))
    for number, fd in enumerate(fds):
        os.dup2(fd, number)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = request["argv"]
    try:  # as the script's sys.exit(main()) ends the process
        status = SCRIPTS[os.path.basename(sys.argv[0])]()
    except SystemExit as stop:
        status = stop.code
    except BaseException:
        traceback.print_exc()
        status = 1
    if not isinstance(status, int):
        if status is not None:
            print(status, file=sys.stderr)
        status = 0 if status is None else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    connection.sendall(str(status).encode())
    os._exit(status)


listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen(16)
print("ready", flush=True)
while True:
    connection, _ = listener.accept()
    child = os.fork()
    if child == 0:  # a grandchild runs the command, so that nothing waits for it here
        listener.close()
        if os.fork() == 0:
            run(connection)
        os._exit(0)
    connection.close()
    os.waitpid(child, 0)
"""

_LAUNCHER = """#!{python} -S
import json, os, socket, sys

connection = socket.socket(socket.AF_UNIX)
connection.connect({socket!r})
socket.send_fds(connection, [b"-"], [0, 1, 2])
request = {{"argv": [{script!r}, *sys.argv[1:]], "env": dict(os.environ), "cwd": os.getcwd()}}
connection.sendall(json.dumps(request).encode())
connection.shutdown(socket.SHUT_WR)
status = connection.recv(16)
if not status:
    sys.exit("{name}: the command ended without an exit status")
sys.exit(int(status))
"""


@pytest.fixture(scope="module")
def launchers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory holding the `aws` and `khoa` launchers, to put first on the blocks' PATH."""
    directory = tmp_path_factory.mktemp("bin")
    socket_path = Path(tempfile.mkdtemp(prefix="cli-")) / "forker.sock"  # AF_UNIX: 107 bytes at most
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KHOA_", "AWS_"))}
    forker = subprocess.Popen(
        [sys.executable, "-c", _FORKER, str(socket_path)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert forker.stdout is not None and forker.stdout.readline() == "ready\n"
        for name in ("aws", "khoa"):
            launcher = directory / name
            launcher.write_text(
                _LAUNCHER.format(
                    python=sys.executable, socket=str(socket_path), script=str(_BIN / name), name=name
                )
            )
            launcher.chmod(0o755)
        yield directory
    finally:
        forker.terminate()
        forker.wait(timeout=30)
        shutil.rmtree(socket_path.parent, ignore_errors=True)


def sh_blocks(path: Path) -> list[str]:
    return _BLOCK.findall(path.read_text())


def test_the_emergency_runbook_has_its_commands() -> None:
    text = "\n".join(sh_blocks(EMERGENCY))
    for command in (
        "khoa scan --respond",
        "khoa secrets emergency-rotate",
        "aws cloudtrail lookup-events",
        "aws iam list-access-keys",
    ):
        assert command in text, f"the runbook has no {command!r} block"


def run_blocks(blocks: list[str], env: dict[str, str], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    results = []
    for number, block in enumerate(blocks, 1):
        result = subprocess.run(
            ["sh", "-ec", block], env=env, cwd=cwd, capture_output=True, text=True, timeout=240, check=False
        )
        assert result.returncode == 0, (
            f"block {number} exited {result.returncode}:\n{block}\n--- stderr:\n{result.stderr[-3000:]}"
        )
        results.append(result)
    return results


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=dev", "-c", "user.email=dev@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


@pytest.mark.postgres
def test_the_emergency_runbook_runs(
    server: KhoaServer, sm: Any, ssm: Any, iam: Any, pg_database: PgDatabase, launchers: Path, tmp_path: Path
) -> None:
    # the situation: a database secret with rotation, an IAM user's key and a SecureString, all in a
    # repository that was pushed somewhere public
    suffix = os.urandom(4).hex()
    function = register(server, f"runbook-pg-{suffix}", "postgresql-single-user", "builtin")
    name = f"runbook/db/{suffix}"
    leaked_secret = pg_database.secret()
    first = sm.create_secret(Name=name, SecretString=json.dumps(leaked_secret))["VersionId"]
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=function,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    user = f"runbook-ci-{suffix}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    parameter = f"/runbook/{suffix}/api-token"
    token = f"tok-{os.urandom(16).hex()}"
    ssm.put_parameter(Name=parameter, Type="SecureString", Value=token)
    new_value = tmp_path / "new-token.txt"
    new_value.write_text(f"tok-{os.urandom(16).hex()}")

    repo = tmp_path / "leaky-repo"
    repo.mkdir()
    (repo / "deploy.env").write_text(
        f"DB_PASSWORD={leaked_secret['password']}\n"
        f"AWS_ACCESS_KEY_ID={key['AccessKeyId']}\n"
        f"AWS_SECRET_ACCESS_KEY={key['SecretAccessKey']}\n"
        f"API_TOKEN={token}\n"
    )
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "deploy settings")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("KHOA_", "AWS_"))}
    env.update(
        {
            "PATH": os.pathsep.join([str(launchers), str(Path(sys.executable).parent), env.get("PATH", "")]),
            "AWS_ENDPOINT_URL": server.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_PAGER": "",
            "AWS_MAX_ATTEMPTS": "1",
            "LEAK_DIR": str(repo),
            "SECRET_ID": name,
            "LEAKED_USER": user,
            "LEAKED_KEY_ID": key["AccessKeyId"],
            "PARAMETER_NAME": parameter,
            "NEW_VALUE_FILE": str(new_value),
            "SINCE": (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    results = run_blocks(sh_blocks(EMERGENCY), env, tmp_path)

    # what the runbook says it does: the leaked password no longer logs in, the secret has a new
    # current version and no previous one; the key was quarantined, then deleted by the administrator
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") != first and holder(stages, "AWSPREVIOUS") is None
    assert not pg_database.can_login(leaked_secret["username"], leaked_secret["password"])
    current = value_of(sm, name)
    assert pg_database.can_login(current["username"], current["password"])
    assert iam.list_access_keys(UserName=user)["AccessKeyMetadata"] == []
    assert iam.list_attached_user_policies(UserName=user)["AttachedPolicies"] == []
    assert (
        ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"] == new_value.read_text()
    )
    # the trail showed Khoa's responses; nothing printed a value
    output = "\n".join(r.stdout + r.stderr for r in results)
    assert "LeakResponse" in output and "EmergencyRotateSecret" in output
    for value in (leaked_secret["password"], key["SecretAccessKey"], token, current["password"]):
        assert value not in output, "a secret value was printed"


# -- The other runbooks, on a private server of this module (the key-recovery runbook creates an
# organization, which is installation-wide) ------------------------------------------------------

ROTATION_TROUBLESHOOTING = RUNBOOKS / "rotation-troubleshooting.md"
KMS_KEY_RECOVERY = RUNBOOKS / "kms-key-recovery.md"
SECRETS_CROSS_ACCOUNT = RUNBOOKS / "secrets-cross-account.md"
SECRET_ACCESS_DEBUG = RUNBOOKS / "secret-access-debug.md"


def test_every_runbook_is_run_by_this_module() -> None:
    covered = {
        EMERGENCY,
        ROTATION_TROUBLESHOOTING,
        KMS_KEY_RECOVERY,
        SECRETS_CROSS_ACCOUNT,
        SECRET_ACCESS_DEBUG,
    }
    assert set(RUNBOOKS.glob("*.md")) == covered
    for path in covered:
        assert sh_blocks(path), f"{path.name} has no sh block"
    # each runbook links the emergency runbook or is linked from another, so none is an island
    texts = {path: path.read_text() for path in covered}
    for path in covered - {EMERGENCY}:
        assert any(path.name in text for other, text in texts.items() if other != path) or (
            EMERGENCY.name in texts[path]
        ), path.name


@pytest.fixture(scope="module")
def runbook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(tmp_path_factory.mktemp("runbooks") / "data").start()
    yield instance
    instance.stop()


def runbook_env(server: KhoaServer, launchers: Path, **variables: str) -> dict[str, str]:
    """A shell that reaches ``server`` as its first account's root (as `eval "$(khoa env)"` makes one),
    with the runbook's ``$CAPITALS``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KHOA_", "AWS_"))}
    env.update(
        {
            "PATH": os.pathsep.join([str(launchers), str(Path(sys.executable).parent), env.get("PATH", "")]),
            "AWS_ENDPOINT_URL": server.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_PAGER": "",
            "AWS_MAX_ATTEMPTS": "1",
            "KHOA_DATA_DIR": str(server.data_dir),
            **variables,
        }
    )
    return env


def output_of(results: list[subprocess.CompletedProcess[str]]) -> str:
    return "\n".join(r.stdout + r.stderr for r in results)


def test_the_rotation_troubleshooting_runbook_runs(
    runbook_server: KhoaServer, launchers: Path, tmp_path: Path
) -> None:
    server = runbook_server
    sm = server.client("secretsmanager")
    suffix = os.urandom(4).hex()
    broken = register(server, f"broken-{suffix}", "tests.support.rotators:failing_at_set")
    fixed = register(server, f"fixed-{suffix}", "tests.support.rotators:simple")
    name = f"runbook/rotation/{suffix}"
    password = f"pw-{os.urandom(8).hex()}"
    first = sm.create_secret(Name=name, SecretString=json.dumps({"password": password}))["VersionId"]
    rotate_now(server, sm, name, RotationLambdaARN=broken, RotationRules={"AutomaticallyAfterDays": 30})
    stuck = stages_of(sm, name)
    assert holder(stuck, "AWSCURRENT") == first and holder(stuck, "AWSPENDING") not in (None, first)

    results = run_blocks(
        sh_blocks(ROTATION_TROUBLESHOOTING),
        runbook_env(server, launchers, SECRET_ID=name, FUNCTION_ARN=fixed),
        tmp_path,
    )

    # what the runbook says it does: the failure was visible, the secret rotated with the fixed function
    output = output_of(results)
    assert "RotationFailed" in output and f"broken-{suffix}" in output and "is AWSCURRENT" in output
    after = stages_of(sm, name)
    assert holder(after, "AWSCURRENT") not in (first, None) and holder(after, "AWSPREVIOUS") == first
    assert holder(after, "AWSPENDING") in (None, holder(after, "AWSCURRENT"))
    assert value_of(sm, name)["password"] != password
    assert sm.describe_secret(SecretId=name)["RotationLambdaARN"] == fixed
    assert password not in output and value_of(sm, name)["password"] not in output


def test_the_kms_key_recovery_runbook_runs(
    runbook_server: KhoaServer, launchers: Path, tmp_path: Path
) -> None:
    server = runbook_server
    kms, sm = server.client("kms"), server.client("secretsmanager")
    organizations = server.client("organizations")
    try:
        organizations.describe_organization()
    except ClientError:
        organizations.create_organization(FeatureSet="ALL")
    member = create_account(server)  # joins the organization
    key = kms.create_key(Description="runbook: recover me")["KeyMetadata"]["KeyId"]
    new_key = kms.create_key(Description="runbook: move here")["KeyMetadata"]["Arn"]
    name = f"runbook/kms/{os.urandom(4).hex()}"
    value = f"v-{os.urandom(8).hex()}"
    sm.create_secret(Name=name, SecretString=value, KmsKeyId=key)
    ciphertext = tmp_path / "data.bin"
    ciphertext.write_bytes(kms.encrypt(KeyId=key, Plaintext=b"protected data")["CiphertextBlob"])
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)

    results = run_blocks(
        sh_blocks(KMS_KEY_RECOVERY),
        runbook_env(
            server,
            launchers,
            KEY_ID=key,
            CIPHERTEXT_FILE=str(ciphertext),
            NEW_KEY_ID=new_key,
            SECRET_ID=name,
            MEMBER_ACCOUNT_ID=member.account_id,
        ),
        tmp_path,
    )

    # the key is back and works; the data and the secret moved to the new key
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=ciphertext.read_bytes())["KeyId"] == new_key
    assert sm.describe_secret(SecretId=name)["KmsKeyId"] == new_key
    assert sm.get_secret_value(SecretId=name)["SecretString"] == value
    output = output_of(results)
    assert "ScheduleKeyDeletion" in output and "deny-kms-key-deletion" in output
    assert value not in output and "protected data" not in output
    # the prevention: the member account's root can no longer schedule a key's deletion
    member_kms = member.client("kms")
    member_key = member_kms.create_key()["KeyMetadata"]["KeyId"]
    with pytest.raises(ClientError) as error:
        member_kms.schedule_key_deletion(KeyId=member_key, PendingWindowInDays=7)
    assert "explicit deny in a service control policy" in error.value.response["Error"]["Message"]


def test_the_secrets_cross_account_runbook_runs(
    runbook_server: KhoaServer, launchers: Path, tmp_path: Path
) -> None:
    server = runbook_server
    sm = server.client("secretsmanager")
    consumer = create_account(server)
    name = f"runbook/shared/{os.urandom(4).hex()}"
    value = f"v-{os.urandom(8).hex()}"
    arn = sm.create_secret(Name=name, SecretString=value)["ARN"]
    with pytest.raises(ClientError):  # not shared yet
        consumer.client("secretsmanager").get_secret_value(SecretId=arn)

    results = run_blocks(
        sh_blocks(SECRETS_CROSS_ACCOUNT),
        runbook_env(
            server,
            launchers,
            SECRET_ID=name,
            CONSUMER_ACCOUNT_ID=consumer.account_id,
            CONSUMER_ACCESS_KEY_ID=consumer.access_key_id,
            CONSUMER_SECRET_ACCESS_KEY=consumer.secret_access_key,
        ),
        tmp_path,
    )

    current = sm.describe_secret(SecretId=name)
    assert current["KmsKeyId"].startswith("arn:aws:kms:")
    version = next(v for v, labels in current["VersionIdsToStages"].items() if "AWSCURRENT" in labels)
    assert results[-1].stdout.strip() == version  # the consumer read it, by ARN
    assert consumer.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"] == value
    assert value not in output_of(results)


def test_the_secret_access_debug_runbook_runs(
    runbook_server: KhoaServer, launchers: Path, tmp_path: Path
) -> None:
    server = runbook_server
    sm, iam = server.client("secretsmanager"), server.client("iam")
    name = f"runbook/debug/{os.urandom(4).hex()}"
    value = f"v-{os.urandom(8).hex()}"
    arn = sm.create_secret(Name=name, SecretString=value)["ARN"]
    user = new_user(server, iam)  # no policies
    with pytest.raises(ClientError):
        user.client("secretsmanager").get_secret_value(SecretId=arn)
    trail = server.client("cloudtrail")
    eventually(
        lambda: any(
            e["EventName"] == "GetSecretValue"
            for e in trail.lookup_events(
                LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": user.name}]
            )["Events"]
        )
    )

    results = run_blocks(
        sh_blocks(SECRET_ACCESS_DEBUG),
        runbook_env(server, launchers, SECRET_ID=name, PRINCIPAL_ARN=user.arn, USER_NAME=user.name),
        tmp_path,
    )

    output = output_of(results)
    assert f"Request:   {user.arn} -> secretsmanager:GetSecretValue on {arn}" in output
    assert "because no identity-based policy allows the secretsmanager:GetSecretValue action" in output
    assert "allowed now" in output and value not in output
    eventually(lambda: _reads(user, arn) == value)


def _reads(user: Caller, arn: str) -> str | None:
    try:
        return str(user.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])
    except ClientError:
        return None
