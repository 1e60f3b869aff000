"""The playground in Chromium against a live gateway on the sandbox provider."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from PIL import Image

from tests.browser.conftest import screenshot

MAGIC = {"png": b"\x89PNG", "jpeg": b"\xff\xd8\xff", "webp": b"RIFF"}


def _open(page, live_gateway: str, query: str = "") -> None:
    page.goto(live_gateway + "/playground" + query)
    _until(page, "document.querySelectorAll('#model option').length > 0")
    _until(page, "document.querySelectorAll('#size option').length > 0")


def _until(page, expression: str) -> None:
    """Waits for a JS expression; wrapped in a function because the page's CSP forbids eval."""
    page.wait_for_function(f"() => ({expression})")


def _wait_result(page) -> None:
    page.wait_for_function(
        "() => { const img = document.querySelector('#results img');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (512, 512)) -> Path:
    Image.new("RGB", size, colour).save(path, "PNG")
    return path


def test_generate_shows_image(page, live_gateway):
    _open(page, live_gateway, "?model=gpt-image-1")
    assert page.locator("#model").input_value() == "gpt-image-1"
    page.fill("#prompt", "a lighthouse at dusk, watercolour")
    page.click("#generate")
    _wait_result(page)
    assert page.locator("#result-meta").inner_text().count("sandbox") >= 1
    assert page.locator("#decisions tbody tr").count() >= 1
    _until(page, "document.querySelectorAll('#history li img').length >= 1")
    _until(page, "document.querySelectorAll('#estimate-table tbody tr').length >= 1")
    assert "sandbox" in page.locator("#estimate-table").inner_text()
    # Enlarge with the keyboard, close with Escape.
    page.focus("#results img")
    page.keyboard.press("Enter")
    assert page.locator("#viewer").evaluate("d => d.open")
    page.keyboard.press("Escape")
    assert not page.locator("#viewer").evaluate("d => d.open")
    screenshot(page, "playground-desktop")
    # The history entry shows the result again.
    page.evaluate("document.getElementById('results').replaceChildren()")
    page.click("#history button")
    _wait_result(page)
    assert page.locator("#prompt").input_value() == "a lighthouse at dusk, watercolour"
    stored = page.evaluate("JSON.parse(sessionStorage.getItem('imagegate.playground.history'))")
    assert stored[0]["model"] == "gpt-image-1" and stored[0]["thumb"].startswith("data:image/")


def test_download_has_the_chosen_format(page, live_gateway):
    _open(page, live_gateway)
    page.fill("#prompt", "a red fox")
    page.select_option("#size", "1024x1024")
    for fmt in ("webp", "jpeg"):
        page.select_option("#output-format", fmt)
        assert page.locator("#compression").is_enabled()
        page.evaluate("window.__lastResult = null")
        page.click("#generate")
        _until(page, "window.__lastResult !== null")
        _wait_result(page)
        link = page.locator("#results a[download]").first
        with page.expect_download() as info:
            link.click()
        download = info.value
        assert download.suggested_filename.endswith("." + fmt)
        assert download.suggested_filename.startswith("imagegate-req_")
        data = Path(download.path()).read_bytes()
        assert data.startswith(MAGIC[fmt]), data[:12]
        if fmt == "webp":
            assert data[8:12] == b"WEBP"
    page.select_option("#output-format", "png")
    assert page.locator("#compression").is_disabled()


def test_edit_with_two_images_and_painted_mask(page, live_gateway, tmp_path):
    first = _png(tmp_path / "first.png", (30, 160, 60), (1024, 1024))
    second = _png(tmp_path / "second.png", (200, 40, 40), (256, 256))
    _open(page, live_gateway, "?model=gpt-image-1")
    page.check("#mode-edit")
    _until(page, "!document.getElementById('edit-inputs').hidden")
    page.select_option("#size", "1024x1024")
    page.set_input_files("#files", [str(first), str(second)])
    _until(page, "document.querySelectorAll('#thumbs img').length === 2")
    _until(page, "document.getElementById('mask-canvas').width === 1024")
    box = page.locator("#mask-canvas").bounding_box()
    assert box is not None
    # A stroke down the left part: x = 10%..20% of the width, y = 30%..70%.
    page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + box["width"] * 0.15, box["y"] + box["height"] * (0.3 + step * 0.04))
    page.mouse.up()
    page.fill("#prompt", "paint it blue")
    page.click("#generate")
    _until(page, "window.__lastResult !== null")
    _wait_result(page)
    b64 = page.evaluate("window.__lastResult.images[0]")
    result = Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")
    assert result.size == (1024, 1024)
    original = (30, 160, 60)
    inside = result.getpixel((int(1024 * 0.15), int(1024 * 0.5)))
    far = result.getpixel((int(1024 * 0.85), int(1024 * 0.5)))
    assert far == original
    assert inside != original
    assert page.locator("#results img").count() == 1


