"""The OpenAPI 3.1 document, built from the same pydantic models that validate requests."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from imagegate import __version__
from imagegate.catalog.loader import Catalog
from imagegate.config import Settings
from imagegate.schemas import EditParams, GenerateParams
from imagegate.web.openapi_jobs import JOB, PREFER, accepted, job_paths
from imagegate.web.openapi_parts import REF, error_responses, ok
from imagegate.web.openapi_paths import catalog_paths, ledger_paths, other_paths

DEFAULT_MAX_IMAGES = 16  # without a catalog: the most any catalog model takes
# What the server accepts, said in the schema too (the fuzz test holds the two together).
# Python's whitespace (str.strip, which the server applies), spelled out: regex engines disagree on \s.
_SPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
PROMPT_RULES: dict[str, Any] = {
    "minLength": 1,
    "pattern": f"^[{_SPACE}]*[^{_SPACE}]",
    "description": "What to draw (not blank).",
}
# An input image in a JSON edit: a base64 data: URL (remote URLs and file ids are refused).
IMAGE_REF: dict[str, Any] = {
    "type": "object",
    "required": ["image_url"],
    "additionalProperties": False,
    "properties": {
        "image_url": {
            "type": "string",
            "format": "data-url",
            "pattern": "^data:[^,]*;base64,",
            "description": "A base64 data: URL of a PNG, JPEG or WebP image (the server also fetches http(s) "
            "URLs under its [inputs] policy).",
        },
        "file_id": {"type": "null", "description": "Not supported by this gateway."},
    },
}
# Sizes as core/sizes.py parses them: "auto", "WxH" with edges 1..16384, "W:H" ratios.
_EDGE = "(?:[1-9][0-9]{0,3}|1[0-5][0-9]{3}|16[0-2][0-9]{2}|163[0-7][0-9]|1638[0-4])"
_RATIO = "[1-9][0-9]?:[1-9][0-9]?"
_FORBIDDEN_NAME = "|".join(  # unknown parameters pass through, but never one that names an address or a secret
    "".join(f"[{c.upper()}{c}]" for c in word)
    for word in ("url", "webhook", "key", "token", "secret", "header", "host", "endpoint", "auth")
)
ONE = "^$|^0*1$"  # n = 1 as text ("" = the default, 1)
INT_TEXT = {  # the same numbers as form text (ASCII digits), accepted in JSON too
    "n": "^$|^0*(?:[1-9]|10)$",
    "output_compression": "^$|^0*(?:[0-9]|[1-9][0-9]|100)$",
    "partial_images": "^$|^0*[0-3]$",
    "seed": "^$|^[0-9]{1,18}$",
}
FIELD_RULES: dict[str, dict[str, Any]] = {
    "size": {"pattern": f"^$|^(?:auto|{_EDGE}[xX]{_EDGE})$", "description": '"WxH" (edges up to 16384) or "auto"'},
    "aspect_ratio": {"pattern": f"^$|^{_RATIO}$", "description": '"W:H", e.g. "16:9"'},
    "resolution": {
        "pattern": "^$|^(?:(?:0\\.5|1|2|4)[Kk]|0\\.25|0\\.5|1|2|4|8|16)$",
        "description": 'K tier ("0.5K" to "4K") or megapixels ("0.25" to "16")',
    },
    "quality": {
        "enum": ["", "low", "medium", "high", "auto"],
        "description": "gpt-image-2.5/2.6 also take xhigh and max; dall-e-3 takes standard, hd",
    },
    "moderation": {"enum": ["", "low", "auto"]},
    "complexity": {"enum": ["", "low", "medium", "high"]},
    "input_fidelity": {"enum": ["", "low", "high"]},
    # pydantic's own enums, plus "" (an empty value counts as not sent) and the "jpg" alias
    "background": {"enum": ["", "transparent", "opaque", "auto"]},
    "output_format": {
        "enum": ["", "png", "jpeg", "jpg", "webp", "gif", "avif"],
        "description": "also svg, on the models that make SVG (gpt-image-2.6-*)",
    },
    "response_format": {"enum": ["", "url", "b64_json"]},
}
# Accepted only by some models (see the description), so the document lists them as not sent: a
# generator must never expect them to work on whatever model a request names.
MODEL_DEPENDENT: dict[str, str] = {
    "frame_count": "integer 2-16, with output_format gif, on models that animate (gpt-image-2.6-*)",
    "frame_duration_ms": "integer >= 1 (default 200), with output_format gif, on models that animate",
    "svg": '{"model", "reasoning": {"effort"}} with output_format svg, on models that make SVG; '
    "multipart: svg[model], svg[reasoning][effort]",
    "markup": "edits: a transparent PNG overlay on the first image (a data: URL in JSON, a file part in "
    "multipart), not with mask, on models that take it (gpt-image-2.5-*, gpt-image-2.6-*)",
    # Not model-dependent but network-dependent: accepted when the URL passes the [inputs] URL policy.
    "webhook_url": "an http(s) URL that receives the finished job, signed (Standard Webhooks); makes the "
    "request a job; refused unless it passes the gateway's URL policy",
}
CROSS_FIELD_RULES: list[dict[str, Any]] = [  # said without `not`, which generators handle poorly
    {  # transparency needs an output format with alpha
        "anyOf": [
            {"properties": {"background": {"enum": ["", "opaque", "auto", None]}}},
            {"properties": {"output_format": {"enum": ["", "png", "webp", "gif", "avif", None]}}},
        ]
    },
    {  # a stream carries one image
        "anyOf": [
            {"properties": {"stream": {"enum": [False, "false", "", None]}}},
            {"properties": {"n": {"anyOf": [{"type": "integer", "maximum": 1}, {"type": "string", "pattern": ONE}]}}},
        ]
    },
    {  # a job (async) is neither streamed nor a dry run: those answer at once
        "anyOf": [
            {"properties": {"async": {"enum": [False, "false", "", None]}}},
            {
                "properties": {
                    "stream": {"enum": [False, "false", "", None]},
                    "dry_run": {"enum": [False, "false", "", None]},
                }
            },
        ]
    },
]
IDEMPOTENCY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Replays the stored response of a completed request with the same key and body.",
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

ESTIMATE: dict[str, Any] = {
    "type": "object",
    "required": ["object", "dry_run", "model", "candidates"],
    "description": "The answer to dry_run: true, per candidate provider; nobody is called.",
    "properties": {
        "object": {"const": "imagegate.estimate"},
        "dry_run": {"const": True},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "mode": {"type": "string"},
        "candidates": {"type": "array", "items": {"type": "object"}},
        "imagegate": {"type": "object"},
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


def _multipart_schema(max_images: int) -> dict[str, Any]:
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
                "minItems": 1,
                "maxItems": max_images,
                "items": {"type": "string", "format": "binary"},
                "description": "Several input images, as repeated parts (the SDK's list form).",
            },
            "mask": {
                "type": "string",
                "format": "binary",
                "description": "PNG with alpha, same size as the first image; transparent = edit.",
            },
            **{name: _form_field(name) for name in [*_public_names(), "input_fidelity"] if name != "prompt"},
            **{name: {"const": "", "description": text} for name, text in MODEL_DEPENDENT.items()},
            "images": {"const": "", "description": "reserved"},
            "prompt": {"type": "string", **PROMPT_RULES},
        },
        "patternProperties": {_FORBIDDEN_NAME: {"const": ""}},
        # One image at least (`image`, or the SDK's repeated `image[]`), at most the model's limit in all.
        "anyOf": [
            {"required": ["image"], "properties": {"image[]": {"maxItems": max_images - 1}}},
            {"required": ["image[]"], "properties": {"image": False}},
        ],
        "allOf": CROSS_FIELD_RULES,
    }


def _public_names() -> list[str]:
    """The parameters' names as sent (``async``, not the attribute ``async_``)."""
    return [field.alias or name for name, field in GenerateParams.model_fields.items()]


