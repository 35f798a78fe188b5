"""AWS STS: GetCallerIdentity, AssumeRole (same- and cross-account) and GetAccessKeyInfo."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from khoa.protocol.awsquery import QueryDecoder
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from khoa.services.base import Service
from khoa.services.sts import operations


class StsModel(ServiceModel):
    """STS speaks the awsQuery dialect IAM does: input problems are ``ValidationError`` (``1 validation
    error detected: ...``), not ``ValidationException``."""

    def __init__(self) -> None:
        super().__init__("sts")
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


class StsDecoder(QueryDecoder):
    """Malformed query parameters (a DurationSeconds that is not a number) are ``ValidationError``."""

    def decode(self, operation: str, flat: dict[str, str]) -> dict[str, Any]:
        try:
            return super().decode(operation, flat)
        except AWSError as error:
            if error.code == "ValidationException":
                raise AWSError("ValidationError", error.message) from None
            raise


def build_service() -> Service:
    model = StsModel()
    service = Service(
        name="sts",
        signing_name="sts",
        target_prefix="sts",
        model=model,
        handlers=dict(operations.OPERATIONS),
        skew=timedelta(minutes=15),
        protocol="query",
    )
    object.__setattr__(service, "query_decoder", StsDecoder(model))  # frozen: set as __post_init__ does
    return service
