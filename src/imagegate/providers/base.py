"""The provider contract: small enough to write a new one in one sitting.

A provider speaks one wire API. It receives a normalized `ProviderJob` (and, for edits, the
decoded input images) and returns the images it produced. It never reads config or globals: what
it needs (base URL, key, HTTP session) is given to its factory. Built-in providers register
through the same `ProviderFactory` entry point a third-party plugin uses
(group ``imagegate.providers``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.imaging.encoded import ImageBytes

if TYPE_CHECKING:
    from imagegate.config import Settings
    from imagegate.imaging.probe import DecodedImage


@dataclass(frozen=True)
class EditInputs:
    """Decoded, validated input images (first one is the edit base) and the optional mask, or instead
    of a mask the optional markup: a transparent overlay (RGBA, the first image's size) guiding the edit."""

    images: Sequence[DecodedImage]
    mask: DecodedImage | None = None
    markup: DecodedImage | None = None


class ProducedImage:
    """One image a provider returned: raw bytes, or the validated base64 text it came as (`ImageBytes`)."""

    __slots__ = ("content", "format", "revised_prompt")

    def __init__(self, data: bytes | ImageBytes, format: str, revised_prompt: str | None = None) -> None:
        self.content = data if isinstance(data, ImageBytes) else ImageBytes(raw=data)
        self.format = format
        self.revised_prompt = revised_prompt

    @property
    def data(self) -> bytes:
        """The raw bytes (decoded from base64 on first use)."""
        return self.content.raw

    def __repr__(self) -> str:
        return f"ProducedImage({len(self.content)} bytes, {self.format!r})"


@dataclass(frozen=True)
class ProviderResult:
    images: Sequence[ProducedImage]
    quality: str | None = None
    background: str | None = None
    usage: Mapping[str, object] | None = None
    upstream_request_id: str | None = None
    billed: bool = True
    metadata: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class CallContext:
    """Per-attempt facts a provider may use: the request id and the request's absolute deadline.

    `deadline` is on the event loop's clock (`loop.time()`). The router also enforces it by
    cancelling the call; a provider that started remote work (a queued job) must cancel it
    upstream when it sees `asyncio.CancelledError`, then re-raise.
    """

    request_id: str
    deadline: float

    def remaining(self) -> float:
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


@dataclass(frozen=True)
class PartialImage:
    """A streamed preview (OpenAI `partial_image` events)."""

    data: bytes
    format: str
    partial_image_index: int


@dataclass(frozen=True)
class StreamDone:
    """The last event of a stream: the finished result."""

    result: ProviderResult


StreamEvent = PartialImage | StreamDone


@runtime_checkable
class Provider(Protocol):
    """One wire API."""

    name: str
    # True for a provider that only serves when no other provider is available (the sandbox in
    # its default `auto` mode).
    fallback_only: bool

    def available(self) -> bool:
        """True when the provider can be called (credentials present, enabled)."""
        ...

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        """An offering this provider adds on its own for `model` (the sandbox serves every model)."""
        ...

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        """Make `job.n` images. Raise `imagegate.errors` exceptions only."""
        ...

    def stream(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        """Stream partial images then a `StreamDone`. Only called where the offering's
        `caps.streaming` is true; others may raise NotImplementedError."""
        ...

    async def aclose(self) -> None: ...


ProviderFactory = Callable[["Settings"], Provider | None]
"""Builds a provider from settings, or returns None when it is not configured at all."""
