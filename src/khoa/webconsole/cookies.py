"""The console's cookies and paths: names, flags, and where a browser may be sent after sign-in."""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote

PREFIX = "/console"
SESSION_COOKIE = "khoa_console"
PRESESSION_COOKIE = "khoa_console_pre"  # the CSRF key of the sign-in forms
FLASH_COOKIE = "khoa_console_flash"  # a notice for the next page (never in the URL)
# What a URL in a header (Location) may hold as it is: printable ASCII but the space.
PRINTABLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))


def cookie(name: str, value: str, *, secure: bool, max_age: int | None = None) -> bytes:
    """A console cookie: never readable by scripts, never sent cross-site, only under /console."""
    parts = [f"{name}={value}", f"Path={PREFIX}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts).encode()


def safe_next(path: str) -> str:
    """Where to go after sign-in: only a path of this console (never another site, nor a path that a
    browser would resolve outside /console), as printable ASCII fit for a ``Location`` header. A
    character outside ASCII is percent-encoded (UTF-8, as a browser sends it); anything else (a
    control character, CR/LF included, or white space) sends the browser to the console's home."""
    home = PREFIX + "/"
    if not path.startswith(home) or "//" in path or "\\" in path:
        return home
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in path):
        return home
    encoded = quote(path, safe=PRINTABLE_ASCII)
    segments = unquote(encoded.split("?", 1)[0].split("#", 1)[0]).split("/")
    if any(segment in (".", "..") for segment in segments):  # /console/../x is /x
        return home
    return encoded
