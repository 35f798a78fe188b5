"""Running the ``khoa`` command line as an operator would: a subprocess of this interpreter."""

from __future__ import annotations

import subprocess
import sys


def run_khoa(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "khoa", *args], env=env, capture_output=True, text=True, timeout=180
    )
