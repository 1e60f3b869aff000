"""SVG output: the sandbox's vector picture, identifying SVG bytes, and a cheap safety check.

SVG is XML, and a general XML parser is the wrong tool for untrusted bytes we only need to
identify and size: DTDs bring entity expansion (billion laughs) and external entities, and a
full parse costs time and memory proportional to the whole document. :func:`svg_size` therefore
never parses: it refuses any document type or entity declaration outright, skips the prolog
(BOM, XML declaration, whitespace, comments) by hand, and reads the root start tag with linear,
possessive regular expressions over the first :data:`HEAD_BYTES` only.

:func:`unsafe_svg_reason` is defence in depth before SVG reaches a browser (which also gets a
restrictive CSP): a tag-level scan for script, event handlers, ``javascript:`` URLs,
``foreignObject`` and references to anything outside the document. It errs on the side of
refusing: markup it cannot tokenise is a reason in itself.
"""

from __future__ import annotations

import colorsys
import hashlib
import html
import math
import random
import re

MAX_SVG_BYTES = 20 * 1024 * 1024
HEAD_BYTES = 64 * 1024
PROMPT_CHARS = 80

_BOM = b"\xef\xbb\xbf"
_DECLARATION = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_XML_DECLARATION = re.compile(rb"<\?xml[ \t\r\n][^<>]*?\?>")
_SPACE = re.compile(rb"[ \t\r\n]*")
_ROOT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?svg(?=[ \t\r\n/>])")
# The rest of a start tag: runs of plain characters and quoted values, then ">". The
# alternatives start with different characters and the repetition is possessive: no backtracking.
_TAG_REST = re.compile(rb"""((?:[^"'<>]++|"[^"<]*+"|'[^'<]*+')*+)>""")
_ATTRIBUTES = re.compile(
    rb"""(?:[ \t\r\n]++[^ \t\r\n=/<>"']++[ \t\r\n]*+=[ \t\r\n]*+(?:"[^"]*+"|'[^']*+'))*+[ \t\r\n]*+/?"""
)
_ATTRIBUTE = re.compile(rb"""([^ \t\r\n=/<>"']+)[ \t\r\n]*=[ \t\r\n]*(?:"([^"]*)"|'([^']*)')""")
_NUMBER = rb"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_LENGTH = re.compile(rb"[ \t\r\n]*(" + _NUMBER + rb")(?:px)?[ \t\r\n]*")
_VIEWBOX = re.compile(rb"[ \t\r\n]*(" + rb")[ \t\r\n,]+(".join([_NUMBER] * 4) + rb")[ \t\r\n]*")

_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_XML_DECLARATION_TEXT = re.compile(r"<\?xml\s")
_STR_TAG = re.compile(r"""</?([A-Za-z_][\w:.-]*+)((?:[^"'<>]++|"[^"]*+"|'[^']*+')*+)>""")
_STR_ATTRIBUTE = re.compile(r"""([^\s=/<>"']+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_QUOTED = re.compile(r""""[^"]*"|'[^']*'""")
_EVENT_NAME = re.compile(r"(?:^|[\s/])(?:[\w.-]+:)?on[\w.-]*\s*=", re.IGNORECASE)
_INVISIBLE = re.compile(r"[\s\x00-\x1f\x7f]+")
_CSS_URL = re.compile(r"url\(['\"]?([^'\")]*)")
_STYLE_END = re.compile(r"</(?:[\w.-]+:)?style\s*>", re.IGNORECASE)
_FORBIDDEN_ELEMENTS = {"script": "a <script> element", "foreignobject": "a <foreignObject> element"}
_ANIMATIONS = frozenset({"set", "animate", "animatemotion", "animatetransform"})


# --- rendering -------------------------------------------------------------------------------