def test_cancel_stops_the_request(page, live_gateway):
    held = []

    def hold(route):
        body = route.request.post_data or ""
        if '"dry_run":true' in body:
            route.continue_()
        else:
            held.append(route)  # never answered: the request hangs until cancelled

    page.route("**/playground/api/images/generations", hold)
    _open(page, live_gateway)
    page.fill("#prompt", "a slow picture")
    page.click("#generate")
    _until(page, "parseFloat(document.getElementById('elapsed').textContent) >= 0.3")
    assert held
    page.click("#cancel")
    _until(page, "document.getElementById('status').textContent === 'Cancelled'")
    stopped = page.locator("#elapsed").inner_text()
    page.wait_for_timeout(400)
    assert page.locator("#elapsed").inner_text() == stopped
    assert page.locator("#results img").count() == 0
    assert page.locator("#alert").inner_text() == ""
    assert page.locator("#generate").is_enabled()


def test_bad_uploads_are_refused_in_the_page(page, live_gateway, tmp_path):
    sent = []
    page.on("request", lambda r: sent.append(r.url) if "/playground/api/images/edits" in r.url else None)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    big = tmp_path / "huge.png"
    with open(big, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(21 * 1024 * 1024)
    _open(page, live_gateway, "?model=gpt-image-1")
    page.check("#mode-edit")
    page.fill("#prompt", "edit it")
    page.set_input_files("#files", str(text))
    alert = page.locator("#alert")
    _until(page, "document.getElementById('alert').textContent.includes('notes.png')")
    assert "not a PNG, JPEG or WebP" in alert.inner_text()
    page.click("#generate")
    assert "notes.png" in alert.inner_text()
    page.set_input_files("#files", str(big))
    _until(page, "document.getElementById('alert').textContent.includes('huge.png')")
    assert "20 MiB" in alert.inner_text()
    page.click("#generate")
    page.wait_for_timeout(300)
    assert page.locator("#thumbs img").count() == 0
    assert sent == []


def test_api_error_is_shown(page, live_gateway):
    _open(page, live_gateway, "?model=gpt-image-2")
    _until(page, "!document.getElementById('custom-size-field').hidden")
    page.fill("#custom-size", "99999x16")
    page.fill("#prompt", "too wide")
    page.click("#generate")
    _until(page, "document.getElementById('alert').textContent.length > 0")
    assert "99999x16" in page.locator("#alert").inner_text()
    assert page.locator("#results img").count() == 0
    assert page.locator("#status").inner_text() == "Failed"


def test_stream_error_event_is_shown(page, live_gateway):
    def fail(route):
        if '"dry_run":true' in (route.request.post_data or ""):
            route.continue_()
            return
        route.fulfill(
            status=200,
            headers={"content-type": "text/event-stream"},
            body='event: error\ndata: {"type":"error","error":{"message":"upstream broke mid-stream"}}\n\n',
        )

    page.route("**/playground/api/images/generations", fail)
    _open(page, live_gateway)
    page.fill("#prompt", "x")
    page.click("#generate")
    _until(page, "document.getElementById('alert').textContent.includes('upstream broke')")
    assert page.locator("#results img").count() == 0


def test_phone_layout(phone_page, live_gateway):
    _open(phone_page, live_gateway)
    assert phone_page.locator("#generate").is_visible()
    width = phone_page.evaluate("document.scrollingElement.scrollWidth")
    assert width <= 391, width
    phone_page.locator("#generate").scroll_into_view_if_needed()
    box = phone_page.locator("#generate").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 391
    screenshot(phone_page, "playground-phone")


def test_keyboard_only(page, live_gateway):
    _open(page, live_gateway)
    page.focus("#prompt")
    page.keyboard.type("a cat drawn with the keyboard")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "generate":
            break
    assert page.evaluate("document.activeElement.id") == "generate"
    page.keyboard.press("Enter")
    _wait_result(page)


def test_anonymous_cap_message_is_shown(page, live_gateway):
    message = (
        "Anonymous playground cap reached: 40 images per UTC day per IP address. "
        "It resets at 00:00 UTC (in 3 h 12 min); use an API key to go beyond it."
    )

    def refuse(route):
        if '"dry_run":true' in (route.request.post_data or ""):
            route.continue_()
            return
        route.fulfill(
            status=429,
            headers={"content-type": "application/json", "retry-after": "11520"},
            body=json.dumps({"error": {"message": message, "type": "rate_limit_error", "param": None, "code": "x"}}),
        )

    page.route("**/playground/api/images/generations", refuse)
    _open(page, live_gateway)
    page.fill("#prompt", "one too many")
    page.click("#generate")
    _until(page, "document.getElementById('alert').textContent.includes('resets at 00:00 UTC')")
    assert page.locator("#results img").count() == 0
