"""khoa.client is a library applications install with `pip install khoa` (base dependencies as version
ranges), without the server's exact pins (the `server` extra). These tests keep it that way: the client
modules may import only the standard library, khoa.client itself, and the distributions the client
declares (the base dependencies and the `postgres`/`mysql` driver extras), and importing khoa.client
loads nothing from the server-only set.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from functools import cache
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "src" / "khoa" / "client"
CLIENT_EXTRAS = ("postgres", "mysql")  # the drivers connect_postgres / connect_mysql import when called


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (SQLAlchemy == sqlalchemy, a_b == a-b)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution a requirement string names: 'psycopg[binary]==3.2.13' -> 'psycopg'."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return normalise(match.group(1))


@cache
def project() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        table: dict[str, object] = tomllib.load(handle)["project"]
    return table


def declared(*extras: str) -> set[str]:
    """Distribution names of the base dependencies (empty extras) or of the named extras."""
    table = project()
    if not extras:
        requirements = table["dependencies"]
    else:
        optional = table["optional-dependencies"]
        assert isinstance(optional, dict)
        requirements = [req for extra in extras for req in optional[extra]]
    assert isinstance(requirements, list)
    return {requirement_name(req) for req in requirements}


def client_allowed() -> set[str]:
    return declared() | declared(*CLIENT_EXTRAS)


def server_only() -> set[str]:
    """What the server needs and the client does not declare (the set the client must not touch)."""
    return declared("server") - client_allowed()


@cache
def modules_of() -> dict[str, set[str]]:
    """Installed distribution name -> its top-level import names."""
    found: dict[str, set[str]] = defaultdict(set)
    for module, distributions in metadata.packages_distributions().items():
        for distribution in distributions:
            found[normalise(distribution)].add(module)
    return found


def distributions_of(module: str) -> set[str]:
    return {normalise(d) for d in metadata.packages_distributions().get(module, [])}


def client_imports() -> dict[str, set[str]]:
    """Every absolute import in src/khoa/client/*.py (function-local ones too) -> the files using it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in sorted(CLIENT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found[name].add(path.name)
    return found


def test_the_dependency_layout_keeps_the_client_on_ranges_and_the_server_on_pins() -> None:
    # The base dependencies are what an application gets: ranges, never exact pins...
    table = project()
    base = table["dependencies"]
    assert isinstance(base, list) and base
    assert not [req for req in base if "==" in req], base
    # ...and the server extra pins everything exactly, including what the client uses.
    optional = table["optional-dependencies"]
    assert isinstance(optional, dict)
    assert all("==" in req for req in optional["server"]), optional["server"]
    assert declared() <= declared("server")
    assert not {"moto"} & {requirement_name(req) for reqs in optional.values() for req in reqs}


def test_client_modules_import_only_what_the_client_declares() -> None:
    allowed = client_allowed()
    imports = client_imports()
    assert imports, "no imports found: has src/khoa/client moved?"
    wrong: list[str] = []
    for module, files in sorted(imports.items()):
        top = module.split(".")[0]
        if top in sys.stdlib_module_names:
            continue
        if top == "khoa":
            if module != "khoa.client" and not module.startswith("khoa.client."):
                wrong.append(f"{module} (in {', '.join(sorted(files))}): server code")
            continue
        distributions = distributions_of(top)
        if not distributions:
            wrong.append(f"{module} (in {', '.join(sorted(files))}): no installed distribution provides it")
        elif not distributions & allowed:
            wrong.append(
                f"{module} (in {', '.join(sorted(files))}): from {', '.join(sorted(distributions))}, "
                "which the client does not declare"
            )
    assert not wrong, "khoa.client imports outside its declared dependencies:\n" + "\n".join(wrong)


def test_importing_the_client_loads_nothing_server_only(tmp_path: Path) -> None:
    code = "import json, sys\nimport khoa.client\nprint(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = set(json.loads(result.stdout))
    tops = {name.split(".")[0] for name in loaded}

    forbidden = {module: d for d in server_only() for module in modules_of().get(d, set())}
    # The database drivers are declared (as extras) but imported only when a connect_* is called.
    lazily = {module: d for d in declared(*CLIENT_EXTRAS) for module in modules_of().get(d, set())}
    assert forbidden, "the server-only set maps to no installed module: is the server extra installed?"
    pulled = sorted(f"{module} ({forbidden[module]})" for module in tops & forbidden.keys())
    eager = sorted(f"{module} ({lazily[module]})" for module in tops & lazily.keys())
    server_code = sorted(
        name for name in loaded if name.startswith("khoa.") and not name.startswith("khoa.client")
    )
    assert not pulled, f"import khoa.client loaded server-only dependencies: {pulled}"
    assert not eager, f"import khoa.client loaded a database driver eagerly: {eager}"
    assert not server_code, f"import khoa.client loaded server modules: {server_code}"
