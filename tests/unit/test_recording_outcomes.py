"""What the trail records of a call the database stopped answering (khoa.server.recording): a read
refused 503 changed nothing; a write that had started may have committed before the database fell
silent (a COMMIT whose reply was lost), so its outcome is recorded as unknown, while the caller is
answered 503 as before."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
import sqlalchemy.exc

from khoa.audit.events import AuditEvent
from khoa.audit.outcomes import UNKNOWN_CODE
from khoa.clock import Clock
from khoa.ids import IdSource
from khoa.logs import LogLimiter
from khoa.observe.metrics import Metrics
from khoa.server.recording import Call, CallRecorder


class _Trail:
    """The audit recorder's interface, keeping what it is given."""

    def __init__(self) -> None:
        self.recorded: list[AuditEvent] = []
        self.finalized: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.recorded.append(event)

    async def finalize(self, event: AuditEvent) -> None:
        self.finalized.append(event)

    def mark_pending(self, event: AuditEvent) -> None:
        pass


def _silence() -> Exception:
    """What the driver raises when the database stops answering mid-statement (or mid-COMMIT)."""
    return sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))


@pytest.mark.parametrize("write", [True, False], ids=["write", "read"])
def test_a_write_cut_off_by_the_database_is_recorded_as_of_unknown_outcome(write: bool) -> None:
    trail = _Trail()
    recorder = CallRecorder(
        trail,  # type: ignore[arg-type]
        IdSource(),
        Clock(),
        Metrics(),
        default_account="111122223333",
        default_region="us-east-1",
    )
    call = Call(request_id="req-1", operation="PutSecretValue" if write else "GetSecretValue")

    async def run() -> Any:
        if write:
            await recorder.record_before(call)  # the pipeline records a write before it runs
        response = await recorder.refuse_failure(call, _silence(), LogLimiter(logging.getLogger("t")), "x")
        await asyncio.sleep(0)  # the refusal is recorded without holding the caller
        await asyncio.sleep(0)
        return response

    response = asyncio.run(run())
    assert response.status == 503
    assert json.loads(response.body)["__type"] == "ServiceUnavailableException"
    outcome = (trail.finalized if write else trail.recorded[-1:])[-1]
    if write:
        assert outcome.event_id == call.pre_event.event_id if call.pre_event else False
        assert outcome.error_code == UNKNOWN_CODE
        assert "may or may not have taken effect" in outcome.record["errorMessage"]
    else:
        assert outcome.error_code == "ServiceUnavailableException"