def _form_field(name: str) -> dict[str, Any]:
    """A parameter as multipart text: the JSON rules, as strings ("" counts as not sent)."""
    schema: dict[str, Any] = {"type": "string", "description": f"{name} as a form string"}
    if name in FIELD_RULES:
        schema.update(FIELD_RULES[name])
    elif name in INT_TEXT:
        schema["pattern"] = INT_TEXT[name]
    elif name in ("stream", "dry_run", "async"):
        schema["enum"] = ["", "true", "false"]
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _apply_rules(body: dict[str, Any], reserved: list[str]) -> None:
    """Tighten the pydantic schema to what the server accepts (normalization included)."""
    props = body["properties"]
    for name, rules in FIELD_RULES.items():
        if name in props:
            description = rules.get("description", props[name].get("description"))
            typed = {"type": "string", **{k: v for k, v in rules.items() if k != "description"}}
            props[name] = {**_nullable(typed), **({"description": description} if description else {})}
    for name, pattern in INT_TEXT.items():
        original = {k: v for k, v in props[name].items() if k not in ("default", "title")}
        choices = original.get("anyOf", [original])
        number = next(c for c in choices if c.get("type") == "integer")
        nullable = [{"type": "null"}] if any(c.get("type") == "null" for c in choices) else []
        props[name] = {"anyOf": [number, {"type": "string", "pattern": pattern}, *nullable]}
    for name in ("stream", "dry_run", "async"):
        props[name] = {"anyOf": [{"type": "boolean"}, {"enum": ["", "true", "false"]}, {"type": "null"}]}
    # Unknown parameters pass through, except these names (400) unless empty (an empty value is not sent).
    body["patternProperties"] = {_FORBIDDEN_NAME: {"const": ""}}
    props.update({name: {"const": "", "description": "reserved"} for name in reserved})
    for name, text in MODEL_DEPENDENT.items():  # "" is not sent, as for every parameter but prompt
        if name in props and name not in reserved:
            props[name] = {"enum": ["", None], "description": text}
    body["allOf"] = CROSS_FIELD_RULES


