"""Generic detection through detect-secrets: its plugins, its filters and its baseline format.

detect-secrets keeps its configuration in a process-wide singleton; :func:`detector` configures it
for one scan (every plugin and the default filters, or what a ``.secrets.baseline`` names) and puts
the previous configuration back afterwards. Lines are handed to detect-secrets' own line scanner,
so its plugins and its line, context and secret filters (allowlist pragmas, heuristics, the
baseline's ``--exclude-*`` patterns) decide exactly as ``detect-secrets scan`` would. Scanning from
git history means files that are not on disk, so the one filter that requires a file on disk
(``is_invalid_file``) is turned off: the scanner reads what it scans itself.

A baseline's ``results`` are the accepted findings: a generic finding whose file and hashed value
(detect-secrets' SHA-1 ``hashed_secret``) are in the baseline is not reported. A value Khoa holds is
reported whatever the baseline says: accepting a live credential is not a false positive.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from detect_secrets.core import baseline as ds_baseline
from detect_secrets.core import scan as ds_scan
from detect_secrets.exceptions import UnableToReadBaselineError
from detect_secrets.settings import default_settings, get_filters, get_settings, transient_settings

_ON_DISK_FILTER = "detect_secrets.filters.common.is_invalid_file"
_VERIFICATION_FILTER = "detect_secrets.filters.common.is_ignored_due_to_verification_policies"


class BaselineError(Exception):
    """A baseline file that cannot be read or is not detect-secrets' format."""


@dataclass(frozen=True)
class Hit:
    """One string a detect-secrets plugin flagged."""

    line: int
    type: str
    value: str


class Detector:
    """detect-secrets, configured for one scan (see :func:`detector`).

    detect-secrets spends ~1-2 ms per line (every plugin and filter through its dependency injection),
    and code repeats lines (imports, boilerplate; the same file in many commits), so results are
    cached per (file extension, line): the only inputs its plugins and default filters read are the
    line, the file's type (from its extension) and, for allowlist pragmas and verification, the
    surrounding lines. Files with an allowlist pragma, and configurations with filters of their own or
    verification, are scanned without the cache.
    """

    CACHE_LIMIT = 200_000  # lines remembered (cleared when full)

    def __init__(self, accepted: set[tuple[str, str]], cacheable: bool = True) -> None:
        self._accepted = accepted
        self._cacheable = cacheable
        self._cache: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}

    def skips_file(self, filename: str) -> bool:
        """True when detect-secrets' file filters exclude ``filename`` (baseline, lock files,
        non-text extensions, the baseline's --exclude-files)."""
        return bool(ds_scan._is_filtered_out(required_filter_parameters=["filename"], filename=filename))

    def _scan(self, filename: str, lines: Sequence[tuple[int, str]]) -> list[Hit]:
        # detect-secrets reads a line's context by its position in the list it is given, so the lines
        # are numbered 1..n for it (history gives only the added lines) and renumbered afterwards.
        numbers = [number for number, _ in lines]
        found = ds_scan._process_line_based_plugins(
            list(enumerate((text for _, text in lines), start=1)), filename=filename
        )
        return [
            Hit(numbers[secret.line_number - 1], secret.type, secret.secret_value)
            for secret in found
            if secret.secret_value
        ]

    def scan(self, filename: str, lines: Sequence[tuple[int, str]]) -> list[Hit]:
        """Hits in ``lines`` ((line number, text) pairs of ``filename``)."""
        if not lines:
            return []
        if not self._cacheable or any("allowlist" in text for _, text in lines):
            return self._scan(filename, lines)
        extension = os.path.splitext(filename)[1]
        hits: list[Hit] = []
        missing: list[tuple[int, str]] = []
        for number, text in lines:
            cached = self._cache.get((extension, text))
            if cached is None:
                missing.append((number, text))
            else:
                hits.extend(Hit(number, kind, value) for kind, value in cached)
        if missing:
            by_line: dict[int, list[tuple[str, str]]] = {}
            for hit in self._scan(filename, missing):
                by_line.setdefault(hit.line, []).append((hit.type, hit.value))
            if len(self._cache) + len(missing) > self.CACHE_LIMIT:
                self._cache.clear()
            for number, text in missing:
                found = tuple(by_line.get(number, ()))
                self._cache[(extension, text)] = found
                hits.extend(Hit(number, kind, value) for kind, value in found)
        return hits

    def accepted(self, filenames: Sequence[str], value: str) -> bool:
        """True when the baseline accepts ``value`` in any of ``filenames`` (the spellings of one file)."""
        if not self._accepted:
            return False
        digest = hashlib.sha1(value.encode("utf-8")).hexdigest()  # noqa: S324 - detect-secrets' format
        return any((name, digest) in self._accepted for name in filenames)


def _accepted_results(data: dict[str, Any]) -> set[tuple[str, str]]:
    results = data.get("results", {})
    if not isinstance(results, dict):
        raise BaselineError("its results are not a mapping of file names to findings")
    accepted: set[tuple[str, str]] = set()
    for filename, entries in results.items():
        if not isinstance(entries, list):
            raise BaselineError(f"the results for {filename!r} are not a list")
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("hashed_secret"), str):
                raise BaselineError(f"a result for {filename!r} has no hashed_secret")
            if entry.get("is_secret") is True:
                continue  # marked as a real secret during an audit: still reported
            accepted.add((str(filename), entry["hashed_secret"]))
    return accepted


def load_baseline(path: str) -> dict[str, Any]:
    """A ``.secrets.baseline`` (upgraded to the installed detect-secrets' format)."""
    try:
        data = ds_baseline.load_from_file(path)
    except UnableToReadBaselineError as exc:
        cause = exc.__cause__
        why = (
            "not JSON" if isinstance(cause, ValueError) else getattr(cause, "strerror", None) or "unreadable"
        )
        raise BaselineError(why) from None
    if not isinstance(data, dict) or "version" not in data:
        raise BaselineError("not a detect-secrets baseline (no version)")
    try:
        upgraded: dict[str, Any] = ds_baseline.upgrade(data)
    except (KeyError, ValueError, TypeError) as exc:
        raise BaselineError(f"cannot read its format ({type(exc).__name__})") from None
    return upgraded


@contextmanager
def detector(baseline: dict[str, Any] | None = None, baseline_name: str = "") -> Iterator[Detector]:
    """detect-secrets configured for one scan: every plugin and the default filters, or the plugins and
    filters of ``baseline`` (whose own file, ``baseline_name``, is then never scanned)."""
    if baseline is None:
        with default_settings():
            yield _configured({})
        return
    config = {key: baseline[key] for key in ("plugins_used", "filters_used") if key in baseline}
    try:
        context = transient_settings(config)
        settings = context.__enter__()
    except (KeyError, TypeError, ValueError) as exc:
        raise BaselineError(f"its plugins or filters cannot be used ({type(exc).__name__}: {exc})") from None
    try:
        if baseline_name:
            settings.filters["detect_secrets.filters.common.is_baseline_file"] = {"filename": baseline_name}
        yield _configured(baseline)
    finally:
        context.__exit__(None, None, None)


def _configured(baseline: dict[str, Any]) -> Detector:
    settings = get_settings()
    settings.disable_filters(_ON_DISK_FILTER)
    get_filters.cache_clear()
    # The cache knows what the built-in filters read; a filter of the baseline's own, or verification
    # (which reads the surrounding lines), may read more.
    cacheable = all(
        path.startswith("detect_secrets.filters.") and path != _VERIFICATION_FILTER
        for path in settings.filters
    )
    return Detector(_accepted_results(baseline) if baseline else set(), cacheable)
