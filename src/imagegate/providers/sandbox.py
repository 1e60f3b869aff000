"""The offline `sandbox` provider: serves every catalog model, free, deterministically.

It mirrors each model's reference offering (the first in the catalog: the creator's own API), so
it follows that model's size rules, native `n` and native output formats, and every gateway
emulation (fan-out, format conversion) is exercised exactly as with the real provider. Images
carry a visible SANDBOX mark and the prompt; the same prompt, seed and size give the same bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator

from PIL import Image

from imagegate.config import Settings
from imagegate.core.types import (
    DEFAULT_FRAME_MS,
    DEFAULT_FRAMES,
    Lifecycle,
    ModelInfo,
    Offering,
    ParamRule,
    Pricing,
    ProviderJob,
)
from imagegate.errors import InvalidRequestError
from imagegate.imaging.animation import encode_animated_gif
from imagegate.imaging.convert import encode_image
from imagegate.imaging.pool import run_image_task
from imagegate.imaging.render import apply_markup, render_edit, render_frames, render_generation
from imagegate.imaging.svg import render_svg
from imagegate.providers.base import (
    CallContext,
    EditInputs,
    PartialImage,
    ProducedImage,
    ProviderResult,
    StreamDone,
    StreamEvent,
)

NAME = "sandbox"
AUTO_SIZE = (1024, 1024)


class SandboxProvider:
    name = NAME

    def __init__(self, *, fallback_only: bool, simulate_prices: bool = False) -> None:
        self.fallback_only = fallback_only
        self.simulate_prices = simulate_prices

    def available(self) -> bool:
        return True

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        if not model.offerings:
            return None
        reference = model.offerings[0]
        params = dict(reference.caps.params)
        params["seed"] = ParamRule(handling="passthrough", note="the sandbox is deterministic per seed")
        caps = dataclasses.replace(
            reference.caps,
            params=params,
            max_input_images=model.max_input_images,
            mask="image-edit" in model.modes,
        )
        return Offering(
            provider=NAME,
            model_ids={mode: model.id for mode in model.modes},
            caps=caps,
            pricing=self._pricing(reference),
            lifecycle=Lifecycle(),
            notes=f"offline sandbox mirroring {reference.provider}'s capabilities",
        )

    def _pricing(self, reference: Offering) -> Pricing:
        if self.simulate_prices:
            notes = f"simulated: {reference.provider}'s catalog prices (sandbox.simulate_prices)"
            return dataclasses.replace(reference.pricing, tokens=None, notes=notes)
        return Pricing(free=True, notes="the sandbox is free")

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        width, height = (job.size.dims.width, job.size.dims.height) if job.size.dims else AUTO_SIZE
        seed = _seed(job.options.get("seed"))
        transparent = job.background == "transparent"
        if job.mode == "image-edit" and (inputs is None or not inputs.images):
            raise InvalidRequestError("an edit needs at least one image", param="image")

        async def one(index: int) -> ProducedImage:
            if job.output_format == "svg":
                data = render_svg(
                    prompt=job.prompt, seed=seed, width=width, height=height, index=index, model=job.provider_model
                )
                return ProducedImage(data=data, format="svg")
            if job.output_format == "gif" and "frame_count" in job.options:  # asked to animate
                data = await run_image_task(_animate, job, inputs, seed, width, height, index, transparent)
                return ProducedImage(data=data, format="gif")
            if job.mode == "image-edit":
                assert inputs is not None
                picture = await run_image_task(_edit, job, inputs, seed, width, height, index)
            else:
                picture = await run_image_task(_generate, job, seed, width, height, index, transparent)
            data = await run_image_task(encode_image, picture, job.output_format, job.output_compression)
            return ProducedImage(data=data, format=job.output_format)

        images = await asyncio.gather(*(one(job.first_index + offset) for offset in range(job.n)))
        quality = job.quality if job.quality not in (None, "auto") else "medium"
        return ProviderResult(
            images=images,
            quality=quality,
            background="transparent" if transparent else "opaque",
            usage=None,
            billed=self.simulate_prices,
        )

    async def stream(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        """Partial images are progressively sharper previews of the final picture."""
        result = await self.run(dataclasses.replace(job, n=1), inputs, ctx)
        final = result.images[0]
        for index in range(job.partial_images):
            preview = await run_image_task(_preview, final.data, index, job.partial_images, job.output_format)
            yield PartialImage(preview, job.output_format, index)
        yield StreamDone(result)

    async def aclose(self) -> None:
        return None


def _preview(data: bytes, index: int, total: int, fmt: str) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        width, height = image.size
        factor = 2 ** (total - index + 2)
        small = image.resize((max(1, width // factor), max(1, height // factor)), Image.Resampling.BILINEAR)
        return encode_image(small.resize((width, height), Image.Resampling.BICUBIC), fmt, None)


def _seed(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return 0


def _generate(job: ProviderJob, seed: int, width: int, height: int, index: int, transparent: bool) -> Image.Image:
    return render_generation(
        prompt=job.prompt,
        seed=seed,
        width=width,
        height=height,
        index=index,
        model=job.provider_model,
        transparent=transparent,
    )


def _animate(
    job: ProviderJob, inputs: EditInputs | None, seed: int, width: int, height: int, index: int, transparent: bool
) -> bytes:
    """An animated GIF of `frame_count` frames (an edit animates its edited picture's size and prompt)."""
    count = _int_option(job.options.get("frame_count"), DEFAULT_FRAMES)
    delay = _int_option(job.options.get("frame_duration_ms"), DEFAULT_FRAME_MS)
    frames = render_frames(
        prompt=job.prompt,
        seed=seed,
        width=width,
        height=height,
        index=index,
        model=job.provider_model,
        count=count,
        transparent=transparent,
    )
    return encode_animated_gif(frames, delay, transparent=transparent)


def _int_option(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _edit(job: ProviderJob, inputs: EditInputs, seed: int, width: int, height: int, index: int) -> Image.Image:
    base = inputs.images[0].image
    if inputs.markup is not None:  # the overlay drawn on the first image, as the model would see it
        base = apply_markup(base, inputs.markup.image)
    return render_edit(
        prompt=job.prompt,
        seed=seed,
        width=width,
        height=height,
        index=index,
        model=job.provider_model,
        base=base,
        mask=inputs.mask.image if inputs.mask is not None else None,
        others=[item.image for item in inputs.images[1:]],
    )


def create(settings: Settings) -> SandboxProvider | None:
    mode = settings.sandbox.enabled
    if mode is False:
        return None
    return SandboxProvider(fallback_only=(mode == "auto"), simulate_prices=settings.sandbox.simulate_prices)