def _schemas(max_images: int) -> dict[str, Any]:
    gen = GenerateParams.model_json_schema(ref_template=REF + "{model}")
    edit = EditParams.model_json_schema(ref_template=REF + "{model}")
    defs = {**gen.pop("$defs", {}), **edit.pop("$defs", {})}
    gen["additionalProperties"] = True
    edit["additionalProperties"] = True
    for body in (gen, edit):
        body["properties"]["prompt"].update(PROMPT_RULES)
    for body, reserved in ((gen, ["image", "images", "mask", "markup"]), (edit, ["image"])):
        _apply_rules(body, reserved)
    edit["required"] = ["prompt", "images"]
    edit["properties"]["images"] = {
        "type": "array",
        "minItems": 1,
        "maxItems": max_images,
        "items": IMAGE_REF,
        "description": "JSON form only: the input images.",
    }
    edit["properties"]["mask"] = {"anyOf": [IMAGE_REF, {"type": "null"}], "description": "JSON form only: the mask."}
    edit["properties"]["model"] = gen["properties"]["model"]
    multipart = _multipart_schema(max_images)
    return {
        **defs,
        "GenerateRequest": gen,
        "EditRequest": edit,
        "EditMultipart": multipart,
        "Image": IMAGE_ITEM,
        "ImagesResponse": IMAGES_RESPONSE,
        "ImagegateExtension": EXTENSION,
        "Estimate": ESTIMATE,
        "Error": ERROR,
        "Model": MODEL,
        "ImageJob": JOB,
    }


def _json_body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": REF + name}}}}


def _image_ok() -> dict[str, Any]:
    """200: the images, or the estimate of a dry run, or (stream: true) OpenAI's server-sent events."""
    response = ok("ImagesResponse", True)
    response["content"] = {
        "application/json": {"schema": {"anyOf": [{"$ref": REF + "ImagesResponse"}, {"$ref": REF + "Estimate"}]}},
        "text/event-stream": {
            "schema": {
                "type": "object",
                "required": ["event", "data"],
                "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
            }
        },
    }
    return response


def _image_paths() -> dict[str, Any]:
    image_errors = error_responses(400, 401, 402, 403, 404, 409, 413, 415, 429, 500, 502, 503, 504)
    return {
        "/v1/images/generations": {
            "post": {
                "operationId": "createImage",
                "summary": "Generate images from a prompt",
                "parameters": [IDEMPOTENCY, PREFER],
                "requestBody": _json_body("GenerateRequest"),
                "responses": {"200": _image_ok(), "202": accepted(), **image_errors},
            }
        },
        "/v1/images/edits": {
            "post": {
                "operationId": "createImageEdit",
                "summary": "Edit images (multipart or JSON with data URLs)",
                "parameters": [IDEMPOTENCY, PREFER],
                "requestBody": {
                    "required": True,
                    "content": {
                        # No `encoding`: the server reads image parts by their bytes, whatever their Content-Type.
                        "multipart/form-data": {"schema": {"$ref": REF + "EditMultipart"}},
                        "application/json": {"schema": {"$ref": REF + "EditRequest"}},
                    },
                },
                "responses": {"200": _image_ok(), "202": accepted(), **image_errors},
            }
        },
        **job_paths(),
    }


@lru_cache(maxsize=4)
def _document(server: str | None, max_images: int) -> dict[str, Any]:
    paths = {**_image_paths(), **catalog_paths(), **ledger_paths(), **other_paths()}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "imagegate",
            "version": __version__,
            "description": "OpenAI-compatible image generation and editing gateway.",
        },
        "paths": paths,
        "components": {"schemas": _schemas(max_images)},
    }
    if server:
        document["servers"] = [{"url": server}]
    return document


def document(settings: Settings, catalog: Catalog | None = None) -> dict[str, Any]:
    """The document for this gateway. With its catalog, edits say how many input images the default
    model takes (a request naming another model gets that model's limit: GET /v1/models)."""
    model = catalog.get(settings.default_model) if catalog is not None else None
    max_images = model.max_input_images if model is not None and model.max_input_images > 0 else DEFAULT_MAX_IMAGES
    return _document(settings.public_url, max_images)
