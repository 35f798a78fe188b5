"""Why a trail writer gave up: the trail is busy, or another writer got there first."""

from __future__ import annotations


class TrailBusy(Exception):
    """Another process is delivering or writing digests right now."""


class TrailConflict(Exception):
    """Another writer delivered the same events or extended the same chain first; nothing was kept."""
