"""Image response bodies as bytes: orjson for the small parts, the images' base64 spliced in as it is.

A multi-MB `b64_json` never becomes a Python str nor goes through a JSON serializer: it is the
provider's validated base64 text (or our encoding of converted bytes), and the base64 alphabet
needs no JSON escaping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from imagegate.imaging.encoded import Buffer
from imagegate.results import Completion, Delivered, FinalImage

_OPTIONS = orjson.OPT_NON_STR_KEYS
_BIG = 64 * 1024


class SplicedResponse(Response):
    """A JSON body sent as its parts: the multi-MB base64 pieces go out as they are, never joined."""

    media_type = "application/json"

    def __init__(self, parts: Sequence[Buffer], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(None, 200, dict(headers or {}))
        self.parts = _coalesce(parts)
        length = str(sum(len(part) for part in self.parts)).encode()
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.raw_headers.append((b"content-length", length))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        last = len(self.parts) - 1
        for index, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": index < last})


def _coalesce(parts: Sequence[Buffer]) -> list[Buffer]:
    """Small neighbouring parts joined (fewer ASGI messages); big ones kept as they are."""
    out: list[Buffer] = []
    small: list[Buffer] = []
    for part in parts:
        if len(part) < _BIG:
            small.append(part)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(part)
    if small or not out:
        out.append(b"".join(small))
    return out


def images_body(completion: Completion, items: Sequence[Delivered]) -> bytes:
    """The whole body as bytes (one copy): for the idempotency store and the CLI."""
    return b"".join(images_parts(completion, items))


def images_parts(completion: Completion, items: Sequence[Delivered]) -> list[Buffer]:
    """OpenAI's images response: `created`, `data`, the other fields, then the `imagegate` object."""
    parts: list[Buffer] = [b'{"created":', str(completion.created).encode(), b',"data":[']
    for index, item in enumerate(items):
        if index:
            parts.append(b",")
        _item(parts, item)
    rest = orjson.dumps({**completion.fields(), "imagegate": completion.meta()}, option=_OPTIONS)
    parts += (b"],", memoryview(rest)[1:])
    return parts


def _item(parts: list[Buffer], item: Delivered) -> None:
    if item.url is None:
        parts += (b'{"b64_json":"', item.image.content.b64, b'"')
    else:
        parts += (b'{"url":', orjson.dumps(item.url))
    if item.image.revised_prompt:
        parts += (b',"revised_prompt":', orjson.dumps(item.image.revised_prompt))
    parts.append(b"}")


def with_b64(fields: Mapping[str, Any], image: FinalImage) -> bytes:
    """A JSON object of `fields` plus `b64_json` (spliced in last)."""
    head = orjson.dumps(fields, option=_OPTIONS)
    if head == b"{}":
        return b'{"b64_json":"' + image.content.b64 + b'"}'
    return b"".join((memoryview(head)[:-1], b',"b64_json":"', image.content.b64, b'"}'))
