"""Parameter labels under concurrency (finding 9), on SQLite and PostgreSQL: a label change reads the
parameter's labels and checks its version under the parameter's lock, in the transaction that
writes, and PutParameter and DeleteParameter take the same lock first.

Each test runs one request inside another, just before the other's first write
(tests.support.interleave): the interleaving in which a read-then-write without that lock wrote from
a stale view. They used to answer 500 (a label put by both), put 11 labels on a version, take off a
label that had moved, and leave labels on versions (or parameters) that no longer exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine

from khoa.protocol.errors import AWSError
from khoa.services.base import Service
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.internal import InternalKms
from khoa.services.ssm import build_service
from khoa.services.ssm.store import ParameterStore
from khoa.services.ssm.store import parameters as parameter_store
from tests.support.handlers import ACCOUNT, REGION, authorizer, barrier, context
from tests.support.interleave import before_first_write

NAME = "/race/p"


@dataclass
class Ssm:
    engine: Engine
    store: ParameterStore
    service: Service

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        return self.service.handlers[operation](context("ssm", operation), params)

    def fails(self, operation: str, **params: Any) -> str:
        return refused(lambda: self.call(operation, **params))

    def label(self, version: int, *labels: str) -> Callable[[], dict[str, Any]]:
        return lambda: self.call(
            "LabelParameterVersion", Name=NAME, ParameterVersion=version, Labels=list(labels)
        )

    def put(self, value: str) -> dict[str, Any]:
        return self.call("PutParameter", Name=NAME, Value=value, Type="String", Overwrite=True)

    def labels(self) -> dict[str, int]:
        """The parameter's labels and their versions; every one is on a version that exists."""
        row = self.store.get(ACCOUNT, REGION, NAME)
        assert row is not None
        kept = {v.version for v in self.store.versions(row.param_id)}
        labels = self.store.labels.of(row.param_id)
        assert set(labels.values()) <= kept
        return labels


def refused(call: Callable[[], Any]) -> str:
    """The AWS error code ``call`` answers with."""
    with pytest.raises(AWSError) as excinfo:
        call()
    return excinfo.value.code


@pytest.fixture
def ssm(store_engine: Engine) -> Ssm:
    auth = authorizer(store_engine)
    kms = KmsBackend.create(store_engine, barrier(), auth, cache_seconds=0)
    store = ParameterStore(store_engine, cache_seconds=0)
    made = Ssm(store_engine, store, build_service(store, InternalKms(kms), auth, lambda ctx, params: {}))
    made.put("one")
    made.put("two")
    return made


def test_a_label_put_on_two_versions_at_once_ends_on_one(ssm: Ssm) -> None:
    with before_first_write(ssm.engine, ssm.label(2, "L")) as inner:
        assert ssm.label(1, "L")() == {"InvalidLabels": [], "ParameterVersion": 1}
    assert inner == [{"InvalidLabels": [], "ParameterVersion": 2}]
    assert ssm.labels() == {"L": 1}  # moved by the call that wrote last


def test_concurrent_labels_never_put_more_than_ten_on_a_version(ssm: Ssm) -> None:
    ssm.label(1, *(f"L{i}" for i in range(9)))()
    with before_first_write(ssm.engine, ssm.label(1, "A")) as inner:
        assert refused(ssm.label(1, "B")) == "ParameterVersionLabelLimitExceeded"
    assert inner == [{"InvalidLabels": [], "ParameterVersion": 1}]
    assert sorted(ssm.labels()) == sorted([*(f"L{i}" for i in range(9)), "A"])


def test_unlabel_takes_off_only_a_label_still_on_that_version(ssm: Ssm) -> None:
    ssm.label(1, "L")()
    with before_first_write(ssm.engine, ssm.label(2, "L")):
        removed = ssm.call("UnlabelParameterVersion", Name=NAME, ParameterVersion=1, Labels=["L"])
    assert removed == {"RemovedLabels": [], "InvalidLabels": ["L"]}
    assert ssm.labels() == {"L": 2}


def test_put_parameter_keeps_the_oldest_version_a_label_was_put_on_meanwhile(
    ssm: Ssm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parameter_store, "MAX_VERSIONS", 2)  # the next version drops version 1
    with before_first_write(ssm.engine, ssm.label(1, "L")) as inner:
        assert ssm.fails("PutParameter", Name=NAME, Value="three", Overwrite=True) == (
            "ParameterMaxVersionLimitExceeded"
        )
    assert inner == [{"InvalidLabels": [], "ParameterVersion": 1}]
    assert ssm.labels() == {"L": 1}


def test_a_label_on_a_version_dropped_meanwhile_is_version_not_found(
    ssm: Ssm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parameter_store, "MAX_VERSIONS", 2)
    with before_first_write(ssm.engine, lambda: ssm.put("three")) as inner:
        assert refused(ssm.label(1, "L")) == "ParameterVersionNotFound"
    assert inner == [{"Version": 3, "Tier": "Standard"}]
    assert ssm.labels() == {}


def test_a_label_on_a_parameter_deleted_meanwhile_is_parameter_not_found(ssm: Ssm) -> None:
    with before_first_write(ssm.engine, lambda: ssm.call("DeleteParameter", Name=NAME)) as inner:
        assert refused(ssm.label(1, "L")) == "ParameterNotFound"
    assert inner == [{}]
    assert ssm.store.get(ACCOUNT, REGION, NAME) is None
