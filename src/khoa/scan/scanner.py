"""One scan: read the sources, detect, ask Khoa about each distinct candidate once, build findings.

Candidates are checked as they are found, in batches of up to 100 distinct values, so memory holds
only the values waiting for an answer and those that matched; values already answered are
remembered by a keyed digest (BLAKE2b under a per-scan random key), not by value.

Locations: a value in the working tree is reported at each line it is on; a value found only in
history is reported at the first commit that added it to that file. With ``--history`` a value still
in the working tree also carries the commit that introduced it.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from khoa.scan.candidates import tokens
from khoa.scan.check import BATCH_SIZE, LeakChecker, Match
from khoa.scan.detect import Detector
from khoa.scan.report import Finding, ScanReport, khoa_type, mask
from khoa.scan.sources import Chunk, SourceError, git_root, history, working_tree


class Occurrence(NamedTuple):
    key: str  # absolute path: one file, however it was reached
    display: str
    names: tuple[str, ...]  # the spellings a baseline may use (repository path, shown path)
    line: int
    commit: str | None


@dataclass
class ScanOptions:
    paths: list[Path]
    history: bool = False


def display_path(path: Path) -> str:
    """Relative to the current directory when under it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def source_url(paths: list[Path]) -> str:
    """Where the values were found, for ReportLeakedValues: the repository's origin remote (without
    any credentials in it) or the scanned path as a file URL."""
    first = paths[0].resolve()
    directory = first if first.is_dir() else first.parent
    try:
        result = subprocess.run(
            ["git", "remote", "get-url", "origin"],
            cwd=directory,
            capture_output=True,
            timeout=30,
            check=False,
        )
        remote = result.stdout.decode("utf-8", errors="replace").strip() if result.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        remote = ""
    if remote:
        parts = urlsplit(remote)
        if parts.scheme and parts.hostname:
            netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
            remote = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        elif "@" in remote.split(":", 1)[0]:  # scp-like user@host:path
            remote = remote.split("@", 1)[1]
        return remote[:2048]
    return first.as_uri()[:2048]


@dataclass
class _State:
    checker: LeakChecker
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    answered: dict[bytes, bool] = field(default_factory=dict)  # digest -> matched
    pending: dict[str, list[Occurrence]] = field(default_factory=dict)
    matched: dict[str, tuple[list[Match], list[Occurrence]]] = field(default_factory=dict)
    hits: dict[tuple[str, str], tuple[list[Occurrence], set[str]]] = field(default_factory=dict)
    candidates: int = 0

    def digest(self, value: str) -> bytes:
        return hashlib.blake2b(
            value.encode("utf-8", errors="surrogatepass"), key=self.key, digest_size=16
        ).digest()

    def add(self, value: str, occurrence: Occurrence) -> None:
        waiting = self.pending.get(value)
        if waiting is not None:
            waiting.append(occurrence)
            return
        known = self.matched.get(value)
        if known is not None:
            known[1].append(occurrence)
            return
        digest = self.digest(value)
        if digest in self.answered:
            return  # answered and clean (a matched value is in self.matched)
        self.pending[value] = [occurrence]
        if len(self.pending) >= BATCH_SIZE:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        values = list(self.pending)
        self.candidates += len(values)
        found = self.checker.check(values)
        for index, value in enumerate(values):
            occurrences = self.pending[value]
            matches = found.get(index)
            self.answered[self.digest(value)] = bool(matches)
            if matches:
                self.matched[value] = (matches, occurrences)
        self.pending.clear()


def _scan_chunk(chunk: Chunk, detector: Detector, state: _State) -> None:
    display = display_path(chunk.path)
    name = chunk.repo_path or display
    if detector.skips_file(name):
        return
    names = tuple(dict.fromkeys(n for n in (chunk.repo_path, display) if n))
    key = str(chunk.path)
    by_line: dict[int, list[tuple[str, str]]] = {}
    for hit in sorted(detector.scan(name, chunk.lines), key=lambda h: -len(h.value)):
        kept = by_line.setdefault(hit.line, [])
        # A plugin may flag part of what another flagged (detect-secrets' GitHub detector yields just
        # "ghp" of a token): one finding for the longer value, with both detectors.
        container = next((v for _, v in kept if hit.value in v), hit.value)
        kept.append((hit.type, container))
    for number, text in chunk.lines:
        occurrence = Occurrence(key, display, names, number, chunk.commit)
        values = set(tokens(text))
        for kind, value in by_line.get(number, ()):
            values.add(value)
            entry = state.hits.setdefault((value, key), ([], set()))
            entry[0].append(occurrence)
            entry[1].add(kind)
        for value in values:
            state.add(value, occurrence)