def render_svg(*, prompt: str, seed: int, width: int, height: int, index: int, model: str) -> bytes:
    """A deterministic sandbox SVG 1.1 picture (UTF-8 bytes) of ``width`` x ``height``.

    A two-colour gradient, 6-9 seeded shapes, a "SANDBOX" band, the prompt (clipped to
    :data:`PROMPT_CHARS`) and a footer. Colours and positions come from a SHA-256 of
    (prompt, seed, index, model); sizes scale with the canvas. No script, no external
    reference, no entity: the output passes :func:`unsafe_svg_reason`.
    """
    key = repr(("svg", prompt, seed, index, model)).encode("utf-8", "surrogatepass")
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest(), "big"))
    short = min(width, height)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        "<title>imagegate sandbox image</title>",
        '<defs><linearGradient id="bg" x1="0" y1="0" x2="1" y2="1">'
        f'<stop offset="0" stop-color="{_hex(rng, 0.6, 0.95)}"/>'
        f'<stop offset="1" stop-color="{_hex(rng, 0.7, 0.6)}"/>'
        "</linearGradient></defs>",
        f'<rect width="{width}" height="{height}" fill="url(#bg)"/>',
    ]
    parts += _shapes(rng, width, height)
    band_top, band_height = height * 0.22, max(12.0, short * 0.2)
    mark_size = min(band_height * 0.7, width * 0.86 / 4.6)  # "SANDBOX" is ~4.6 em wide in bold sans
    parts.append(
        f'<rect x="0" y="{_n(band_top)}" width="{width}" height="{_n(band_height)}" fill="#000" fill-opacity="0.6"/>'
    )
    parts.append(
        _text("SANDBOX", width / 2, band_top + band_height / 2, mark_size, 'text-anchor="middle" font-weight="bold"')
    )
    text = _clip(prompt, PROMPT_CHARS)
    margin = width * 0.05
    prompt_size = max(4.0, min(short * 0.06, (width - 2 * margin) / (0.55 * max(1, len(text)))))
    parts.append(_text(text, margin, band_top + band_height + prompt_size * 1.2, prompt_size, ""))
    footer = _clip(f"{model} · {width}x{height} · seed {seed} · #{index}", PROMPT_CHARS)
    footer_size = max(4.0, min(short * 0.035, (width - 2 * margin) / (0.55 * max(1, len(footer)))))
    parts.append(_text(footer, margin, height - footer_size * 0.8, footer_size, ""))
    parts.append("</svg>")
    return ("\n".join(parts) + "\n").encode("utf-8")


def _shapes(rng: random.Random, width: int, height: int) -> list[str]:
    shapes = []
    for _ in range(rng.randint(6, 9)):
        fill = f'fill="{_hex(rng, 0.75, 0.95)}" fill-opacity="{rng.uniform(0.55, 0.9):.2f}"'
        w, h = rng.uniform(0.08, 0.4) * width, rng.uniform(0.08, 0.4) * height
        x, y = rng.uniform(0.04, 0.96) * width - w / 2, rng.uniform(0.04, 0.96) * height - h / 2
        kind = rng.randrange(3)
        if kind == 0:
            shapes.append(
                f'<ellipse cx="{_n(x + w / 2)}" cy="{_n(y + h / 2)}" rx="{_n(w / 2)}" ry="{_n(h / 2)}" {fill}/>'
            )
        elif kind == 1:
            radius = _n(min(w, h) * 0.15)
            shapes.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" rx="{radius}" {fill}/>')
        else:
            points = f"{_n(x + w / 2)},{_n(y)} {_n(x + w)},{_n(y + h)} {_n(x)},{_n(y + h)}"
            shapes.append(f'<polygon points="{points}" {fill}/>')
    return shapes


def _text(content: str, x: float, y: float, size: float, extra: str) -> str:
    attributes = f'x="{_n(x)}" y="{_n(y)}" font-family="sans-serif" font-size="{_n(size)}" {extra}'.rstrip()
    return (
        f'<text {attributes} dominant-baseline="middle" fill="#fff" stroke="#000" '
        f'stroke-width="{_n(max(0.5, size / 14))}" paint-order="stroke">{_escape(content)}</text>'
    )


