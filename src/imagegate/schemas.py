"""Request bodies of the public API, and their translation into core types.

The same models validate JSON bodies and multipart form fields (where every value is a string,
as the OpenAI SDK sends them: ``n="2"``). They also feed the OpenAPI document.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imagegate.core.quoting import clip, quote
from imagegate.core.sizes import build_size_request
from imagegate.core.types import MAX_FRAMES, MIN_FRAMES, ParamError, PublicRequest
from imagegate.errors import InvalidRequestError, MissingParameterError

# Parameters that a multipart form sends as text; JSON bodies are validated strictly (no 0 for false).
INT_PARAMS = ("n", "output_compression", "partial_images", "seed", "frame_count", "frame_duration_ms")
BOOL_PARAMS = ("stream", "dry_run", "async_")
# Optional public parameters whose handling the catalog describes per offering.
OPTION_PARAMS = ("moderation", "user", "seed", "style", "input_fidelity", "safety_identifier", "complexity")
SVG_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


class ImageRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_url: str | None = Field(None, description="A data: URL (base64) of a PNG, JPEG or WebP image.")
    file_id: str | None = Field(None, description="Not supported by this gateway.")


class SvgReasoning(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None


class SvgOptions(BaseModel):
    """OpenAI's `svg` object: which model authors the SVG, and its reasoning effort."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    model: str = Field(min_length=1, max_length=200, description="The SVG author model.")
    reasoning: SvgReasoning | None = None


class ImageParams(BaseModel):
    """Parameters shared by generations and edits. Unknown fields pass through to the provider."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    prompt: str = Field(description="What to draw.", max_length=100_000)
    model: str | None = Field(None, description="Catalog model id, or provider/model to force a provider.")
    n: int = Field(1, ge=1, le=10)
    size: str | None = Field(None, description='"WxH", "W:H" or "auto"')
    aspect_ratio: str | None = Field(None, description='"W:H", used when size is not WxH')
    resolution: str | None = Field(None, description='"0.5K" "1K" "2K" "4K" or megapixels like "0.25", "1"')
    quality: str | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    output_format: Literal["png", "jpeg", "webp", "gif", "avif", "svg"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    response_format: Literal["url", "b64_json"] | None = None
    moderation: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    style: str | None = None
    complexity: Literal["low", "medium", "high"] | None = Field(
        None, description="Planning effort, independent of quality (OpenAI's GPT Image 2.6)."
    )
    frame_count: int | None = Field(None, description="GIF frames, 2-16 (output_format gif).")
    frame_duration_ms: int | None = Field(None, description="Delay per GIF frame in ms (output_format gif).")
    svg: SvgOptions | None = Field(None, description="The SVG author model and effort (output_format svg).")
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
    dry_run: bool | None = Field(None, description="Return the estimate per candidate provider; call nobody.")
    async_: bool | None = Field(
        None,
        alias="async",
        description="Run as a job: 202 with the job object, result from GET /v1/images/jobs/{id} "
        "(the same as the header Prefer: respond-async).",
    )
    webhook_url: str | None = Field(
        None,
        max_length=2048,
        description="An http(s) URL that receives the finished job, signed (Standard Webhooks). "
        "Makes the request a job.",
    )

    @field_validator("output_format", mode="before")
    @classmethod
    def _jpg(cls, value: Any) -> Any:
        return "jpeg" if isinstance(value, str) and value.lower() == "jpg" else value

    @field_validator(*INT_PARAMS, mode="before")
    @classmethod
    def _whole_number_text(cls, value: Any) -> Any:
        """Form fields are strings (`n="2"`): ASCII digits only; validation is strict otherwise."""
        if isinstance(value, str):
            if not (value.isascii() and value.isdigit()) or len(value.lstrip("0")) > 30:
                raise ValueError("must be a whole number")
            return int(value)
        if isinstance(value, float) and value.is_integer():  # JSON's 2.0 is an integer too
            return int(value)
        return value

    @field_validator(*BOOL_PARAMS, mode="before")
    @classmethod
    def _boolean_text(cls, value: Any) -> Any:
        """Form fields are strings: exactly "true" or "false" (as the SDKs send them)."""
        if isinstance(value, str):
            if value not in ("true", "false"):
                raise ValueError('must be true or false (form fields: "true" or "false")')
            return value == "true"
        return value


class GenerateParams(ImageParams):
    pass


class EditParams(ImageParams):
    input_fidelity: str | None = None
    images: list[ImageRef] | None = Field(None, description="JSON form only: the input images.")
    mask: ImageRef | None = Field(None, description="JSON form only: the mask.")
    markup: ImageRef | None = Field(None, description="JSON form only: a transparent PNG overlay guiding the edit.")


def parse_params(cls: type[ImageParams], data: dict[str, Any]) -> ImageParams:
    """Validate a body; pydantic errors become a 400 naming the first offending parameter."""
    cleaned = {k: v for k, v in data.items() if not (isinstance(v, str) and v == "" and k != "prompt")}
    cleaned = fold_svg_fields(cleaned)
    try:
        return cls.model_validate(cleaned, strict=True)
    except ValidationError as exc:
        raise _translate(exc) from None


def fold_svg_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Multipart sends the `svg` object as `svg[model]` and `svg[reasoning][effort]` (as OpenAI's SDK
    does): fold them into one object. Any other `svg[...]` name, or a mix with a JSON `svg`, is refused."""
    names = [key for key in fields if key.startswith("svg[")]
    if not names:
        return fields
    if "svg" in fields:
        raise InvalidRequestError("send svg either as an object or as svg[...] fields, not both", param="svg")
    folded = {k: v for k, v in fields.items() if not k.startswith("svg[")}
    svg: dict[str, Any] = {}
    for key in names:
        if key == "svg[model]":
            svg["model"] = fields[key]
        elif key == "svg[reasoning][effort]":
            svg["reasoning"] = {"effort": fields[key]}
        else:
            raise InvalidRequestError(f"unknown svg field {quote(key)}", param=clip(key))
    folded["svg"] = svg
    return folded


