"""The OpenAPI paths besides the image endpoints: the catalog, the ledger and keys, health, files and the document."""

from __future__ import annotations

from typing import Any

from imagegate.web.openapi_parts import REF, TIME_SCHEMA, error_responses, json_ok, ok


def catalog_paths() -> dict[str, Any]:
    return {
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "List catalog models",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "object": {"const": "list"},
                                        "data": {"type": "array", "items": {"$ref": REF + "Model"}},
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "operationId": "retrieveModel",
                "summary": "One catalog model",
                "parameters": [{"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": ok("Model"), **error_responses(404)},
            }
        },
    }


def ledger_paths() -> dict[str, Any]:
    time_params = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": TIME_SCHEMA,
            "description": "ISO 8601 date or time (naive means UTC), or Unix seconds",
        }
        for name in ("since", "until")
    ]
    filters = [
        {"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "provider", "in": "query", "required": False, "schema": {"type": "string"}},
        {
            "name": "status",
            "in": "query",
            "required": False,
            "schema": {"enum": ["pending", "succeeded", "failed", "cancelled", "reconciled"]},
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        {
            "name": "cursor",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "format": "imagegate-cursor"},
            "description": "next_cursor of the previous page, as given (opaque; others are refused)",
        },
    ]
    return {
        "/v1/requests": {
            "get": {
                "operationId": "listRequests",
                "summary": "The calling key's ledger rows",
                "parameters": time_params + filters,
                "responses": {**json_ok(), **error_responses(400, 401, 503)},
            }
        },
        "/v1/usage": {
            "get": {
                "operationId": "usage",
                "summary": "Totals by day, model and provider",
                "parameters": time_params,
                "responses": {**json_ok(), **error_responses(400, 401, 503)},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
    }


def other_paths() -> dict[str, Any]:
    return {
        "/v1/files/{file_id}": {
            "get": {
                "operationId": "getFile",
                "summary": "A stored image, through a signed link",
                "parameters": [
                    {"name": "file_id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "expires", "in": "query", "required": True, "schema": {"type": "integer"}},
                    {"name": "signature", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": {
                        "description": "The image",
                        "content": {
                            f"image/{fmt}": {"schema": {"type": "string", "format": "binary"}}
                            for fmt in ("png", "jpeg", "webp", "gif", "avif")
                        },
                    },
                    **error_responses(403, 404),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and provider availability",
                "responses": json_ok(),
            }
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "summary": "Readiness: database, Redis, result storage, not draining (503 otherwise)",
                "responses": {
                    **json_ok(),
                    "503": {
                        "description": "Not ready, or draining after SIGTERM",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                },
            }
        },
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "responses": json_ok()}},
    }
