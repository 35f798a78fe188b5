"""The ``khoa`` console script.

``pip install khoa`` brings the client library (khoa.client) and its version ranges only; the server
and its command line need the ``server`` extra (``pip install 'khoa[server]'``, which ``make install``
installs). The script is installed either way, so without the server's dependencies it says what to
install instead of ending in a traceback.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from khoa.cli.main import main as run_cli
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "khoa":
            raise  # a missing Khoa module is a broken install, not a missing extra
        sys.exit(
            f"khoa: the server's dependencies are not installed (no module named {exc.name!r}); "
            "install them with: pip install 'khoa[server]'"
        )
    run_cli()
