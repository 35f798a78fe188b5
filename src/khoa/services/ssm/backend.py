"""Parameter Store's per-process state."""

from __future__ import annotations

from sqlalchemy import Engine

from khoa.services.ssm.store import ParameterStore


class ParametersBackend:
    def __init__(self, engine: Engine, cache_seconds: float) -> None:
        self.engine = engine
        self.store = ParameterStore(engine, cache_seconds)
