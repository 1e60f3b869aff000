"""The HTML shell shared by every page: header navigation, the gateway's own CSS, no external assets."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from starlette.responses import HTMLResponse

NAV = (("/playground", "Playground"), ("/models", "Models"), ("/openapi.json", "API"))


def page(
    title: str, body: str, *, active: str = "", scripts: Sequence[str] = (), description: str = ""
) -> HTMLResponse:
    """A complete HTML document. `body` is trusted HTML built with `escape()` by the caller."""
    links = "".join(
        f'<a href="{href}"{" aria-current=page" if href == active else ""}>{escape(label)}</a>' for href, label in NAV
    )
    script_tags = "".join(f'<script src="/static/{escape(name)}" defer></script>' for name in scripts)
    html = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · imagegate</title>
<meta name="description" content="{escape(description)}">
<link rel="stylesheet" href="/static/base.css">
{script_tags}
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top"><a class="brand" href="/">imagegate</a><nav aria-label="Main">{links}</nav></header>
<main id="main">{body}</main>
</body>
</html>"""
    return HTMLResponse(html, headers={"content-security-policy": CSP, "x-content-type-options": "nosniff"})


# Everything is served by the gateway itself; images come back as data: or blob: URLs or signed /v1/files links.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
