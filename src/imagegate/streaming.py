"""`stream=true`: OpenAI's server-sent events, with failover before the first event.

The service's one entry, `ImageService.start`, routes like a normal request until a provider
produces its first event (a partial image, or the whole result for providers that cannot stream),
so every failure before that is an ordinary HTTP error. `ImageStream.frames()` then renders the
execution's events as SSE frames: partial images converted to the requested format, then one
`*.completed` event carrying the final image, usage and the `imagegate` extension. A failure after
the first event is sent as an `error` event, which the official SDK raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from imagegate.errors import ImagegateError
from imagegate.execution import Execution
from imagegate.results import Completion, FinalImage, Partial
from imagegate.web.render import with_b64

KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keepalive\n\n"  # an SSE comment: clients ignore it, idle timeouts see traffic


def sse(event: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _sse_image(event: str, fields: dict[str, Any], image: FinalImage) -> bytes:
    return b"".join((b"event: ", event.encode(), b"\ndata: ", with_b64(fields, image), b"\n\n"))


class ImageStream:
    """The SSE rendering of one execution; `completion` or `error` tells accounting how it ended."""

    def __init__(self, execution: Execution, mode: str, keepalive_seconds: float = KEEPALIVE_SECONDS) -> None:
        self.execution = execution
        self.prefix = "image_edit" if mode == "image-edit" else "image_generation"
        self.completion: Completion | None = None
        self.error: ImagegateError | None = None
        self.keepalive_seconds = keepalive_seconds

    @property
    def provider(self) -> str:
        return self.execution.provider

    async def frames(self) -> AsyncIterator[bytes]:
        """The SSE frames; while the next event takes longer than `keepalive_seconds`, a comment line
        (``: keepalive``) keeps proxies and load balancers from closing an idle stream."""
        events = self.execution.events()
        try:
            while True:
                pending = asyncio.ensure_future(anext(events))
                try:
                    while not (await asyncio.wait({pending}, timeout=self.keepalive_seconds))[0]:
                        yield KEEPALIVE
                    item = pending.result()
                except BaseException:  # the client left (or we are cancelled): stop the upstream read first
                    pending.cancel()
                    await asyncio.wait({pending})
                    raise
                if isinstance(item, Partial):
                    yield self._partial(item)
                else:
                    self.completion = item
                    yield self._completed(item)
        except StopAsyncIteration:
            return
        except ImagegateError as exc:
            self.error = exc
            yield sse("error", {"type": "error", **exc.body()})
        finally:
            await events.aclose()

    def _common(self, image: FinalImage, quality: str | None, background: str | None) -> dict[str, Any]:
        return {
            "created_at": int(time.time()),
            "size": f"{image.width}x{image.height}",
            "quality": quality or "auto",
            "background": background or "auto",
            "output_format": image.format,
        }

    def _partial(self, partial: Partial) -> bytes:
        kind = f"{self.prefix}.partial_image"
        fields = {
            "type": kind,
            **self._common(partial.image, partial.quality, partial.background),
            "partial_image_index": partial.index,
        }
        return _sse_image(kind, fields, partial.image)

    def _completed(self, completion: Completion) -> bytes:
        kind = f"{self.prefix}.completed"
        result = completion.result
        image = completion.images[0]
        fields = {"type": kind, **self._common(image, result.quality, result.background)}
        if result.usage:
            fields["usage"] = dict(result.usage)
        fields["imagegate"] = completion.meta()
        return _sse_image(kind, fields, image)