def _locations(occurrences: Iterable[Occurrence]) -> Iterator[Occurrence]:
    """Per file: every working-tree line (with the introducing commit when history knows it), or the
    first commit that added the value when it is only in history."""
    by_file: dict[str, tuple[list[Occurrence], Occurrence | None]] = {}
    for occ in occurrences:
        tree, first = by_file.get(occ.key, ([], None))
        if occ.commit is None:
            if all(o.line != occ.line for o in tree):
                tree.append(occ)
        elif first is None:
            first = occ
        by_file[occ.key] = (tree, first)
    for tree, first in by_file.values():
        if tree:
            for occ in sorted(tree, key=lambda o: o.line):
                yield occ._replace(commit=first.commit if first else None)
        elif first is not None:
            yield first


def history_targets(paths: list[Path]) -> list[tuple[Path, str]]:
    """(repository root, pathspec) for each path; SourceError for a path outside any repository."""
    targets: list[tuple[Path, str]] = []
    for path in paths:
        absolute = path.resolve()
        root = git_root(absolute if absolute.is_dir() else absolute.parent)
        if root is None:
            raise SourceError(f"{path} is not in a git repository (--history reads git history)")
        spec = str(absolute.relative_to(root)) if absolute != root else "."
        if (root, spec) not in targets:
            targets.append((root, spec))
    return targets


def run_scan(options: ScanOptions, detector: Detector, checker: LeakChecker) -> ScanReport:
    state = _State(checker)
    commits: set[str] = set()
    files = 0
    if options.history:
        for root, spec in history_targets(options.paths):
            for chunk in history(root, spec, commits):
                _scan_chunk(chunk, detector, state)
    for chunk in working_tree(options.paths):
        files += 1
        _scan_chunk(chunk, detector, state)
    state.flush()
    if checker.calls == 0:
        checker.probe()  # nothing was sent: still prove Khoa answers this caller

    findings: list[Finding] = []
    hit_kinds: dict[tuple[str, str, int], set[str]] = {}
    for (value, _key), (occurrences, kinds) in state.hits.items():
        for occ in occurrences:
            hit_kinds.setdefault((value, occ.key, occ.line), set()).update(kinds)
    for value, (matches, occurrences) in state.matched.items():
        for occ in _locations(occurrences):
            detectors = sorted(hit_kinds.get((value, occ.key, occ.line), ()))
            for match in matches:
                findings.append(
                    Finding(
                        file=occ.display,
                        line=occ.line,
                        type=khoa_type(match.resource_type, value, match.access_key_id),
                        status=match.status,
                        masked=mask(value),
                        resource=match.resource_arn,
                        commit=occ.commit,
                        resource_type=match.resource_type,
                        access_key_id=match.access_key_id,
                        version_id=match.version_id,
                        version_stages=list(match.version_stages),
                        field=match.field,
                        invalid_since=match.invalid_since,
                        detectors=detectors,
                    )
                )
    for (value, _key), (occurrences, all_kinds) in state.hits.items():
        if value in state.matched:
            continue
        for occ in _locations(occurrences):
            if detector.accepted(occ.names, value):
                continue
            names = sorted(hit_kinds.get((value, occ.key, occ.line), ())) or sorted(all_kinds)
            findings.append(
                Finding(
                    file=occ.display,
                    line=occ.line,
                    type=" / ".join(names),
                    status="pattern",
                    masked=mask(value),
                    commit=occ.commit,
                    detectors=names,
                )
            )
    findings.sort(key=Finding.sort_key)
    return ScanReport(
        findings=findings,
        files=files,
        commits=len(commits),
        candidates=state.candidates,
        requests=checker.requests,
        throttled=checker.throttled,
        responses=checker.responses,
    )


__all__ = ["Occurrence", "ScanOptions", "display_path", "run_scan", "source_url"]
