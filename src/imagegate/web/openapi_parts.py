"""Building blocks of the OpenAPI document shared by its modules: schema references, error and OK responses."""

from __future__ import annotations

from typing import Any

REF = "#/components/schemas/"
# /v1/requests and /v1/usage: ISO 8601 date or date-time, or Unix seconds (web/accounts.py parse_time).
TIME_SCHEMA: dict[str, Any] = {
    "type": "string",
    "anyOf": [
        {"format": "date-time"},
        {"format": "date"},
        {"pattern": r"^[0-9]{1,11}(\.[0-9]{1,9})?$"},
    ],
}


def error_responses(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid input",
        401: "Missing or bad API key",
        403: "Forbidden or bad signature",
        404: "Unknown model, file or job",
        413: "Body or file too large",
        402: "Over the key's budget",
        409: "Idempotency-Key conflict, or the job has already finished",
        415: "Unsupported media type",
        429: "Rate limited (see Retry-After)",
        500: "Internal error",
        504: "Upstream timed out",
        502: "Upstream provider failed",
        503: "No provider available",
    }
    return {
        str(s): {"description": text[s], "content": {"application/json": {"schema": {"$ref": REF + "Error"}}}}
        for s in statuses
    }


def ok(name: str, headers: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": "OK",
        "content": {"application/json": {"schema": {"$ref": REF + name}}},
    }
    if headers:
        response["headers"] = {
            "x-request-id": {"schema": {"type": "string"}},
            "x-imagegate-cost-usd": {"schema": {"type": "string"}},
            "x-imagegate-provider": {"schema": {"type": "string"}},
        }
    return response


def json_ok() -> dict[str, Any]:
    return {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
