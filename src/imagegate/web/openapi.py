"""The OpenAPI 3.1 document, built from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from imagegate import __version__
from imagegate.config import Settings
from imagegate.schemas import EditParams, GenerateParams

REF = "#/components/schemas/"
IDEMPOTENCY_PLAIN: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "Replays the stored response of a completed request with the same key and body (1-255 chars).",
}
IDEMPOTENCY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Replays the stored response of a completed request with the same key and body.",
}


def _error_responses(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid input",
        401: "Missing or bad API key",
        403: "Forbidden or bad signature",
        404: "Unknown model or file",
        413: "Body or file too large",
        402: "Over the key's budget",
        409: "Idempotency-Key conflict",
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


IMAGE_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "b64_json": {"type": "string"},
        "url": {"type": "string", "format": "uri"},
        "revised_prompt": {"type": "string"},
    },
}

IMAGES_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["created", "data"],
    "properties": {
        "created": {"type": "integer"},
        "data": {"type": "array", "items": {"$ref": REF + "Image"}},
        "size": {"type": "string"},
        "output_format": {"type": "string"},
        "quality": {"type": ["string", "null"]},
        "background": {"type": ["string", "null"]},
        "usage": {"type": "object"},
        "imagegate": {"$ref": REF + "ImagegateExtension"},
    },
}

EXTENSION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string"},
        "provider": {"type": "string"},
        "model": {"type": "string"},
        "provider_model": {"type": "string"},
        "mode": {"type": "string"},
        "cost_usd": {
            "type": ["string", "null"],
            "description": "Decimal USD; null when no price is known",
        },
        "n": {"type": "integer"},
        "latency_ms": {"type": "number"},
        "decisions": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "param": {"type": "string"},
                    "asked": {},
                    "sent": {},
                    "note": {"type": ["string", "null"]},
                    "handling": {
                        "enum": [
                            "passthrough",
                            "renamed",
                            "converted",
                            "emulated",
                            "unsupported",
                            "dropped",
                        ]
                    },
                },
            },
        },
        "passthrough": {"type": "object"},
        "warnings": {"type": "array", "items": {"type": "string"}},
        "attempts": {"type": "array", "items": {"type": "object"}},
    },
}

ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

MODEL: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
        "modes": {"type": "array", "items": {"type": "string"}},
        "max_resolution": {"type": "string"},
        "max_input_images": {"type": "integer"},
        "status": {"enum": ["active", "deprecated", "retired"]},
        "providers": {"type": "array"},
    },
}


def _multipart_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": {"type": "string"},
        "properties": {
            "image": {
                "type": "string",
                "format": "binary",
                "description": "One input image (PNG, JPEG, WebP).",
            },
            "image[]": {
                "type": "array",
                "items": {"type": "string", "format": "binary"},
                "description": "Several input images, as repeated parts (the SDK's list form).",
            },
            "mask": {
                "type": "string",
                "format": "binary",
                "description": "PNG with alpha, same size as the first image; transparent = edit.",
            },
            **{
                name: {"type": "string", "description": f"{name} as a form string"}
                for name in GenerateParams.model_fields
                if name != "prompt"
            },
            "prompt": {"type": "string"},
            "input_fidelity": {"type": "string"},
        },
    }


def _schemas() -> dict[str, Any]:
    gen = GenerateParams.model_json_schema(ref_template=REF + "{model}")
    edit = EditParams.model_json_schema(ref_template=REF + "{model}")
    defs = {**gen.pop("$defs", {}), **edit.pop("$defs", {})}
    gen["additionalProperties"] = True
    edit["additionalProperties"] = True
    multipart = _multipart_schema()
    return {
        **defs,
        "GenerateRequest": gen,
        "EditRequest": edit,
        "EditMultipart": multipart,
        "Image": IMAGE_ITEM,
        "ImagesResponse": IMAGES_RESPONSE,
        "ImagegateExtension": EXTENSION,
        "Error": ERROR,
        "Model": MODEL,
    }


def _json_body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": REF + name}}}}


def _ok(name: str, headers: bool = False) -> dict[str, Any]:
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


def _image_paths() -> dict[str, Any]:
    image_errors = _error_responses(400, 401, 402, 403, 404, 409, 413, 415, 429, 500, 502, 503, 504)
    return {
        "/v1/images/generations": {
            "post": {
                "operationId": "createImage",
                "summary": "Generate images from a prompt",
                "parameters": [IDEMPOTENCY],
                "requestBody": _json_body("GenerateRequest"),
                "responses": {"200": _ok("ImagesResponse", True), **image_errors},
            }
        },
        "/v1/images/edits": {
            "post": {
                "operationId": "createImageEdit",
                "summary": "Edit images (multipart or JSON with data URLs)",
                "parameters": [IDEMPOTENCY_PLAIN],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {"$ref": REF + "EditMultipart"},
                            "encoding": {"image[]": {"contentType": "image/png, image/jpeg, image/webp"}},
                        },
                        "application/json": {"schema": {"$ref": REF + "EditRequest"}},
                    },
                },
                "responses": {"200": _ok("ImagesResponse", True), **image_errors},
            }
        },
    }


def _json_ok() -> dict[str, Any]:
    return {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}


def _catalog_paths() -> dict[str, Any]:
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
                "responses": {"200": _ok("Model"), **_error_responses(404)},
            }
        },
    }


def _ledger_paths() -> dict[str, Any]:
    time_params = [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "ISO 8601 time or Unix seconds",
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
        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
    ]
    return {
        "/v1/requests": {
            "get": {
                "operationId": "listRequests",
                "summary": "The calling key's ledger rows",
                "parameters": time_params + filters,
                "responses": {**_json_ok(), **_error_responses(400, 401, 503)},
            }
        },
        "/v1/usage": {
            "get": {
                "operationId": "usage",
                "summary": "Totals by day, model and provider",
                "parameters": time_params,
                "responses": {**_json_ok(), **_error_responses(400, 401, 503)},
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


def _other_paths() -> dict[str, Any]:
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
                    **_error_responses(403, 404),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and provider availability",
                "responses": _json_ok(),
            }
        },
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "responses": _json_ok()}},
    }


@lru_cache(maxsize=4)
def _document(server: str | None) -> dict[str, Any]:
    paths = {**_image_paths(), **_catalog_paths(), **_ledger_paths(), **_other_paths()}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "imagegate",
            "version": __version__,
            "description": "OpenAI-compatible image generation and editing gateway.",
        },
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
    if server:
        document["servers"] = [{"url": server}]
    return document


def document(settings: Settings) -> dict[str, Any]:
    return _document(settings.public_url)
