"""Sandbox SVG output, sizing SVG bytes without an XML parser, and the browser-safety scan."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from imagegate.imaging.svg import MAX_SVG_BYTES, is_svg, render_svg, svg_size, unsafe_svg_reason

SVG_NS = "{http://www.w3.org/2000/svg}"


def draw(prompt: str = "a lighthouse at dusk", index: int = 0, width: int = 512, height: int = 384) -> bytes:
    return render_svg(prompt=prompt, seed=42, width=width, height=height, index=index, model="gpt-image-2")


def test_render_is_deterministic_and_changes_with_the_index() -> None:
    assert draw() == draw()
    assert draw(index=1) != draw()
    assert draw(prompt="something else") != draw()


def test_render_is_well_formed_with_size_viewbox_label_and_prompt() -> None:
    root = ET.fromstring(draw(width=640, height=480))

    assert root.tag == f"{SVG_NS}svg"
    assert (root.get("width"), root.get("height"), root.get("viewBox")) == ("640", "480", "0 0 640 480")
    texts = [element.text for element in root.iter(f"{SVG_NS}text")]
    assert "SANDBOX" in texts
    assert "a lighthouse at dusk" in texts
    shapes = [e for e in root.iter() if e.tag in (f"{SVG_NS}ellipse", f"{SVG_NS}polygon", f"{SVG_NS}rect")]
    assert len(shapes) >= 2 + 6  # background, band and at least six seeded shapes


def test_render_escapes_and_clips_the_prompt() -> None:
    prompt = 'x<script>alert("1")</script> & ]]> \x00\x1b\ud800 ' + "long " * 100

    data = draw(prompt=prompt)
    root = ET.fromstring(data)

    shown = [t.text or "" for t in root.iter(f"{SVG_NS}text")][1]
    assert shown.startswith('x<script>alert("1")</script> & ]]>')
    assert len(shown) <= 80 and shown.endswith("…")
    assert b"<script" not in data
    assert unsafe_svg_reason(data) is None
    assert svg_size(data) == (512, 384)


def test_render_output_is_clean_and_has_no_external_references() -> None:
    data = draw(prompt="javascript: onload=alert(1) http://example.com")

    assert unsafe_svg_reason(data) is None
    assert b"<!DOCTYPE" not in data and b"<!ENTITY" not in data


@pytest.mark.parametrize(
    ("document", "size"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="300" height="200"/>', (300, 200)),
        (b"<svg width='300px' height = '200.6px' viewBox='0 0 10 10'></svg>", (300, 201)),
        (b'<svg viewBox="0 0 640 480"><rect/></svg>', (640, 480)),
        (b'<svg viewBox="-5,-5 , 100.4,50.5"></svg>', (100, 51)),
        (b'<svg width="100%" height="50%" viewBox="0 0 40 30"/>', (40, 30)),
        (b'<svg width="200" viewBox="0 0 40 30"/>', (200, 150)),
        (b'<svg\n  height="60"\n  viewBox="0 0 40 30"\n>', (80, 60)),
        (b'<svg:svg xmlns:svg="http://www.w3.org/2000/svg" width="7" height="9"/>', (7, 9)),
        (
            b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?>\n<!-- made by hand -->\n\n<!-- two -->'
            b'<svg xmlns="http://www.w3.org/2000/svg" width="12" height="34"><g/></svg>',
            (12, 34),
        ),
    ],
    ids=[
        "plain",
        "px",
        "viewbox-only",
        "viewbox-commas",
        "percent",
        "width-and-viewbox",
        "newlines",
        "prefix",
        "prolog",
    ],
)
def test_svg_size(document: bytes, size: tuple[int, int]) -> None:
    assert svg_size(document) == size
    assert is_svg(document)


@pytest.mark.parametrize(
    "document",
    [
        b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa">]><svg width="1" height="1">&a;</svg>',
        b'<svg width="1" height="1"><!doctype x></svg>',
        b'<svg width="1" height="1"/><!-- <!ENTITY x "y"> -->',
        b'<html><svg width="1" height="1"/></html>',
        b'<svgx width="1" height="1"/>',
        b'<?xml-stylesheet href="a.css"?><svg width="1" height="1"/>',
        b'<!-- unterminated <svg width="1" height="1"/>',
        b'<svg width="0" height="10"/>',
        b'<svg width="10cm" height="10cm"/>',
        b'<svg viewBox="0 0 0 10"/>',
        b'<svg width="1e999" height="1"/>',
        b'<svg width="10" width="20" height="5"/>',
        b'<svg width="10" height="20"',
        b'<svg width="10 height="20"/>',
        b"text <svg width='1' height='1'/>",
        b"\xff\xfe<\x00s\x00v\x00g\x00",
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"",
        bytes(range(256)) * 4,
    ],
    ids=[
        "doctype-entity",
        "lowercase-doctype",
        "entity-in-comment",
        "html-root",
        "svgx-root",
        "stylesheet-pi",
        "unterminated-comment",
        "zero-width",
        "cm-no-viewbox",
        "zero-viewbox",
        "infinite",
        "duplicate-attribute",
        "truncated",
        "broken-quote",
        "text-first",
        "utf16",
        "png",
        "empty",
        "garbage",
    ],
)
def test_svg_size_refuses(document: bytes) -> None:
    assert svg_size(document) is None
    assert not is_svg(document)


def test_svg_size_refuses_oversized_and_far_root_tags() -> None:
    big = b'<svg width="1" height="1">' + b" " * MAX_SVG_BYTES + b"</svg>"
    far = b"<!--" + b"x" * 70_000 + b'--><svg width="1" height="1"/>'
    long_tag = b'<svg width="1" height="1" ' + b'a="b" ' * 20_000 + b"/>"

    assert svg_size(big) is None
    assert svg_size(far) is None
    assert svg_size(long_tag) is None


def test_svg_size_is_fast_on_hostile_input() -> None:
    import time

    hostile = [
        b"<svg" + b" " * 60_000,
        b'<svg width="' + b"1" * 60_000,
        b'<svg viewBox="' + b"1 " * 30_000 + b'"/>',
        b"<svg" + b' a="b"' * 10_000 + b" c",
    ]
    started = time.perf_counter()
    for document in hostile:
        assert svg_size(document) is None
    assert time.perf_counter() - started < 1.0


CLEAN = b"""<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="10" height="10">
  <!-- <script> in a comment is inert -->
  <defs><linearGradient id="g"/></defs>
  <style><![CDATA[ rect { fill: url(#g); } ]]></style>
  <rect width="10" height="10" fill="url(#g)" style="stroke: red"/>
  <use href="#g"/><use xlink:href="#g"/>
  <image href="data:image/png;base64,iVBORw0KGgo=" width="1" height="1"/>
  <a href="#top"><text>onload=1 javascript: http://example.com</text></a>
</svg>"""


def test_unsafe_svg_reason_passes_clean_input() -> None:
    assert unsafe_svg_reason(CLEAN) is None


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (b"<svg><script>alert(1)</script></svg>", "script"),
        (b'<svg><svg:script xmlns:svg="x"/></svg>', "script"),
        (b'<svg><SCRIPT href="x.js"/></svg>', "script"),
        (b'<svg onload="alert(1)"/>', "event handler"),
        (b"<svg><rect width='1' ONclick = 'x()'/></svg>", "event handler"),
        (b'<svg><a href="javascript:alert(1)"><rect/></a></svg>', "script URL"),
        (b'<svg><a href=" jav&#x09;ascript&#58;alert(1)"><rect/></a></svg>', "script URL"),
        (b'<svg><a xlink:href="&#106;avascript:alert(1)"/></svg>', "script URL"),
        (b"<svg><foreignObject><div/></foreignObject></svg>", "foreignObject"),
        (b'<svg><image href="https://example.com/x.png"/></svg>', "external reference"),
        (b'<svg><use xlink:href="other.svg#a"/></svg>', "external reference"),
        (b'<svg><image href="//example.com/x.png"/></svg>', "external reference"),
        (b'<svg><a href="data:text/html,&lt;script&gt;"/></svg>', "external reference"),
        (b'<svg><rect fill="url(https://example.com/p.svg#g)"/></svg>', "url()"),
        (b'<svg><rect style="background: url(http://example.com/a.png)"/></svg>', "url()"),
        (b"<svg><style>@import 'http://example.com/a.css';</style></svg>", "@import"),
        (b"<svg><style>rect { fill: \\75 rl(http://x) }</style></svg>", "escape"),
        (b'<svg><set attributeName="href" to="#x"/></svg>', "animated link"),
        (b'<?xml-stylesheet href="http://example.com/a.css"?><svg/>', "processing instruction"),
        (b'<!DOCTYPE svg [<!ENTITY x "y">]><svg/>', "declaration"),
        (b"<svg><!-- unterminated <script>", "unterminated"),
        (b'<svg><!-- <x a=" --><script>alert(1)</script><!-- " --></svg>', "script"),
        (b"<svg><rect a=<script>/></svg>", "cannot be read"),
    ],
)
def test_unsafe_svg_reason_finds(document: bytes, expected: str) -> None:
    reason = unsafe_svg_reason(document)

    assert reason is not None
    assert expected.lower() in reason.lower()
