"""JSON responses rendered with orjson, and the OpenAI error body."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from imagegate.errors import ImagegateError


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def error_response(exc: ImagegateError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
