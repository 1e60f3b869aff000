"""The sandbox picture drawer: deterministic, exact sizes, masks honoured to the pixel."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image, ImageChops

from imagegate.imaging.pool import run_image_task, shutdown_pool
from imagegate.imaging.render import apply_markup, render_edit, render_frames, render_generation


def generate(
    prompt: str = "a lighthouse on a cliff at sunset, oil painting",
    seed: int = 42,
    width: int = 256,
    height: int = 192,
    index: int = 0,
    transparent: bool = False,
) -> Image.Image:
    return render_generation(
        prompt=prompt,
        seed=seed,
        width=width,
        height=height,
        index=index,
        model="gpt-image-1",
        transparent=transparent,
    )


def edit(
    base: Image.Image,
    mask: Image.Image | None = None,
    others: tuple[Image.Image, ...] = (),
    width: int = 256,
    height: int = 192,
) -> Image.Image:
    return render_edit(
        prompt="make it night",
        seed=7,
        width=width,
        height=height,
        index=0,
        model="gpt-image-1",
        base=base,
        mask=mask,
        others=others,
    )


def checkerboard(size: tuple[int, int]) -> Image.Image:
    tile = Image.new("RGB", (2, 2))
    tile.putdata([(250, 250, 250), (20, 20, 20), (20, 20, 20), (250, 250, 250)])
    return tile.resize((size[0] // 8, size[1] // 8), Image.Resampling.NEAREST).resize(size, Image.Resampling.NEAREST)


def test_generation_is_deterministic() -> None:
    assert generate().tobytes() == generate().tobytes()


@pytest.mark.parametrize(
    "change", [{"prompt": "a different prompt"}, {"seed": 43}, {"index": 1}], ids=["prompt", "seed", "index"]
)
def test_generation_changes_with_its_inputs(change: dict[str, object]) -> None:
    assert generate(**change).tobytes() != generate().tobytes()  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(1536, 1024), (1920, 1088), (512, 512), (1024, 1536), (64, 40)])
def test_generation_has_the_exact_size(size: tuple[int, int]) -> None:
    image = generate(width=size[0], height=size[1])

    assert image.size == size
    assert image.mode == "RGB"


def test_transparent_background() -> None:
    image = generate(transparent=True)

    assert image.mode == "RGBA"
    corners = [(0, 0), (255, 0), (0, 191), (255, 191)]
    assert all(image.getpixel(corner)[3] == 0 for corner in corners)
    assert image.getchannel("A").getextrema() == (0, 255)  # the mark and text are opaque


def test_generation_is_fast_enough() -> None:
    generate(width=1024, height=1024)  # warm the font cache
    started = time.perf_counter()
    generate(width=1024, height=1024, seed=1)
    assert time.perf_counter() - started < 0.5  # ~25 ms here; generous for slow CI


def test_very_long_prompt_and_long_words_are_handled() -> None:
    prompt = "word " * 8000 + "x" * 5000

    image = generate(prompt=prompt, width=512, height=512)

    assert image.size == (512, 512)


def test_edit_with_mask_changes_only_the_transparent_area() -> None:
    base = generate(width=256, height=192, seed=1)
    mask = Image.new("RGBA", (256, 192), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 128, 192))  # left half transparent = edit here

    result = edit(base, mask)

    assert result.size == (256, 192) and result.mode == "RGB"
    assert result.crop((128, 0, 256, 192)).tobytes() == base.crop((128, 0, 256, 192)).tobytes()
    changed = ImageChops.difference(result.crop((0, 0, 128, 192)), base.crop((0, 0, 128, 192)))
    assert changed.getbbox() is not None


def test_edit_without_mask_changes_pixels_everywhere() -> None:
    base = generate(seed=1)

    result = edit(base)

    assert ImageChops.difference(result, base).getbbox() is not None
    assert result.tobytes() == edit(base).tobytes()  # deterministic


def test_edit_keeps_alpha_when_the_base_has_it() -> None:
    base = generate(seed=1, transparent=True)

    assert edit(base).mode == "RGBA"


def test_edit_draws_thumbnails_of_the_other_inputs() -> None:
    base = generate(seed=1)
    others = (generate(seed=2, width=100, height=80), generate(seed=3, width=80, height=100))

    with_others = edit(base, others=others)
    without = edit(base)

    assert with_others.tobytes() != without.tobytes()


def test_edit_fits_the_base_without_stretching() -> None:
    # A 400x200 base with a black 100x100 square in its centre, fitted to 200x200: the centre
    # crop keeps the square square (a stretch would make it 50x100).
    base = Image.new("RGB", (400, 200), (255, 255, 255))
    base.paste((0, 0, 0), (150, 50, 250, 150))
    mask = Image.new("RGBA", (400, 200), (0, 0, 0, 255))  # nothing editable: output == fitted base

    result = edit(base, mask, width=200, height=200)

    dark = result.convert("L").point(lambda value: 255 if value < 128 else 0)
    left, top, right, bottom = dark.getbbox() or (0, 0, 0, 0)
    assert abs((right - left) - (bottom - top)) <= 2
    assert 95 <= right - left <= 105


def test_edit_mask_is_fitted_like_the_base() -> None:
    base = checkerboard((400, 200))
    mask = Image.new("RGBA", (400, 200), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 200, 200))  # left half of the original

    result = edit(base, mask, width=200, height=200)

    # The centre crop keeps original x 100..300; the mask's boundary x=200 lands at x=100.
    assert result.crop((100, 0, 200, 200)).tobytes() == base.crop((200, 0, 300, 200)).tobytes()
    assert ImageChops.difference(result.crop((0, 0, 100, 200)), base.crop((100, 0, 200, 200))).getbbox()


async def test_rendering_runs_in_the_bounded_image_pool() -> None:
    def render_and_name() -> tuple[str, tuple[int, int]]:
        return threading.current_thread().name, generate(width=64, height=64).size

    name, size = await run_image_task(render_and_name)
    shutdown_pool()

    assert name.startswith("imagegate-img")
    assert size == (64, 64)
    assert await run_image_task(sum, [1, 2]) == 3  # a fresh pool after shutdown
    shutdown_pool()


def frames(count: int = 4, transparent: bool = False, index: int = 0) -> list[Image.Image]:
    return render_frames(
        prompt="a bouncing ball",
        seed=5,
        width=160,
        height=120,
        index=index,
        model="gpt-image-2",
        count=count,
        transparent=transparent,
    )


def test_frames_are_deterministic_and_each_one_differs() -> None:
    first, second = frames(), frames()

    assert [f.tobytes() for f in first] == [f.tobytes() for f in second]
    assert len(first) == 4
    assert all(f.size == (160, 120) and f.mode == "RGB" for f in first)
    assert len({f.tobytes() for f in first}) == 4
    assert [f.tobytes() for f in frames(index=1)] != [f.tobytes() for f in first]


def test_frames_share_the_generation_picture_outside_the_moving_parts() -> None:
    picture = render_generation(
        prompt="a bouncing ball", seed=5, width=160, height=120, index=0, model="gpt-image-2", transparent=False
    )

    for frame in frames():
        # The bottom half (prompt area, footer) is untouched; the overlay lives in the top band.
        assert frame.crop((0, 60, 160, 120)).tobytes() == picture.crop((0, 60, 160, 120)).tobytes()


def test_transparent_frames_keep_alpha_and_one_frame_is_allowed() -> None:
    many = frames(count=3, transparent=True)

    assert all(f.mode == "RGBA" and f.getpixel((0, 119))[3] == 0 for f in many)  # type: ignore[index]
    assert len(frames(count=1)) == 1
    with pytest.raises(ValueError, match="at least 1"):
        frames(count=0)


def test_apply_markup_composites_over_the_base() -> None:
    base = Image.new("RGB", (40, 30), (0, 0, 255))
    markup = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    markup.paste((255, 0, 0, 255), (0, 0, 10, 30))  # opaque red stroke on the left
    markup.paste((255, 0, 0, 128), (20, 0, 30, 30))  # half-transparent red

    result = apply_markup(base, markup)

    assert result.mode == "RGB" and result.size == (40, 30)
    assert result.getpixel((5, 5)) == (255, 0, 0)
    assert result.getpixel((15, 5)) == (0, 0, 255)
    red, _green, blue = result.getpixel((25, 5))  # type: ignore[misc]
    assert 120 <= red <= 136 and 119 <= blue <= 135


def test_apply_markup_keeps_alpha_and_refuses_other_sizes() -> None:
    base = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    markup = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    markup.putpixel((1, 1), (255, 255, 255, 255))

    result = apply_markup(base, markup)

    assert result.mode == "RGBA" and result.getpixel((1, 1)) == (255, 255, 255, 255)
    assert result.getpixel((0, 0))[3] == 0  # type: ignore[index]
    with pytest.raises(ValueError, match="same size"):
        apply_markup(base, Image.new("RGBA", (8, 9)))
