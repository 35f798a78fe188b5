"""khoa scan's pieces with a fake khoa-leaks client: candidates, sources (real git repositories made
here), batching and de-duplication, statuses and locations, the baseline, and the outputs (which never
hold a whole value). The wire-level tests against a real server are tests/integration/test_scan.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from khoa.cli import scan as scan_cli
from khoa.cli.main import run
from khoa.scan.candidates import tokens
from khoa.scan.check import BATCH_SIZE, KhoaError, LeakChecker, resolve_endpoint
from khoa.scan.detect import detector, load_baseline
from khoa.scan.report import mask, render_json, render_sarif
from khoa.scan.scanner import ScanOptions, run_scan
from khoa.scan.sources import history, working_tree

LIVE = "Zq8!vR2#kLm9@pWx4$Tn"  # a value that matches no generic pattern
FORMER = "old-passphrase-7Hd2kQ9x"
ARN = "arn:aws:secretsmanager:us-east-1:111122223333:secret:app/db-AbCdEf"
AWS_PATTERN_KEY = "AKIAIOSFODNN7EXAMPLF"  # AWS key id *format* (detect-secrets' AWSKeyDetector)


class FakeLeaks:
    """Answers as khoa-leaks would: matches for known values; records every candidate it was sent."""

    def __init__(self, known: dict[str, list[dict[str, Any]]] | None = None, error: Exception | None = None):
        self.known = known or {}
        self.error = error
        self.calls: list[list[dict[str, str]]] = []
        self.reports: list[dict[str, Any]] = []

    def _answer(self, candidates: list[dict[str, str]]) -> list[dict[str, Any]]:
        assert 1 <= len(candidates) <= BATCH_SIZE
        self.calls.append(candidates)
        if self.error:
            raise self.error
        return [{"Id": c["Id"], **m} for c in candidates for m in self.known.get(c["Value"], [])]

    def check_leaked_values(self, Candidates: list[dict[str, str]]) -> dict[str, Any]:
        return {"Matches": self._answer(Candidates)}

    def report_leaked_values(self, Candidates: list[dict[str, str]], SourceUrl: str, Respond: bool) -> dict:
        matches = self._answer(Candidates)
        self.reports.append({"SourceUrl": SourceUrl, "Respond": Respond})
        responses = [
            {"ResourceArn": m["ResourceArn"], "Action": "alerted", "Detail": "alert raised"}
            for m in matches
            if m["Status"] == "live"
        ]
        return {"Matches": matches, "Responses": responses}

    def sent(self) -> list[str]:
        return [c["Value"] for call in self.calls for c in call]


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str | None], message: str = "change") -> str:
    for name, content in files.items():
        path = repo / name
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    return path


def known() -> dict[str, list[dict[str, Any]]]:
    return {
        LIVE: [
            {
                "Status": "live",
                "ResourceType": "secret",
                "ResourceArn": ARN,
                "VersionId": "v1",
                "VersionStages": ["AWSCURRENT"],
                "Field": "password",
            }
        ],
        FORMER: [
            {
                "Status": "former",
                "ResourceType": "secret",
                "ResourceArn": ARN,
                "VersionId": "v0",
                "InvalidSince": "2026-12-01T00:00:00+00:00",
            }
        ],
    }


def scan(paths: list[Path], client: FakeLeaks, history_too: bool = False, **kw: Any) -> Any:
    with detector(kw.get("baseline"), kw.get("baseline_name", "")) as found:
        return run_scan(ScanOptions(paths=paths, history=history_too), found, LeakChecker(client))


# -- candidates ------------------------------------------------------------------------------------


def test_tokens_cover_quoted_assigned_url_json_and_long_words() -> None:
    assert "s3cr3t-pass" in tokens('password = "s3cr3t-pass"')
    assert "s3cr3t-pass" in tokens("DB_PASSWORD=s3cr3t-pass")
    assert "s3cr3t-pass" in tokens("password: s3cr3t-pass  # yaml")
    assert "hunter22" in tokens("url = postgres://app:hunter22@db.internal:5432/app")
    assert 'abc"def12' in tokens(r'{"password": "abc\"def12"}')
    line = '{"username": "app", "password": "Zq8vR2kLm9"}'
    found = tokens(line)
    assert line in found and "Zq8vR2kLm9" in found
    assert "justalongword" in tokens("some justalongword here")
    assert "short" not in tokens("some short word")
    assert tokens("   ") == set()


# -- sources ---------------------------------------------------------------------------------------


def test_history_gives_added_lines_with_numbers_and_commits(repo: Path) -> None:
    first = commit(repo, {"a.txt": "one\ntwo\n", "b.bin": "x\0y"})
    second = commit(repo, {"a.txt": "one\ninserted\ntwo\n", "dir/c.txt": "c\n"})
    chunks = list(history(repo))
    got = [(c.commit, c.repo_path, c.lines) for c in chunks]
    assert (first, "a.txt", [(1, "one"), (2, "two")]) in got
    assert (second, "a.txt", [(2, "inserted")]) in got
    assert (second, "dir/c.txt", [(1, "c")]) in got
    assert all(c.repo_path != "b.bin" for c in chunks)  # binary


def test_working_tree_follows_gitignore_and_skips_binary(repo: Path) -> None:
    (repo / ".gitignore").write_text("ignored/\n")
    (repo / "ignored").mkdir()
    (repo / "ignored" / "x.txt").write_text("nope\n")
    (repo / "kept.txt").write_text("yes\n")
    (repo / "bin.dat").write_bytes(b"\0\1\2")
    names = {c.repo_path for c in working_tree([repo])}
    assert names == {".gitignore", "kept.txt"}


# -- scanning --------------------------------------------------------------------------------------


def test_live_value_in_working_tree_and_history_with_introducing_commit(repo: Path) -> None:
    introduced = commit(repo, {"config/app.json": f'{{\n  "password": "{LIVE}"\n}}\n'})
    commit(repo, {"README.md": "docs\n"})
    client = FakeLeaks(known())
    report = scan([repo], client, history_too=True)
    live = [f for f in report.findings if f.status == "live"]
    assert len(live) == 1
    finding = live[0]
    assert finding.file.endswith("config/app.json") and finding.line == 2
    assert finding.commit == introduced
    assert (
        finding.resource == ARN and finding.field == "password" and finding.version_stages == ["AWSCURRENT"]
    )
    assert finding.type == "Khoa secret"
    # without --history: the same finding, no commit
    report = scan([repo], FakeLeaks(known()))
    assert [(f.status, f.commit) for f in report.findings if f.status == "live"] == [("live", None)]


def test_value_only_in_history_is_reported_at_its_first_commit(repo: Path) -> None:
    introduced = commit(repo, {"deploy.sh": f"export PASS='{FORMER}'\n"})
    commit(repo, {"deploy.sh": f"export PASS='{FORMER}'\necho again\n"})
    commit(repo, {"deploy.sh": None})
    assert scan([repo], FakeLeaks(known())).findings == []  # the working tree is clean
    report = scan([repo], FakeLeaks(known()), history_too=True)
    assert [(f.status, f.file.endswith("deploy.sh"), f.line, f.commit) for f in report.findings] == [
        ("former", True, 1, introduced)
    ]
    assert report.findings[0].invalid_since == "2026-12-01T00:00:00+00:00"
    assert report.commits == 3


def test_each_distinct_value_is_sent_once_in_batches_of_at_most_100(repo: Path) -> None:
    lines = [f"value_{i:04d} = distinct-candidate-{i:04d}" for i in range(250)]
    files = {f"f{n}.txt": "\n".join(lines) + f"\nkey = {LIVE}\n" for n in range(3)}
    commit(repo, files)
    client = FakeLeaks(known())
    report = scan([repo], client, history_too=True)
    sent = client.sent()
    assert len(sent) == len(set(sent))  # no value twice, across files and commits
    assert all(len(call) <= BATCH_SIZE for call in client.calls)
    assert {f"distinct-candidate-{i:04d}" for i in range(250)} <= set(sent)
    assert report.requests == len(client.calls) == -(-len(sent) // BATCH_SIZE)
    assert sorted(f.file.rsplit("/", 1)[-1] for f in report.findings if f.status == "live") == [
        "f0.txt",
        "f1.txt",
        "f2.txt",
    ]


def test_generic_pattern_is_reported_and_a_baseline_accepts_it(repo: Path, tmp_path: Path) -> None:
    commit(repo, {"settings.py": f'AWS_ACCESS_KEY_ID = "{AWS_PATTERN_KEY}"\n'})
    report = scan([repo], FakeLeaks())
    patterns = [f for f in report.findings if f.status == "pattern"]
    assert [(f.line, f.resource, "AWS Access Key" in f.detectors) for f in patterns] == [(1, None, True)]
    # a baseline made by detect-secrets itself accepts it
    baseline_path = repo / ".secrets.baseline"
    out = subprocess.run(
        [sys.executable, "-m", "detect_secrets", "scan"], cwd=repo, capture_output=True, text=True, check=True
    )
    baseline_path.write_text(out.stdout)
    data = load_baseline(str(baseline_path))
    assert data["results"], "detect-secrets found the pattern too"
    report = scan([repo], FakeLeaks(), baseline=data, baseline_name=".secrets.baseline")
    assert [f for f in report.findings if f.status == "pattern"] == []


def test_a_baselined_value_that_khoa_holds_is_still_reported(repo: Path) -> None:
    commit(repo, {"a.env": f"TOKEN={LIVE}\n"})
    import hashlib

    baseline = {
        "version": "1.5.0",
        "plugins_used": [{"name": "KeywordDetector"}],
        "filters_used": [],
        "results": {
            "a.env": [
                {
                    "type": "Secret Keyword",
                    "filename": "a.env",
                    "hashed_secret": hashlib.sha1(LIVE.encode()).hexdigest(),
                    "is_verified": False,
                }
            ]
        },
    }
    report = scan([repo], FakeLeaks(known()), baseline=baseline)
    assert [f.status for f in report.findings] == ["live"]


def test_outputs_never_hold_the_value(repo: Path) -> None:
    commit(repo, {"x.txt": f"secret = {LIVE}\nkey = {AWS_PATTERN_KEY}\n"})
    report = scan([repo], FakeLeaks(known()))
    assert {f.status for f in report.findings} == {"live", "pattern"}
    as_json = render_json(report)
    sarif = render_sarif(report, "0.1.0")
    for text in (as_json, sarif):
        assert LIVE not in text and AWS_PATTERN_KEY not in text
    assert mask(LIVE) == LIVE[:4] + "********"
    document = json.loads(sarif)
    assert document["version"] == "2.1.0"
    results = document["runs"][0]["results"]
    assert {r["ruleId"] for r in results} >= {"khoa/live-value"}
    assert all(r["locations"][0]["physicalLocation"]["region"]["startLine"] >= 1 for r in results)
    findings = json.loads(as_json)["findings"]
    assert {"file", "line", "type", "status", "resource", "commit"} <= set(findings[0])


# -- the command line (fake client) ----------------------------------------------------------------


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLeaks:
    client = FakeLeaks(known())
    monkeypatch.setattr(scan_cli, "make_client", lambda *a: client)
    return client


def test_cli_exit_codes_and_json(repo: Path, fake: FakeLeaks, capsys: pytest.CaptureFixture[str]) -> None:
    commit(repo, {"clean.txt": "nothing to see here\n"})
    assert run(["scan", str(repo)]) == 0
    commit(repo, {"app.env": f"PASSWORD={LIVE}\n"})
    capsys.readouterr()
    assert run(["scan", str(repo), "--format", "json"]) == 1
    out = capsys.readouterr().out
    assert LIVE not in out
    (finding,) = json.loads(out)["findings"]
    assert (finding["status"], finding["resource"], finding["line"]) == ("live", ARN, 1)
    assert run(["scan", str(repo), "--format", "sarif"]) == 1
    assert run(["scan", str(repo)]) == 1
    assert LIVE not in capsys.readouterr().out


def test_cli_respond_reports_with_source_and_shows_responses(
    repo: Path, fake: FakeLeaks, capsys: pytest.CaptureFixture[str]
) -> None:
    commit(repo, {"app.env": f"PASSWORD={LIVE}\n"})
    git(repo, "remote", "add", "origin", "https://user:tok3n@git.example.com/team/app.git")
    assert run(["scan", str(repo), "--respond", "--format", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["responses"] == [{"resource": ARN, "action": "alerted", "detail": "alert raised"}]
    assert fake.reports[0] == {"SourceUrl": "https://git.example.com/team/app.git", "Respond": True}


def test_cli_usage_errors_exit_2(repo: Path, tmp_path: Path, fake: FakeLeaks, capsys: Any) -> None:
    assert run(["scan"]) == 2
    assert run(["scan", str(tmp_path / "missing")]) == 2
    assert run(["scan", str(repo), "--format", "xml"]) == 2
    bad = tmp_path / "bad.baseline"
    bad.write_text("not json")
    assert run(["scan", str(repo), "--baseline", str(bad)]) == 2
    outside = tmp_path / "plain"
    outside.mkdir()
    assert run(["scan", str(outside), "--history"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(line.startswith("error:") for line in err.splitlines() if line.strip())


def test_cli_permission_and_connection_errors_exit_2(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from botocore.exceptions import ClientError, EndpointConnectionError

    commit(repo, {"a.txt": "some candidate words here\n"})
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "CheckLeakedValues")
    monkeypatch.setattr(scan_cli, "make_client", lambda *a: FakeLeaks(error=denied))
    assert run(["scan", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "khoa:CheckLeakedValues" in err and len(err.strip().splitlines()) == 1
    down = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    monkeypatch.setattr(scan_cli, "make_client", lambda *a: FakeLeaks(error=down))
    assert run(["scan", str(repo)]) == 2
    assert "cannot reach Khoa" in capsys.readouterr().err


def test_no_endpoint_is_an_error_not_a_call_to_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KHOA_LEAKS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(KhoaError, match="no Khoa endpoint"):
        resolve_endpoint(None, None)
    assert resolve_endpoint("http://127.0.0.1:9440", None) == "http://127.0.0.1:9440"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9999")
    assert resolve_endpoint(None, None) == "http://127.0.0.1:9999"


def test_throttling_is_waited_out_with_backoff() -> None:
    from botocore.exceptions import ClientError

    class Throttled(FakeLeaks):
        refusals = 3

        def check_leaked_values(self, Candidates: list[dict[str, str]]) -> dict[str, Any]:
            if self.refusals:
                self.refusals -= 1
                raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "Check")
            return super().check_leaked_values(Candidates)

    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    checker = LeakChecker(Throttled(known()), sleep=sleep, clock=lambda: now[0])
    found = checker.check(["nothing-here", LIVE])
    assert [m.resource_arn for m in found[1]] == [ARN] and 0 not in found
    assert slept == [0.5, 1.0, 2.0]  # backoff between the refused calls
    assert (checker.throttled, checker.requests) == (3, 4)
    # later calls keep a pace learnt from the throttling instead of being refused again
    before = len(slept)
    checker.check([f"more-{i}" for i in range(3 * BATCH_SIZE)])
    assert checker.throttled == 3 and len(slept) > before


def test_throttling_that_never_ends_is_an_error() -> None:
    from botocore.exceptions import ClientError

    refused = ClientError({"Error": {"Code": "ThrottlingException", "Message": "no"}}, "CheckLeakedValues")
    checker = LeakChecker(FakeLeaks(error=refused), sleep=lambda seconds: None)
    with pytest.raises(KhoaError, match="throttling"):
        checker.check(["a-candidate"])
    assert checker.throttled > 10
