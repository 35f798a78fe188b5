"""GetRandomPassword: a password from the OS CSPRNG with AWS's character classes and options."""

from __future__ import annotations

import secrets
import string
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import errors
from khoa.services.secretsmanager.backend import SecretsBackend

PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_UNIFORM_ATTEMPTS = 8


def get_random_password(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Needs none of the collaborators: it takes them only to look like every other handler."""
    length = params.get("PasswordLength", 32)
    excluded = set(params.get("ExcludeCharacters", ""))
    classes = []
    if not params.get("ExcludeLowercase", False):
        classes.append(string.ascii_lowercase)
    if not params.get("ExcludeUppercase", False):
        classes.append(string.ascii_uppercase)
    if not params.get("ExcludeNumbers", False):
        classes.append(string.digits)
    if not params.get("ExcludePunctuation", False):
        classes.append(PUNCTUATION)
    if params.get("IncludeSpace", False):
        classes.append(" ")
    pools = [[c for c in group if c not in excluded] for group in classes]
    pools = [p for p in pools if p]
    if not pools:
        raise errors.invalid_parameter("You excluded every character: the password can't be generated.")
    require_each = params.get("RequireEachIncludedType", True)
    if require_each and length < len(pools):
        raise errors.invalid_parameter("Password length is too short based on the required types.")
    return {"RandomPassword": _draw(pools, length, require_each)}


def _draw(pools: list[list[str]], length: int, require_each: bool) -> str:
    """A password of ``length`` characters from ``pools`` (each pool at least once if ``require_each``).

    Drawn uniformly and redrawn until every pool appears, a few times at most: with a tiny pool and a
    short password that could take tens of thousands of draws on the event loop. After that one
    character of each pool is placed and the rest drawn from all of them, in a shuffled order.
    """
    alphabet = [c for pool in pools for c in pool]
    for _ in range(_UNIFORM_ATTEMPTS):
        password = [secrets.choice(alphabet) for _ in range(length)]
        if not require_each or all(any(c in pool for c in password) for pool in pools):
            return "".join(password)
    password = [secrets.choice(pool) for pool in pools]
    password += [secrets.choice(alphabet) for _ in range(length - len(password))]
    secrets.SystemRandom().shuffle(password)
    return "".join(password)


OPERATIONS = {"GetRandomPassword": get_random_password}
