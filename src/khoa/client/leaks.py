"""A boto3 client for Khoa's leak detection service (``khoa-leaks``), for scanners and the CLI.

Khoa ships the service's model in botocore's layout (``khoa/protocol/models``); a session's loader
finds it once that directory is among its search paths, and then ``session.client("khoa-leaks")``
signs and parses as for any AWS service (SigV4 with the signing name ``khoa``):

    from khoa.client.leaks import leaks_client
    leaks = leaks_client(boto3.Session(), "http://127.0.0.1:9440", "us-east-1")
    leaks.check_leaked_values(Candidates=[{"Id": "a.py:3", "Value": candidate}])["Matches"]

Only the model's location is known here: nothing of the server is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MODELS_DIRECTORY = Path(__file__).resolve().parent.parent / "protocol" / "models"
SERVICE_NAME = "khoa-leaks"


def add_models(session: Any) -> None:
    """Make ``session`` (a boto3 or botocore session) find Khoa's service models."""
    core = getattr(session, "_session", session)  # boto3.Session wraps a botocore session
    loader = core.get_component("data_loader")
    path = str(MODELS_DIRECTORY)
    if path not in loader.search_paths:
        loader.search_paths.insert(0, path)


def leaks_client(session: Any, endpoint_url: str | None, region: str | None, config: Any = None) -> Any:
    """A ``khoa-leaks`` client of ``session`` (a ``boto3.Session``) at ``endpoint_url`` in ``region``
    (None: the session's own endpoint and Region settings); ``config`` is a ``botocore.config.Config``."""
    add_models(session)
    return session.client(SERVICE_NAME, endpoint_url=endpoint_url, region_name=region, config=config)
