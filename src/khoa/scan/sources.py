"""Where the lines come from: files, directories, git working trees and git history.

Paths are read as bytes and decoded as UTF-8 (undecodable bytes replaced); binary files (a NUL byte
in the first 8 KiB) and files over :data:`MAX_FILE_BYTES` are skipped. A directory inside a git work
tree contributes the files git would track there (tracked files plus untracked ones that are not
ignored), so build output and vendored dependencies listed in ``.gitignore`` are not scanned; any
other directory contributes every file under it except ``.git``.

History is read with one ``git log -p -U0 --reverse`` per repository: every commit reachable from
HEAD, oldest first, and for each the lines it added with their line numbers in that commit's file.
The first commit in which a value appears in a file is the one that introduced it there.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 5 * 1024 * 1024
_GIT_TIMEOUT = 600


class SourceError(Exception):
    """A path that cannot be scanned (usage) or a git command that failed."""


@dataclass(frozen=True)
class Chunk:
    """Lines of one file: the whole file (working tree) or the lines a commit added (history)."""

    path: Path  # absolute path on disk (for history: where the file is in the work tree)
    repo_path: str  # path relative to the repository root ("" outside a repository)
    lines: list[tuple[int, str]]
    commit: str | None = None


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=_GIT_TIMEOUT, check=False)
    except FileNotFoundError:
        raise SourceError("git is not installed (it is needed to scan repositories)") from None
    except subprocess.TimeoutExpired:
        raise SourceError(f"git {args[0]} in {cwd} took more than {_GIT_TIMEOUT} s") from None


def git_root(directory: Path) -> Path | None:
    """The top of the git work tree holding ``directory``, or None."""
    result = _git(["rev-parse", "--show-toplevel"], directory)
    if result.returncode != 0:
        return None
    return Path(os.fsdecode(result.stdout.strip()))


def has_commits(root: Path) -> bool:
    return _git(["rev-parse", "--verify", "--quiet", "HEAD"], root).returncode == 0


def decode_lines(data: bytes) -> list[tuple[int, str]]:
    text = data.decode("utf-8", errors="replace")
    return list(enumerate(text.splitlines(), start=1))


def is_binary(data: bytes) -> bool:
    return b"\0" in data[:8192]


def _read(path: Path) -> bytes | None:
    try:
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return None if is_binary(data) else data


def _listed_files(directory: Path) -> Iterator[Path]:
    root = git_root(directory)
    if root is None:
        for base, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d != ".git")
            for name in sorted(files):
                yield Path(base) / name
        return
    result = _git(["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."], directory)
    if result.returncode != 0:
        raise SourceError(f"git ls-files failed in {directory}: {_first_line(result.stderr)}")
    seen: set[bytes] = set()
    for raw in result.stdout.split(b"\0"):
        if raw and raw not in seen:
            seen.add(raw)
            yield directory / os.fsdecode(raw)


def working_tree(paths: list[Path]) -> Iterator[Chunk]:
    """Every readable text file the paths name (files as given; directories as described above)."""
    roots: dict[Path, Path | None] = {}
    done: set[Path] = set()
    for given in paths:
        files = [given] if given.is_file() else list(_listed_files(given))
        for file in files:
            absolute = file.resolve() if not file.is_symlink() else file.absolute()
            if absolute in done:
                continue
            done.add(absolute)
            data = _read(file)
            if data is None:
                continue
            parent = absolute.parent
            if parent not in roots:
                roots[parent] = git_root(parent)
            root = roots[parent]
            repo_path = str(absolute.relative_to(root)) if root and absolute.is_relative_to(root) else ""
            yield Chunk(absolute, repo_path, decode_lines(data))


_HUNK = re.compile(rb"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_COMMIT_MARK = b"\x00khoa-commit "


def _unquote_path(raw: bytes) -> str:
    """A path as git prints it (C-quoted when it holds unusual bytes)."""
    if raw.startswith(b'"') and raw.endswith(b'"'):
        body = raw[1:-1]
        out = bytearray()
        i = 0
        simple = {b"n": b"\n", b"t": b"\t", b'"': b'"', b"\\": b"\\", b"a": b"\a", b"b": b"\b"}
        while i < len(body):
            ch = body[i : i + 1]
            if ch == b"\\" and i + 1 < len(body):
                nxt = body[i + 1 : i + 2]
                if nxt in simple:
                    out += simple[nxt]
                    i += 2
                    continue
                if body[i + 1 : i + 4].isdigit():
                    out.append(int(body[i + 1 : i + 4], 8))
                    i += 4
                    continue
            out += ch
            i += 1
        raw = bytes(out)
    return os.fsdecode(raw)


def history(root: Path, pathspec: str = ".", commits: set[str] | None = None) -> Iterator[Chunk]:
    """The lines every commit reachable from HEAD added under ``pathspec``, oldest commit first;
    ``commits`` (when given) receives every commit read."""
    if not has_commits(root):
        return
    command = [
        "git",
        "-c",
        "core.quotepath=off",
        "log",
        "--reverse",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-renames",
        "-p",
        "-U0",
        "--format=%x00khoa-commit %H",
        "HEAD",
        "--",
        pathspec,
    ]
    errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    try:
        process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=errors)
    except FileNotFoundError:
        errors.close()
        raise SourceError("git is not installed (it is needed to scan repositories)") from None
    assert process.stdout is not None
    commit: str | None = None
    repo_path: str | None = None
    lines: list[tuple[int, str]] = []
    new_left = old_left = 0
    number = 0

    def flush() -> Iterator[Chunk]:
        nonlocal lines
        if repo_path is not None and lines:
            yield Chunk(root / repo_path, repo_path, lines, commit)
        lines = []

    try:
        for raw in process.stdout:
            line = raw.rstrip(b"\n")
            if new_left or old_left:  # inside a hunk: content lines only
                if line.startswith(b"+"):
                    if len(line) <= MAX_FILE_BYTES:
                        lines.append((number, line[1:].decode("utf-8", errors="replace")))
                    number += 1
                    new_left -= 1
                elif line.startswith(b"-"):
                    old_left -= 1
                elif line.startswith(b"\\"):
                    pass  # "\ No newline at end of file"
                else:
                    new_left = old_left = 0  # a malformed hunk: resynchronise on headers
                continue
            if line.startswith(_COMMIT_MARK):
                yield from flush()
                commit = line[len(_COMMIT_MARK) :].decode("ascii", errors="replace")
                if commits is not None:
                    commits.add(commit)
                repo_path = None
            elif line.startswith(b"diff --git "):
                yield from flush()
                repo_path = None
            elif line.startswith(b"+++ "):
                target = line[4:]
                repo_path = None if target == b"/dev/null" else _unquote_path(target)
                if repo_path is not None and repo_path.startswith("b/"):
                    repo_path = repo_path[2:]
            elif line.startswith(b"Binary files "):
                repo_path = None
            elif line.startswith(b"@@ "):
                match = _HUNK.match(line)
                if match:
                    old_left = int(match.group(1)) if match.group(1) is not None else 1
                    number = int(match.group(2))
                    new_left = int(match.group(3)) if match.group(3) is not None else 1
        yield from flush()
    finally:
        process.stdout.close()
        code = process.wait()
        errors.seek(0)
        stderr = errors.read()
        errors.close()
    if code != 0:
        raise SourceError(f"git log failed in {root}: {_first_line(stderr)}")


def _first_line(data: bytes) -> str:
    lines = [line for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    return lines[0] if lines else "no message"