def _translate(exc: ValidationError) -> InvalidRequestError:
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    param = loc[0] if loc else None
    if len(loc) > 1:
        param = loc[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
    param = clip(param) if param is not None else None  # a field name is client-supplied too
    if error["type"] == "missing":
        return MissingParameterError(f"Missing required parameter: '{param}'.", param=param)
    value = error.get("input")
    shown = quote(value) if isinstance(value, str | int | float | bool) else type(value).__name__
    return InvalidRequestError(f"Invalid value for '{param}': {shown}. {error['msg']}.", param=param)


def to_public(
    params: ImageParams,
    mode: Literal["text-to-image", "image-edit"],
    images: int,
    mask: bool,
    markup: bool = False,
) -> PublicRequest:
    """The request in core terms; raises `ParamError` for what no provider could accept."""
    size = build_size_request(params.size, params.aspect_ratio, params.resolution)
    check_output_options(params, mask, markup)
    known = set(type(params).model_fields)
    options = {name: getattr(params, name, None) for name in OPTION_PARAMS if name in known}
    extra = dict(params.model_extra or {})
    return PublicRequest(
        mode=mode,
        prompt=params.prompt,
        n=params.n,
        size=size,
        quality=params.quality,
        background=params.background,
        output_format=params.output_format,
        output_compression=params.output_compression,
        options={k: v for k, v in options.items() if v is not None},
        extra=extra,
        input_images=images,
        has_mask=mask,
        has_markup=markup,
        stream=bool(params.stream),
        frame_count=params.frame_count,
        frame_duration_ms=params.frame_duration_ms,
        svg=params.svg.model_dump(exclude_none=True) if params.svg is not None else None,
    )


def check_output_options(params: ImageParams, mask: bool, markup: bool) -> None:
    """The rules of OpenAI's GIF, SVG and markup options that hold whatever the model (openai SDK 3.57)."""
    fmt = params.output_format
    for name in ("frame_count", "frame_duration_ms"):
        if getattr(params, name) is not None and fmt != "gif":
            raise ParamError(name, f"{name} is only used with output_format 'gif'", "unsupported_parameter")
    if params.frame_count is not None and not MIN_FRAMES <= params.frame_count <= MAX_FRAMES:
        raise ParamError(
            "frame_count", f"frame_count must be between {MIN_FRAMES} and {MAX_FRAMES}, got {params.frame_count}"
        )
    if params.frame_duration_ms is not None and params.frame_duration_ms < 1:
        raise ParamError("frame_duration_ms", f"frame_duration_ms must be at least 1, got {params.frame_duration_ms}")
    if params.svg is not None and fmt != "svg":
        raise ParamError("svg", "the svg object is only used with output_format 'svg'", "unsupported_parameter")
    if fmt == "svg":
        if params.n != 1:
            raise ParamError("n", f"SVG output makes one image; use n=1 (got {params.n})", "unsupported_value")
        if params.stream:
            raise ParamError("stream", "SVG output cannot be streamed", "unsupported_value")
    if markup and mask:
        raise ParamError("markup", "markup cannot be combined with mask; send one of them", "unsupported_parameter")


def param_error(exc: ParamError) -> InvalidRequestError:
    return InvalidRequestError(exc.message, param=clip(exc.param), code=exc.code)
