"""What every operator command shares: how to find the installation (data dir or database URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from khoa.settings import Settings

DataDir = Annotated[Path | None, typer.Option(help="Data directory of the installation (default .khoa).")]
DatabaseUrl = Annotated[
    str | None, typer.Option(help="Database URL, instead of the data directory's SQLite.")
]


def installation_settings(data_dir: Path | None, database_url: str | None) -> Settings:
    """Settings for a command run beside (or instead of) the server on the same data."""
    overrides: dict[str, object] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    return Settings.from_env(**overrides)
