"""AWS IAM (awsQuery protocol, XML responses): users, groups, roles, access keys, inline and managed
policies with versions, attachments, permissions boundaries, tags, GetAccountAuthorizationDetails and
policy simulation. Every operation is authorised as ``iam:<Operation>`` on its target's ARN."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from khoa.protocol.awsquery import QueryDecoder
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from khoa.services.base import Handler, Service
from khoa.services.iam import (
    access_keys,
    attachments,
    boundaries,
    details,
    groups,
    inline,
    managed,
    roles,
    simulate,
    tags,
    users,
)


class IamModel(ServiceModel):
    """IAM's model, speaking IAM's dialect: input problems are ``ValidationError`` (not
    ``ValidationException``), and error codes map to the statuses the model declares for them."""

    def __init__(self) -> None:
        super().__init__("iam")
        self._statuses = {
            shape["error"]["code"]: int(shape["error"].get("httpStatusCode", 400))
            for shape in self.shapes.values()
            if "error" in shape and "code" in shape["error"]
        }

    def error_status(self, code: str) -> int:
        return self._statuses.get(code) or super().error_status(code)

    def validate(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().validate(operation, params)
        except AWSError as error:
            if error.code in ("ValidationException", "SerializationException"):
                raise AWSError("ValidationError", error.message) from None
            raise


class IamDecoder(QueryDecoder):
    """Folds query parameters as for any awsQuery service; malformed numbers are ``ValidationError``."""

    def decode(self, operation: str, flat: dict[str, str]) -> dict[str, Any]:
        try:
            return super().decode(operation, flat)
        except AWSError as error:
            if error.code == "ValidationException":
                raise AWSError("ValidationError", error.message) from None
            raise


def build_service() -> Service:
    handlers: dict[str, Handler] = {}
    for module in (
        users,
        groups,
        roles,
        access_keys,
        inline,
        managed,
        attachments,
        boundaries,
        tags,
        details,
        simulate,
    ):
        handlers.update(module.OPERATIONS)
    model = IamModel()
    service = Service(
        name="iam",
        signing_name="iam",
        target_prefix="iam",
        model=model,
        handlers=handlers,
        skew=timedelta(minutes=15),
        protocol="query",
    )
    object.__setattr__(service, "query_decoder", IamDecoder(model))  # frozen: set as __post_init__ does
    return service
