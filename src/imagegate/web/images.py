"""POST /v1/images/generations and /v1/images/edits: parse, call the service, render."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from imagegate.accounting.gate import Caller, Gate
from imagegate.config import InputsSettings
from imagegate.core.quoting import clip, quote
from imagegate.envelope import Envelope, Ticket
from imagegate.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from imagegate.footprint import output_bytes
from imagegate.inputs import RawInput, decode_inputs, image_from_url, probe_inputs, url_decisions
from imagegate.schemas import EditParams, GenerateParams, ImageParams, ImageRef, parse_params
from imagegate.service import ImageService, Prepared
from imagegate.web import jobs
from imagegate.web.respond import respond

IMAGE_FIELDS = ("image", "image[]")


def _service(request: Request) -> ImageService:
    service: ImageService = request.app.state.service
    return service


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object", code="invalid_json")
    request.state.body_hash = hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return data


def _form_hash(fields: dict[str, Any], images: list[RawInput], mask: RawInput | None) -> str:
    """Identity of a multipart request independent of its random boundary: fields, then file digests."""
    digest = hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS))
    for item in [*images, *([mask] if mask else [])]:
        digest.update(item.param.encode() + b"\0" + hashlib.sha256(item.data).digest())
    return digest.hexdigest()


async def _caller(request: Request) -> Caller:
    """The caller: set beforehand by a front door (the playground's anonymous API), else from the key."""
    preset = request.scope.get("state", {}).get("caller")
    if isinstance(preset, Caller):
        return preset
    gate: Gate = request.app.state.gate
    return await gate.authenticate(request.headers.get("authorization"))


async def generations(request: Request) -> Response:
    caller = await _caller(request)
    if not _is_json(request):
        raise UnsupportedMediaTypeError("send the body as application/json")
    params = parse_params(GenerateParams, await read_json(request))
    prepared = _service(request).prepare(params, "text-to-image")
    if jobs.wants_async(request, params):
        return await jobs.accept(request, caller, params, prepared, [])
    if prepared.dry_run:  # no image work: not subject to the envelope
        return await respond(request, caller, prepared, None)
    nbytes = output_bytes(_service(request), prepared)
    param = "n" if params.n > 1 else "size"
    ticket = await _envelope(request).acquire(nbytes, param=param, deadline=_deadline(request, prepared))
    return await _holding(ticket, lambda: respond(request, caller, prepared, None))


async def edits(request: Request) -> Response:
    caller = await _caller(request)
    limits = request.app.state.settings.limits
    if _is_json(request):
        params, images, mask = await _json_edit(await read_json(request), limits.max_file_bytes, _inputs(request))
    elif request.headers.get("content-type", "").startswith("multipart/form-data"):
        params, images, mask = await _multipart_edit(request, limits.max_file_bytes)
    else:
        raise UnsupportedMediaTypeError("send edits as multipart/form-data or application/json")
    is_mask, is_markup = mask is not None and mask.param == "mask", mask is not None and mask.param == "markup"
    prepared = _service(request).prepare(params, "image-edit", len(images), is_mask, is_markup)
    fetched = url_decisions([*images, *([mask] if mask else [])])
    if fetched:
        prepared = dataclasses.replace(prepared, input_decisions=fetched)
    probed = probe_inputs(images, mask, limits)  # headers only: reserve before decoding
    if jobs.wants_async(request, params):
        return await jobs.accept(request, caller, params, prepared, [*images, *([mask] if mask else [])])
    del images, mask
    outputs = 0 if prepared.dry_run else output_bytes(_service(request), prepared)
    envelope = _envelope(request)
    ticket = await envelope.acquire(
        probed.decode_bytes + outputs, param="image", held=probed.upload_bytes, deadline=_deadline(request, prepared)
    )
    try:
        inputs = await decode_inputs(probed, limits)
    except BaseException:
        ticket.release()
        raise
    ticket.shrink(probed.held_bytes + outputs)
    del probed  # the uploaded bytes are not needed any more
    return await _holding(ticket, lambda: respond(request, caller, prepared, inputs))


def _envelope(request: Request) -> Envelope:
    envelope: Envelope = request.app.state.envelope
    return envelope


def _deadline(request: Request, prepared: Prepared) -> float:
    """The request's one deadline: waiting in the envelope's queue counts against it."""
    return _service(request).deadline(prepared)


async def _holding(ticket: Ticket, work: Callable[[], Awaitable[Response]]) -> Response:
    """Run `work` under `ticket`; a streamed answer keeps it until its body has been sent (or failed)."""
    try:
        response = await work()
    except BaseException:
        ticket.release()
        raise
    if not isinstance(response, StreamingResponse):
        ticket.release()
        return response
    stream_response = response.stream_response

    async def releasing(send: Send) -> None:
        # Wraps the whole body send: runs to its end, on an error, or when a disconnect cancels it
        # (even before the first chunk, where a wrapped body iterator would never start).
        try:
            await stream_response(send)
        finally:
            ticket.release()

    response.stream_response = releasing  # type: ignore[method-assign]
    return response


def _is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip() == "application/json"


def _inputs(request: Request) -> InputsSettings:
    inputs: InputsSettings = request.app.state.settings.inputs
    return inputs


async def _json_edit(
    body: dict[str, Any], max_bytes: int, inputs: InputsSettings
) -> tuple[ImageParams, list[RawInput], RawInput | None]:
    params = parse_params(EditParams, body)
    assert isinstance(params, EditParams)
    images: list[RawInput] = []
    for index, ref in enumerate(params.images or []):
        param = f"images[{index}]"
        if ref.file_id is not None:
            raise InvalidRequestError(
                "file_id references are not supported; send a data: URL",
                param=f"{param}.file_id",
                code="unsupported_value",
            )
        if ref.image_url is None:
            raise InvalidRequestError("each image needs an image_url", param=param, code="missing_required_parameter")
        data = await image_from_url(ref.image_url, f"{param}.image_url", max_bytes, inputs)
        images.append(RawInput(param, data, _fetched(ref.image_url)))
    if not images:
        raise InvalidRequestError(
            "an edit needs at least one image in 'images'", param="images", code="missing_required_parameter"
        )
    assert isinstance(params, EditParams)
    if params.mask is not None and params.markup is not None:
        raise InvalidRequestError("markup cannot be combined with mask; send one of them", param="markup")
    overlay = await _json_overlay("mask", params.mask, max_bytes, inputs) or await _json_overlay(
        "markup", params.markup, max_bytes, inputs
    )
    return params.model_copy(update={"images": None, "mask": None, "markup": None}), images, overlay


async def _json_overlay(param: str, ref: ImageRef | None, max_bytes: int, inputs: InputsSettings) -> RawInput | None:
    """The mask or the markup of a JSON edit (a data: URL), in the one overlay slot the two share."""
    if ref is None:
        return None
    if ref.file_id is not None:
        raise InvalidRequestError(
            "file_id references are not supported; send a data: URL", param=f"{param}.file_id", code="unsupported_value"
        )
    if ref.image_url is None:
        raise InvalidRequestError(f"{param} needs an image_url (data: URL)", param=param)
    data = await image_from_url(ref.image_url, f"{param}.image_url", max_bytes, inputs)
    return RawInput(param, data, _fetched(ref.image_url))


def _fetched(url: str) -> str | None:
    return url if url.startswith(("http://", "https://")) else None


async def _multipart_edit(request: Request, max_bytes: int) -> tuple[ImageParams, list[RawInput], RawInput | None]:
    try:
        form = await request.form(max_files=64, max_fields=256, max_part_size=1024 * 1024)
    except MultiPartException as exc:
        raise InvalidRequestError(f"malformed multipart body: {exc.message}", code="invalid_multipart") from None
    try:
        fields, uploads, overlay = _split_form(form)
        images = [RawInput(param, await _read_upload(upload, param, max_bytes)) for param, upload in uploads]
        mask_input = None
        if overlay is not None:
            name, upload = overlay
            mask_input = RawInput(name, await _read_upload(upload, name, max_bytes))
    finally:
        await form.close()
    request.state.body_hash = _form_hash(fields, images, mask_input)
    return parse_params(EditParams, fields), images, mask_input


def _split_form(
    form: FormData,
) -> tuple[dict[str, Any], list[tuple[str, UploadFile]], tuple[str, UploadFile] | None]:
    """Fields, image parts, and the one overlay part: `mask` or `markup` (never both)."""
    fields: dict[str, Any] = {}
    files: list[UploadFile] = []
    overlay: tuple[str, UploadFile] | None = None
    for key, value in form.multi_items():
        if key in IMAGE_FIELDS:
            if not isinstance(value, UploadFile):
                raise InvalidRequestError("image must be a file part", param="image")
            files.append(value)
        elif key in ("mask", "markup"):
            if value == "":  # an empty field counts as not sent, as for every other parameter
                continue
            if not isinstance(value, UploadFile):
                raise InvalidRequestError(f"{key} must be a file part", param=key)
            if overlay is not None:
                if overlay[0] == key:
                    raise InvalidRequestError(f"only one {key} may be sent", param=key)
                raise InvalidRequestError("markup cannot be combined with mask; send one of them", param="markup")
            overlay = (key, value)
        elif isinstance(value, UploadFile):
            raise InvalidRequestError(f"unexpected file part {quote(key)}", param=clip(key))
        elif key in fields:
            raise InvalidRequestError(f"parameter {quote(key)} was sent more than once", param=clip(key))
        else:
            fields[key] = value
    if not files:
        raise InvalidRequestError(
            "an edit needs at least one image part", param="image", code="missing_required_parameter"
        )
    names = ["image"] if len(files) == 1 else [f"image[{i}]" for i in range(len(files))]
    return fields, list(zip(names, files, strict=True)), overlay


async def _read_upload(upload: UploadFile, param: str, max_bytes: int) -> bytes:
    if upload.size is not None and upload.size > max_bytes:
        raise PayloadTooLargeError(
            f"{param} is larger than the {max_bytes // (1024 * 1024)} MiB per-file cap", param=param
        )
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"{param} is larger than the {max_bytes // (1024 * 1024)} MiB per-file cap", param=param
        )
    return data
