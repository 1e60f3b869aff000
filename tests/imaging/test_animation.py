"""Animated GIF output: delays, encoding, reading back, and bomb refusal."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from PIL import Image, ImageDraw

from imagegate.imaging.animation import (
    DEFAULT_FRAME_MS,
    DEFAULT_FRAMES,
    MAX_FRAME_MS,
    MAX_FRAMES,
    MIN_FRAMES,
    encode_animated_gif,
    gif_delay_ms,
    gif_frames,
)


def moving_square(count: int, size: tuple[int, int] = (96, 64), alpha: bool = False) -> list[Image.Image]:
    """Frames with a red square moving right; with ``alpha`` the background is transparent."""
    frames = []
    for number in range(count):
        frame = Image.new("RGBA", size, (0, 0, 0, 0) if alpha else (30, 120, 200, 255))
        x = 4 + number * 8
        ImageDraw.Draw(frame).rectangle((x, 20, x + 15, 35), fill=(230, 30, 30, 255))
        frames.append(frame if alpha else frame.convert("RGB"))
    return frames


def test_constants_match_openai() -> None:
    assert (MIN_FRAMES, MAX_FRAMES, DEFAULT_FRAMES, DEFAULT_FRAME_MS, MAX_FRAME_MS) == (2, 16, 9, 200, 655_350)


@pytest.mark.parametrize(
    ("requested", "delay"),
    [
        (200, 200),
        (204, 200),
        (205, 210),
        (195, 200),
        (194, 190),
        (0, 10),
        (4, 10),
        (-50, 10),
        (15, 20),
        (655_344, 655_340),
        (655_345, 655_350),
        (655_350, 655_350),
        (10**9, 655_350),
    ],
)
def test_gif_delay_ms(requested: int, delay: int) -> None:
    assert gif_delay_ms(requested) == delay


def test_round_trip_keeps_count_durations_loop_and_size() -> None:
    data = encode_animated_gif(moving_square(5), 123)

    assert gif_frames(data) == (5, [120] * 5)
    with Image.open(BytesIO(data)) as image:
        assert image.format == "GIF" and image.size == (96, 64)
        assert image.info["loop"] == 0
        assert image.n_frames == 5
        image.seek(3)
        pixel = image.convert("RGB").getpixel((4 + 3 * 8 + 7, 27))
    assert isinstance(pixel, tuple) and pixel[0] > 180 and pixel[2] < 80  # the square moved to frame 3's place


def test_identical_frames_are_not_merged() -> None:
    still = moving_square(1)[0]

    assert gif_frames(encode_animated_gif([still] * 4, 200)) == (4, [200] * 4)


def test_one_frame_is_a_still_gif_and_long_delays_are_capped() -> None:
    assert gif_frames(encode_animated_gif(moving_square(1), 10**7)) == (1, [MAX_FRAME_MS])


def test_default_sized_animation_encodes_sixteen_frames() -> None:
    frames = moving_square(MAX_FRAMES, size=(256, 256))

    assert gif_frames(encode_animated_gif(frames, DEFAULT_FRAME_MS)) == (16, [200] * 16)


def test_transparent_frames_keep_transparency_without_trails() -> None:
    data = encode_animated_gif(moving_square(3, alpha=True), 100, transparent=True)

    with Image.open(BytesIO(data)) as image:
        for number in range(3):
            image.seek(number)
            rgba = image.convert("RGBA")
            x = 4 + number * 8
            assert rgba.getpixel((0, 0))[3] == 0  # type: ignore[index]
            assert rgba.getpixel((x + 7, 27))[3] == 255  # type: ignore[index]
            # The previous frame's square is cleared (disposal 2), not left behind.
            assert rgba.getpixel((x + 15 + 4, 27))[3] == 0  # type: ignore[index]
            if number:
                assert rgba.getpixel((x - 4, 27))[3] == 0  # type: ignore[index]


def test_opaque_mode_flattens_alpha_onto_white() -> None:
    data = encode_animated_gif(moving_square(2, alpha=True), 100)

    with Image.open(BytesIO(data)) as image:
        assert "transparency" not in image.info
        assert image.convert("RGB").getpixel((0, 0)) == (255, 255, 255)


def test_refuses_no_frames_and_mixed_sizes() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        encode_animated_gif([], 200)
    with pytest.raises(ValueError, match="frame 1 is 10x10"):
        encode_animated_gif([Image.new("RGB", (12, 10)), Image.new("RGB", (10, 10))], 200)


def gif_with(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A minimal GIF: a logical screen, one frame descriptor, a tiny LZW body, the trailer."""
    header = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + bytes(6)  # 2-colour global table
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, *frame, 0)
    return header + descriptor + b"\x02\x02\x44\x01\x00;"


def test_gif_frames_refuses_a_huge_screen_before_decoding() -> None:
    with pytest.raises(ValueError, match="over 40000000 pixels"):
        gif_frames(gif_with((65_535, 65_535), (1, 1)))


def test_gif_frames_refuses_a_frame_that_grows_the_canvas() -> None:
    with pytest.raises(ValueError):
        gif_frames(gif_with((1, 1), (8_000, 8_000)))


def test_gif_frames_reads_a_tiny_handmade_gif_and_caps_frame_count() -> None:
    assert gif_frames(gif_with((1, 1), (1, 1))) == (1, [0])
    with pytest.raises(ValueError, match="more than 3 frames"):
        gif_frames(encode_animated_gif(moving_square(5), 50), max_frames=3)


@pytest.mark.parametrize("data", [b"", b"GIF89a", b"\x89PNG\r\n\x1a\n" + bytes(40), b"GIF89a" + bytes(7) + b"garbage"])
def test_gif_frames_refuses_non_gifs(data: bytes) -> None:
    with pytest.raises(ValueError):
        gif_frames(data)
