"""JSON responses rendered with orjson, and the OpenAI error body."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from imagegate import redaction
from imagegate.errors import ImagegateError


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def error_response(exc: ImagegateError) -> JSONResponse:
    """The OpenAI error body. The last guard before it leaves: its text passes the gateway's Redactor."""
    redactor = redaction.current()
    body = exc.body()
    fields = body["error"]
    for name in ("message", "param", "code"):
        value = fields[name]
        if value:
            fields[name] = redactor.redact(value)
    headers = {name: redactor.redact(value) for name, value in exc.headers.items()}
    return JSONResponse(body, status_code=exc.status, headers=headers)
