"""Names no other test uses, so tests can share one server without meeting each other's resources."""

from __future__ import annotations

import uuid


def unique(prefix: str, separator: str = "-") -> str:
    """``prefix``, ``separator`` and 12 random hex digits: ``unique("user")`` is ``user-1f0c…``."""
    return f"{prefix}{separator}{uuid.uuid4().hex[:12]}"


def secret_name(prefix: str) -> str:
    """A Secrets Manager name under ``prefix/``: ``secret_name("meta")`` is ``meta/1f0c…``."""
    return unique(prefix, "/")


def parameter_name(prefix: str) -> str:
    """A top-level SSM parameter name: ``parameter_name("it")`` is ``/it-1f0c…``."""
    return "/" + unique(prefix)
