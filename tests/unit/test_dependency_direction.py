"""The dependency direction of docs/architecture.md, checked: which package may import which.

Read from the source (``ast``), so a wrong import fails here before anyone has to notice it in review.
The layers, lowest first; a module may import its own layer and the layers below, never above:

0. foundations — client, scan (the leak scanner, a client of the API), clock, ids, cache, envconfig,
   sequence, network, affinity, outbound, crypto, storage,
   protocol (the wire: models, encodings, errors, the request context)
1. node plumbing — settings, lease, jobs, auth (credentials, SigV4, revocation), bootstrap
2. access — the IAM policy language and its evaluation (the authoriser every service is given)
3. records — audit (the trail), changes (change events, streams, webhooks)
4. services — services.base/authorization, then one package per AWS service
5. background — secret_rotation, alerts, observe, review (khoa review's rules)
6. runtime — the composition root: the only module that knows every part
7. entry points — app, server, cli, __main__

Two further rules: nothing imports a private name (``_x``) from another module, and the client
library (``khoa.client``) imports nothing of the server.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "khoa"

LAYERS: dict[str, int] = {
    "client": 0,
    "scan": 0,  # the leak scanner: a client of the khoa-leaks API (khoa scan's engine)
    **dict.fromkeys(
        (
            "clock",
            "ids",
            "cache",
            "envconfig",
            "sequence",
            "network",
            "affinity",
            "outbound",
            "blocking",
            "crypto",
            "storage",
            "protocol",
            "logs",
        ),
        0,
    ),
    **dict.fromkeys(("settings", "lease", "jobs", "auth", "bootstrap"), 1),
    "access": 2,
    **dict.fromkeys(("audit", "changes"), 3),
    "services": 4,
    **dict.fromkeys(("secret_rotation", "alerts", "observe"), 5),
    "review": 5,  # khoa review: reads storage, policies (access) and the trail (audit)
    "runtime": 6,
    **dict.fromkeys(("app", "server", "cli", "console", "__main__"), 7),
    "xks_proxy": 7,  # khoa xks-proxy: a second served application (its own ASGI app)
    "webconsole": 7,  # the web console: served by the app, a client of the pipeline like an SDK
}

# Service packages may use each other only through these modules (their published internal APIs).
SERVICE_APIS = {
    "khoa.services.kms.internal",
}
# Settings declares every part's settings in one place, so it may read their declarations.
ALLOWED = {
    ("khoa.settings", "khoa.alerts.config"),
    # The request context names its caller; a Principal is a plain value (no imports of its own).
    ("khoa.protocol.context", "khoa.auth.principal"),
}


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SOURCE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(module imported, names imported, line) for every ``khoa`` import, at run time or for typing."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "khoa" or node.module.startswith("khoa."):
                yield node.module, [alias.name for alias in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("khoa."):
                    yield alias.name, [], node.lineno


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def service_of(module: str) -> str | None:
    parts = module.split(".")
    return (
        parts[2]
        if len(parts) > 2 and parts[1] == "services" and parts[2] not in ("base", "authorization")
        else None
    )


def violations() -> Iterator[str]:
    known = {name for name, _ in modules()}
    for module, path in modules():
        here = top(module)
        if here not in LAYERS and module != "khoa":
            yield f"{module}: not placed in a layer (add it to LAYERS and docs/architecture.md)"
            continue
        for imported, names, line in imports(path):
            where = f"{module}:{line} imports {imported}"
            for name in names:
                private = name.startswith("_") and not name.startswith("__")
                if private and f"{imported}.{name}" not in known and imported != module:
                    yield f"{where}.{name}: a private name of another module"
            # `from package import module` depends on that module, not on the package.
            submodules = [f"{imported}.{name}" for name in names if f"{imported}.{name}" in known]
            for target in submodules or [imported]:
                yield from _judge(module, here, target, where, known)


def _judge(module: str, here: str, target: str, where: str, known: set[str]) -> Iterator[str]:
    if (module, target) in ALLOWED or target == "khoa":
        return
    there = top(target)
    if module.startswith("khoa.client") and not target.startswith("khoa.client"):
        yield f"{where}: the client library must not depend on the server"
    if there in LAYERS and LAYERS[there] > LAYERS[here]:
        yield f"{where}: layer {here} ({LAYERS[here]}) may not import {there} ({LAYERS[there]})"
    mine, theirs = service_of(module), service_of(target)
    if mine and theirs and mine != theirs and not any(target.startswith(api) for api in SERVICE_APIS):
        yield f"{where}: services use each other only through {sorted(SERVICE_APIS)}"


def test_every_import_follows_the_dependency_direction() -> None:
    found = list(violations())
    assert not found, "\n".join(found)


@pytest.mark.parametrize("attribute", ["ctx.runtime"])
def test_handlers_reach_nothing_through_the_request_context(attribute: str) -> None:
    users = [str(path) for _, path in modules() if attribute in path.read_text()]
    assert not users, f"{attribute} used in {users}"
