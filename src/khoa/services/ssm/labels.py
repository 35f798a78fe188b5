"""LabelParameterVersion and UnlabelParameterVersion. A label is on one version at a time."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.ssm import errors, names
from khoa.services.ssm.backend import ParametersBackend
from khoa.services.ssm.store import ParameterRow, ParameterStore

MAX_LABELS_PER_VERSION = 10
_LABEL = re.compile(r"[A-Za-z0-9._\-]{1,100}")


def valid_label(label: str) -> bool:
    lowered = label.lower()
    return bool(_LABEL.fullmatch(label)) and not label[0].isdigit() and not lowered.startswith(("aws", "ssm"))


def _parameter(store: ParameterStore, ctx: RequestContext, name: str) -> ParameterRow:
    from khoa.services.ssm.parameters import find

    selector = names.parse_selector(ctx, name)
    row = find(store, ctx, selector) if selector.version is None and selector.label is None else None
    if row is None:
        raise errors.not_found()
    return row


def label_parameter_version(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    store = ssm.store
    row = _parameter(store, ctx, params["Name"])
    number = params.get("ParameterVersion", row.version)
    if store.version(row.param_id, number) is None:
        raise errors.version_not_found(
            f"Systems Manager could not find version {number} of {row.name}. Verify "
            "the version and try again."
        )
    current = store.labels.of(row.param_id)
    invalid = [label for label in params["Labels"] if not valid_label(label)]
    wanted = [label for label in dict.fromkeys(params["Labels"]) if valid_label(label)]
    after = {**current, **{label: number for label in wanted}}
    if Counter(after.values())[number] > MAX_LABELS_PER_VERSION:
        raise errors.code(
            "ParameterVersionLabelLimitExceeded",
            "A parameter version can have maximum 10 labels.Move one or more labels to another "
            "version and try again.",
        )
    store.labels.attach(
        row.param_id,
        number,
        added=[label for label in wanted if label not in current],
        moved=[label for label in wanted if label in current and current[label] != number],
    )
    return {"InvalidLabels": invalid, "ParameterVersion": number}


def unlabel_parameter_version(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    store = ssm.store
    row = _parameter(store, ctx, params["Name"])
    number = params["ParameterVersion"]
    if store.version(row.param_id, number) is None:
        raise errors.version_not_found(
            f"Systems Manager could not find version {number} of {row.name}. Verify "
            "the version and try again."
        )
    current = store.labels.of(row.param_id)
    removed = [label for label in dict.fromkeys(params["Labels"]) if current.get(label) == number]
    invalid = [label for label in params["Labels"] if current.get(label) != number]
    store.labels.detach(row.param_id, removed)
    return {"RemovedLabels": removed, "InvalidLabels": invalid}


OPERATIONS = {
    "LabelParameterVersion": label_parameter_version,
    "UnlabelParameterVersion": unlabel_parameter_version,
}
