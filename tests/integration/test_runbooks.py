"""The runbooks' commands work as written: each ```sh block of docs/runbooks/*.md runs, in order, in a
POSIX shell (``sh -e``) against a real server, with the runbook's ``$CAPITALS`` set by the test to a
situation made for it (here: a repository holding a leaked database password, an access key pair and a
SecureString value). After the last block the test checks that the runbook did what it says.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support import pgcluster
from tests.support.pgcluster import PgDatabase
from tests.support.rotation import holder, register, stages_of, value_of
from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

pg_cluster = pgcluster.pg_cluster
pg_database = pgcluster.pg_database

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
EMERGENCY = RUNBOOKS / "secret-rotation-emergency.md"
_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.M | re.S)


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
    server: KhoaServer, sm: Any, ssm: Any, iam: Any, pg_database: PgDatabase, tmp_path: Path
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
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
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
