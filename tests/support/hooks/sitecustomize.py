"""Test-only interpreter hook: installs the test harness into ``khoa server`` processes started by tests.

``tests/support/server.py`` puts this directory first on ``PYTHONPATH`` and sets ``KHOA_TEST_HARNESS=1``
for the servers it starts. Python imports ``sitecustomize`` at start-up in every process, including
uvicorn's worker processes, so each of them gets the harness. Nothing under ``src/`` knows about it: a
server started any other way (the product) has no test hooks at all.

Being first on the path, this module hides any other ``sitecustomize`` (an interpreter's or a
distribution's); it runs that one too, so the environment behaves as it would without the harness.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

if os.environ.get("KHOA_TEST_HARNESS") == "1":
    import khoa_test_harness

    khoa_test_harness.install()


def _run_the_hidden_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None or spec.origin == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_run_the_hidden_sitecustomize()
