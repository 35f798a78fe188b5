"""``khoa scan`` end to end: real git repositories made here, the real command line (a subprocess, as
an operator runs it) and a real server answering CheckLeakedValues.

The values live in a fresh account of their own (``account_b``), so the shared server's other tests
can neither match them nor be matched by them.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from khoa.cli.main import run
from tests.support.identity import Caller, new_user
from tests.support.names import parameter_name, secret_name, unique
from tests.support.server import KhoaServer

ROOT = Path(__file__).resolve().parents[2]
GITHUB_PATTERN = (
    "ghp_" + "Xk3Rq9Lm2Vb7Nc4Tz8Hj5Wd1Fg6Sy0Pa2QeZu"
)  # GitHub token *format*; Khoa holds no such value


def value(prefix: str) -> str:
    """A random value that matches no generic pattern's format."""
    return f"{prefix}-{secrets.token_urlsafe(15)}"


@dataclass
class Held:
    whole: str
    whole_arn: str
    leaf: str
    leaf_arn: str
    rotated_out: str
    rotated_arn: str
    parameter_value: str
    parameter_old: str
    parameter_arn: str
    key_id: str
    key_secret: str
    deleted_key_id: str
    user_arn: str


@pytest.fixture(scope="module")
def held(account_b: Caller) -> Held:
    sm, ssm, iam = account_b.client("secretsmanager"), account_b.client("ssm"), account_b.client("iam")
    whole, leaf, rotated_out = value("whole"), value("leaf"), value("rotated")
    whole_arn = sm.create_secret(Name=secret_name("scan"), SecretString=whole)["ARN"]
    leaf_arn = sm.create_secret(
        Name=secret_name("scan"), SecretString=json.dumps({"username": "app", "password": leaf})
    )["ARN"]
    rotated_arn = sm.create_secret(Name=secret_name("scan"), SecretString=rotated_out)["ARN"]
    for _ in range(2):  # AWSPREVIOUS, then no label at all: the first value no longer works
        sm.put_secret_value(SecretId=rotated_arn, SecretString=value("newer"))
    name = parameter_name("scan")
    parameter_old, parameter_value = value("param-old"), value("param")
    ssm.put_parameter(Name=name, Value=parameter_old, Type="SecureString")
    ssm.put_parameter(Name=name, Value=parameter_value, Type="SecureString", Overwrite=True)
    parameter_arn = ssm.get_parameter(Name=name)["Parameter"]["ARN"]
    user = iam.create_user(UserName=unique("scan-user"))["User"]
    key = iam.create_access_key(UserName=user["UserName"])["AccessKey"]
    deleted = iam.create_access_key(UserName=user["UserName"])["AccessKey"]
    iam.delete_access_key(UserName=user["UserName"], AccessKeyId=deleted["AccessKeyId"])
    return Held(
        whole,
        whole_arn,
        leaf,
        leaf_arn,
        rotated_out,
        rotated_arn,
        parameter_value,
        parameter_old,
        parameter_arn,
        key["AccessKeyId"],
        key["SecretAccessKey"],
        deleted["AccessKeyId"],
        user["Arn"],
    )


