"""Answers in the protocol of the service addressed: JSON for awsJson services, XML for the query
services (IAM, STS), with the HTTP status the service's model gives each error code."""

from __future__ import annotations

from typing import Any

from khoa.protocol import awsjson, awsquery, restjson
from khoa.protocol.errors import AWSError
from khoa.server.asgi import Response
from khoa.services.base import Service


def success_response(service: Service, operation: str, result: dict[str, Any], request_id: str) -> Response:
    if service.protocol == "query":
        encoded = service.query_encoder.encode(operation, result, request_id)
        return Response(200, encoded, awsquery.CONTENT_TYPE)
    if service.protocol == "rest-json":
        status, body, headers = restjson.router(service.model).encode(operation, result)
        return Response(status, body, restjson.CONTENT_TYPE, headers)
    return Response(200, awsjson.encode_body(result), awsjson.CONTENT_TYPE)


def error_response(service: Service | None, error: AWSError, request_id: str) -> Response:
    if service is not None and service.protocol == "query":
        error = awsquery.query_auth_error(error)
        status = error.status if error.status != 400 else service.model.error_status(error.code)
        response = Response(
            status, service.query_encoder.encode_error(error, request_id), awsquery.CONTENT_TYPE
        )
    else:
        status = error.status
        if status == 400 and service is not None:
            status = service.model.error_status(error.code)
        if service is not None and service.protocol == "rest-json":
            body, headers = restjson.encode_error(error)
            response = Response(status, body, restjson.CONTENT_TYPE, headers)
        else:
            response = Response(status, awsjson.encode_error(error), awsjson.CONTENT_TYPE)
    response.outcome = error.code
    return response
