"""LabelParameterVersion and UnlabelParameterVersion. A label is on one version at a time, and a version
carries at most 10 (checked by the store, in the writing transaction)."""

from __future__ import annotations

import re
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.ssm import errors, names
from khoa.services.ssm.backend import ParametersBackend
from khoa.services.ssm.store import ParameterRow, ParameterStore

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
    row = _parameter(ssm.store, ctx, params["Name"])
    invalid = [label for label in params["Labels"] if not valid_label(label)]
    wanted = [label for label in dict.fromkeys(params["Labels"]) if valid_label(label)]
    # The version is checked, and the labels counted and moved, under the parameter's lock.
    number = ssm.store.labels.attach(row.param_id, row.name, params.get("ParameterVersion"), wanted)
    return {"InvalidLabels": invalid, "ParameterVersion": number}


def unlabel_parameter_version(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    row = _parameter(ssm.store, ctx, params["Name"])
    removed = ssm.store.labels.detach(row.param_id, row.name, params["ParameterVersion"], params["Labels"])
    invalid = [label for label in params["Labels"] if label not in removed]
    return {"RemovedLabels": removed, "InvalidLabels": invalid}


OPERATIONS = {
    "LabelParameterVersion": label_parameter_version,
    "UnlabelParameterVersion": unlabel_parameter_version,
}