def scan_env(server: KhoaServer, caller: Caller | None, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KHOA_"))}
    env.update(
        {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_ENDPOINT_URL": server.endpoint,
        }
    )
    if caller is not None:
        env["AWS_ACCESS_KEY_ID"] = caller.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = caller.secret_access_key
    return env


def khoa_scan(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "khoa", "scan", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit(repo: Path, files: dict[str, str | None]) -> str:
    for name, content in files.items():
        if content is None:
            (repo / name).unlink()
        else:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "change")
    return git(repo, "rev-parse", "HEAD")


def new_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    return path


@dataclass
class Leaky:
    path: Path
    introduced: str
    cleaned: str


def leaked_files(held: Held, under: str) -> dict[str, str]:
    """Every kind of leak, in files under ``under``/: (file, line) -> what is there."""
    return {
        f"{under}/app.env": f'API_TOKEN="{held.whole}"\nLOG_LEVEL=info\n',
        f"{under}/db.json": json.dumps({"host": "db.internal", "password": held.leaf}, indent=2) + "\n",
        f"{under}/settings.yaml": f"feature_flag: enabled\nparam: {held.parameter_value}\n",
        f"{under}/keys.sh": (
            f"export AWS_ACCESS_KEY_ID={held.key_id}\nexport AWS_SECRET_ACCESS_KEY={held.key_secret}\n"
            f"export OLD_KEY={held.deleted_key_id}\n"
        ),
        f"{under}/old.txt": f"the old password was {held.rotated_out}\nand {held.parameter_old}\n",
        f"{under}/github.py": f'GITHUB_TOKEN = "{GITHUB_PATTERN}"\n',
    }


@pytest.fixture(scope="module")
def leaky(held: Held, tmp_path_factory: pytest.TempPathFactory) -> Leaky:
    """A repository whose first commit leaks everything twice, under kept/ and gone/, and whose second
    commit deletes gone/ (so those copies are only in history)."""
    repo = new_repo(tmp_path_factory.mktemp("scan") / "leaky")
    introduced = commit(repo, {**leaked_files(held, "kept"), **leaked_files(held, "gone")})
    cleaned = commit(repo, dict.fromkeys(leaked_files(held, "gone")))
    return Leaky(repo, introduced, cleaned)


def findings(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads(result.stdout)["findings"]
    return found


def by_file(found: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in found:
        out.setdefault(Path(f["file"]).as_posix().split("/leaky/")[-1], []).append(f)
    return out


def assert_no_value(text: str, held: Held) -> None:
    for secret in (
        held.whole,
        held.leaf,
        held.rotated_out,
        held.parameter_value,
        held.key_secret,
        GITHUB_PATTERN,
    ):
        assert secret not in text


def assert_every_kind(
    files: dict[str, list[dict[str, Any]]], held: Held, under: str, commit: str | None
) -> None:
    """Each leak under ``under``/ found with its status, resource, line and commit."""

    def one(name: str) -> set[tuple[Any, ...]]:
        return {
            (f["status"], f["type"], f["resource"], f["line"], f["field"], f["access_key_id"], f["commit"])
            for f in files[f"{under}/{name}"]
        }

    assert one("app.env") == {("live", "Khoa secret", held.whole_arn, 1, None, None, commit)}
    assert one("db.json") == {("live", "Khoa secret", held.leaf_arn, 3, "password", None, commit)}
    assert one("settings.yaml") == {
        ("live", "Khoa SecureString parameter", held.parameter_arn, 2, None, None, commit)
    }
    assert one("keys.sh") == {
        ("live", "Khoa access key id", held.user_arn, 1, None, held.key_id, commit),
        ("live", "Khoa secret access key", held.user_arn, 2, None, held.key_id, commit),
        ("former", "Khoa access key id", held.user_arn, 3, None, held.deleted_key_id, commit),
    }
    assert one("old.txt") == {
        ("former", "Khoa secret", held.rotated_arn, 1, None, None, commit),
        ("former", "Khoa SecureString parameter", held.parameter_arn, 2, None, None, commit),
    }
    assert all(f["invalid_since"] for f in files[f"{under}/old.txt"])
    (generic,) = files[f"{under}/github.py"]
    assert (generic["status"], generic["resource"], generic["line"], generic["commit"]) == (
        "pattern",
        None,
        1,
        commit,
    )
    assert "GitHub Token" in generic["type"]
    (whole,) = files[f"{under}/app.env"]
    assert "AWSCURRENT" in whole["version_stages"]


def test_working_tree_live_former_and_patterns(
    server: KhoaServer, account_b: Caller, held: Held, leaky: Leaky, tmp_path: Path
) -> None:
    result = khoa_scan(scan_env(server, account_b, tmp_path), str(leaky.path), "--format", "json")
    assert result.returncode == 1, result.stderr
    assert_no_value(result.stdout + result.stderr, held)
    files = by_file(findings(result))
    assert all(name.startswith("kept/") for name in files)  # gone/ is not in the working tree
    assert_every_kind(files, held, "kept", None)


def test_history_finds_every_kind_with_the_commit_that_introduced_it(
    server: KhoaServer, account_b: Caller, held: Held, leaky: Leaky, tmp_path: Path
) -> None:
    result = khoa_scan(
        scan_env(server, account_b, tmp_path), str(leaky.path), "--history", "--format", "json"
    )
    assert result.returncode == 1, result.stderr
    assert_no_value(result.stdout + result.stderr, held)
    files = by_file(findings(result))
    assert_every_kind(files, held, "gone", leaky.introduced)  # only in history
    assert_every_kind(files, held, "kept", leaky.introduced)  # still here: the commit that added it


def test_text_and_sarif_outputs(
    server: KhoaServer, account_b: Caller, held: Held, leaky: Leaky, tmp_path: Path
) -> None:
    env = scan_env(server, account_b, tmp_path)
    text = khoa_scan(env, str(leaky.path), "--history")
    assert text.returncode == 1 and "live" in text.stdout and held.whole_arn in text.stdout
    assert_no_value(text.stdout + text.stderr, held)
    sarif = khoa_scan(env, str(leaky.path), "--format", "sarif")
    assert sarif.returncode == 1
    document = json.loads(sarif.stdout)
    assert document["version"] == "2.1.0"
    rules = {r["ruleId"] for r in document["runs"][0]["results"]}
    assert "khoa/live-value" in rules and any(r.startswith("detect-secrets/") for r in rules)
    assert_no_value(sarif.stdout, held)


def test_clean_repository_exits_0(server: KhoaServer, account_b: Caller, tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "clean")
    commit(
        repo, {"README.md": "# A project\n\nNothing secret in here at all.\n", "src/app.py": "print('hi')\n"}
    )
    commit(repo, {"src/app.py": "def main() -> None:\n    print('hello, world')\n"})
    result = khoa_scan(scan_env(server, account_b, tmp_path), str(repo), "--history", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert findings(result) == []


def test_bad_usage_exits_2(
    server: KhoaServer, account_b: Caller, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("a candidate-looking line\n")
    # usage errors are found before anything is sent: the command line in this process
    for args in ([], [str(tmp_path / "missing")], [str(plain), "--format", "xml"], [str(plain), "--history"]):
        assert run(["scan", *args]) == 2, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and err.startswith("error:")
    # connection errors: the command as an operator runs it
    env = scan_env(server, account_b, tmp_path)
    no_endpoint = {k: v for k, v in env.items() if k != "AWS_ENDPOINT_URL"}
    result = khoa_scan(no_endpoint, str(plain))
    assert result.returncode == 2 and "endpoint" in result.stderr
    down = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}
    result = khoa_scan(down, str(plain))
    assert result.returncode == 2 and "cannot reach Khoa" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # Nothing to check is no proof of a clean tree when Khoa cannot be asked: still exit 2.
    empty = tmp_path / "empty"
    empty.mkdir()
    result = khoa_scan(down, str(empty))
    assert result.returncode == 2 and "cannot reach Khoa" in result.stderr
    assert khoa_scan(env, str(empty)).returncode == 0


def test_caller_without_permission_exits_2(
    server: KhoaServer, account_b: Caller, held: Held, leaky: Leaky, tmp_path: Path
) -> None:
    reader = new_user(
        server, account_b.client("iam"), {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}
    )
    result = khoa_scan(scan_env(server, reader, tmp_path), str(leaky.path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "khoa:CheckLeakedValues" in lines[0]
    assert result.stdout == ""
    assert_no_value(result.stderr, held)
    wrong = {
        **scan_env(server, reader, tmp_path),
        "AWS_SECRET_ACCESS_KEY": "not-the-secret-of-this-key-0000000000",
    }
    result = khoa_scan(wrong, str(leaky.path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "refused the credentials" in result.stderr
    granted = new_user(
        server,
        account_b.client("iam"),
        {"Effect": "Allow", "Action": "khoa:CheckLeakedValues", "Resource": "*"},
    )
    result = khoa_scan(scan_env(server, granted, tmp_path), str(leaky.path), "--format", "json")
    assert result.returncode == 1
    assert {f["status"] for f in findings(result)} == {"live", "former", "pattern"}


def installed_server_dependencies(view: Path) -> Path:
    """``view``, made a directory of links to this environment's installed copies of what the hook's
    ``additional_dependencies: [".[server]"]`` brings: ``khoa[server]``'s requirements as pyproject.toml
    declares them, and theirs (with their extras and markers). On PYTHONPATH, pip finds them installed and
    installs the hook's own package only, built from the hook repository; nothing else of this
    environment (no test tool) is there, so the hook still runs on what ``.[server]`` declares."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["server"])]
    extras: dict[str, set[str]] = {}
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name in extras and set(requirement.extras) <= extras[name]:
            continue
        extras[name] = extras.get(name, set()) | set(requirement.extras)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: pip installs it from the index, as it would have
        for spec in distribution.requires or []:
            needed = Requirement(spec)
            if needed.marker is None or any(
                needed.marker.evaluate({"extra": extra}) for extra in {"", *extras[name]}
            ):
                wanted.append(needed)
    view.mkdir()
    for name in extras:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            distribution = importlib.metadata.distribution(name)
            site = Path(str(distribution.locate_file("")))
            for top in {f.parts[0] for f in distribution.files or []} - {"..", "__pycache__"}:
                if not (view / top).exists():
                    (view / top).symlink_to(site / top)
    return view


@pytest.mark.slow
def test_pre_commit_try_repo_runs_the_khoa_scan_hook(
    server: KhoaServer, account_b: Caller, held: Held, tmp_path: Path
) -> None:
    if importlib.util.find_spec("pre_commit") is None:
        pytest.skip("pre-commit is not installed (it is in the test extra: make install)")
    # The hook repository: the project as committed (a copy, so the test sees this work tree's files).
    hooks = tmp_path / "khoa-hooks"
    hooks.mkdir()
    for name in ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml"):
        shutil.copy(ROOT / name, hooks / name)
    shutil.copytree(ROOT / "src", hooks / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    git(hooks, "init", "-q", "-b", "main")
    git(hooks, "add", "-A")
    git(hooks, "commit", "-q", "-m", "hooks")
    project = new_repo(tmp_path / "project")
    commit(project, {"README.md": "hello\n"})
    (project / "app.env").write_text(f"DB_PASSWORD={held.leaf}\n")
    (project / "ok.txt").write_text("nothing here\n")
    git(project, "add", "-A")
    env = {
        **scan_env(server, account_b, tmp_path),
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "PIP_CONSTRAINT": str(ROOT / "requirements" / "server.lock"),
        # The hook's dependencies as this environment installed them (pip would download and unpack the
        # same pinned releases, most of the test's time); the hook's package is still built and
        # installed by pre-commit from the hook repository.
        "PYTHONPATH": str(installed_server_dependencies(tmp_path / "server-dependencies")),
    }
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))

    def try_repo(*files: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pre_commit", "try-repo", str(hooks), "khoa-scan", "--files", *files],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    # One run (each try-repo installs the hook afresh): the staged leak fails the hook, and only it.
    result = try_repo("app.env", "ok.txt")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "khoa scan" in result.stdout and "Failed" in result.stdout
    assert held.leaf_arn in result.stdout and "app.env:1" in result.stdout and "ok.txt" not in result.stdout
    assert held.leaf not in output