def _clip(text: str, limit: int) -> str:
    """One line of XML-safe characters, at most ``limit`` long (cut with …)."""
    text = " ".join(_XML_INVALID.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _hex(rng: random.Random, saturation: float, value: float) -> str:
    red, green, blue = colorsys.hsv_to_rgb(rng.random(), saturation, value)
    return f"#{round(red * 255):02x}{round(green * 255):02x}{round(blue * 255):02x}"


def _n(value: float) -> str:
    """A coordinate with one decimal, without a trailing ".0"."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


# --- identifying -----------------------------------------------------------------------------


def svg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an SVG document, or None when ``data`` is not one we accept.

    Refused: over :data:`MAX_SVG_BYTES`; any ``<!DOCTYPE`` or ``<!ENTITY`` (anywhere, any case);
    encodings other than UTF-8/ASCII; a root element other than ``svg`` (a namespace prefix is
    allowed) after an optional BOM, XML declaration, whitespace and comments; a root start tag
    that is malformed or does not end within :data:`HEAD_BYTES`.

    The size comes from the root's ``width``/``height`` (plain numbers or ``px``, rounded half up);
    a missing or other-unit one is taken from ``viewBox`` (keeping its aspect ratio when the
    other is given). None when that gives no size of at least 1x1.

    Why no XML parser: see the module docstring. Everything here is a bounded, linear scan.
    """
    if len(data) > MAX_SVG_BYTES or _DECLARATION.search(data):
        return None
    attributes = _root_attributes(data[:HEAD_BYTES])
    if attributes is None:
        return None
    width, height = _length(attributes.get(b"width")), _length(attributes.get(b"height"))
    box = _viewbox(attributes.get(b"viewBox"))
    if width is None and height is None and box is not None:
        width, height = box
    elif width is None and height is not None and box is not None:
        width = height * box[0] / box[1]
    elif height is None and width is not None and box is not None:
        height = width * box[1] / box[0]
    if width is None or height is None:
        return None
    size = math.floor(width + 0.5), math.floor(height + 0.5)
    return size if size[0] >= 1 and size[1] >= 1 else None


def is_svg(data: bytes) -> bool:
    """Whether ``data`` is an SVG document :func:`svg_size` accepts and can size."""
    return svg_size(data) is not None


def _root_attributes(head: bytes) -> dict[bytes, bytes] | None:
    """The root start tag's attributes when the root element is ``svg``; None otherwise."""
    if head.startswith(_BOM):
        head = head[len(_BOM) :]
    pos = 0
    declaration = _XML_DECLARATION.match(head)
    if declaration is not None:
        pos = declaration.end()
    elif head.startswith(b"<?xml"):
        return None
    while True:
        space = _SPACE.match(head, pos)
        pos = space.end() if space is not None else pos
        if not head.startswith(b"<!--", pos):
            break
        end = head.find(b"-->", pos + 4)
        if end < 0:
            return None
        pos = end + 3
    root = _ROOT.match(head, pos)
    rest = _TAG_REST.match(head, root.end()) if root is not None else None
    if rest is None or _ATTRIBUTES.fullmatch(rest.group(1)) is None:
        return None
    attributes: dict[bytes, bytes] = {}
    for match in _ATTRIBUTE.finditer(rest.group(1)):
        name, value = match.group(1), match.group(2) if match.group(2) is not None else match.group(3)
        if name in attributes:
            return None  # a duplicate attribute: not well-formed
        attributes[name] = value
    return attributes


def _length(value: bytes | None) -> float | None:
    match = _LENGTH.fullmatch(value) if value is not None else None
    if match is None:
        return None
    number = float(match.group(1))
    return number if math.isfinite(number) and number > 0 else None


def _viewbox(value: bytes | None) -> tuple[float, float] | None:
    match = _VIEWBOX.fullmatch(value) if value is not None else None
    if match is None:
        return None
    width, height = float(match.group(3)), float(match.group(4))
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        return None
    return width, height


# --- safety ----------------------------------------------------------------------------------


def unsafe_svg_reason(data: bytes) -> str | None:
    """Why this SVG is not safe to serve to a browser, or None when the scan finds nothing.

    Reasons: a ``<script>`` or ``<foreignObject>`` element, an ``on...=`` event attribute, a
    ``javascript:`` (or ``vbscript:``) URL, a reference (``href``, ``src``, CSS ``url()`` or
    ``@import``) to anything but a ``#fragment`` or a ``data:image/`` URL, an animation of a
    link, a DTD, a CSS escape, and markup the scan cannot tokenise. Character references in
    attribute values are decoded and whitespace is removed before URLs are checked.
    """
    if len(data) > MAX_SVG_BYTES:
        return f"the document is over {MAX_SVG_BYTES} bytes"
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    pos = 0
    while (start := text.find("<", pos)) >= 0:
        for opener, closer in (("<!--", "-->"), ("<![CDATA[", "]]>"), ("<?", "?>")):
            if text.startswith(opener, start):
                end = text.find(closer, start + len(opener))
                if end < 0:
                    return f"an unterminated {opener!r}"
                if opener == "<?" and not _XML_DECLARATION_TEXT.match(text, start):
                    return "a processing instruction (such as <?xml-stylesheet?>)"
                pos = end + len(closer)
                break
        else:
            if text.startswith("<!", start):
                return "a markup declaration (<!DOCTYPE or <!ENTITY)"
            tag = _STR_TAG.match(text, start)
            if tag is None:
                return f"markup that cannot be read at character {start}"
            reason = _tag_reason(tag.group(1), tag.group(2))
            if reason is not None:
                return reason
            pos = tag.end()
            if _local(tag.group(1)) == "style" and not text.startswith("</", start) and not tag.group(2).endswith("/"):
                close = _STYLE_END.search(text, pos)
                if close is None:
                    return "an unterminated <style> element"
                reason = _css_reason(text[pos : close.start()])
                if reason is not None:
                    return reason
                pos = close.end()
    return None


def _tag_reason(name: str, attributes: str) -> str | None:
    element = _local(name)
    if element in _FORBIDDEN_ELEMENTS:
        return _FORBIDDEN_ELEMENTS[element]
    if _EVENT_NAME.search(_QUOTED.sub('""', attributes)):
        return f"an event handler attribute on <{name}>"
    for match in _STR_ATTRIBUTE.finditer(attributes):
        attribute = match.group(1)
        value = html.unescape(match.group(2) if match.group(2) is not None else match.group(3))
        compact = _INVISIBLE.sub("", value).lower()
        if "javascript:" in compact or "vbscript:" in compact:
            return f"a script URL in {attribute}= on <{name}>"
        local = _local(attribute)
        if local in ("href", "src") and compact and not _internal(compact):
            return f"an external reference in {attribute}= on <{name}>"
        if element in _ANIMATIONS and local == "attributename" and _local(compact) in ("href", "src"):
            return f"an animated link on <{name}>"
        reason = _css_reason(value) if local == "style" or "url(" in compact else None
        if reason is not None:
            return f"{reason} in {attribute}= on <{name}>"
    return None


def _css_reason(css: str) -> str | None:
    compact = _INVISIBLE.sub("", html.unescape(css)).lower()
    if "\\" in compact:
        return "a CSS escape"
    if "@import" in compact:
        return "a CSS @import"
    if "javascript:" in compact or "vbscript:" in compact or "expression(" in compact:
        return "script in CSS"
    for target in _CSS_URL.findall(compact):
        if not _internal(target):
            return "an external CSS url()"
    return None


def _internal(url: str) -> bool:
    return url.startswith("#") or url.startswith("data:image/")


def _local(name: str) -> str:
    return name.rpartition(":")[2].lower()
