"""The console's cookies and paths: names, flags, and where a browser may be sent after sign-in."""

from __future__ import annotations

PREFIX = "/console"
SESSION_COOKIE = "khoa_console"
PRESESSION_COOKIE = "khoa_console_pre"  # the CSRF key of the sign-in forms
FLASH_COOKIE = "khoa_console_flash"  # a notice for the next page (never in the URL)


def cookie(name: str, value: str, *, secure: bool, max_age: int | None = None) -> bytes:
    """A console cookie: never readable by scripts, never sent cross-site, only under /console."""
    parts = [f"{name}={value}", f"Path={PREFIX}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts).encode()


def safe_next(path: str) -> str:
    """Where to go after sign-in: only a path of this console (never another site)."""
    if path.startswith(PREFIX + "/") and "//" not in path and "\\" not in path:
        return path
    return PREFIX + "/"
