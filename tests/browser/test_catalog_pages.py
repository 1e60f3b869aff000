"""Browser tests of the catalog pages: filtering, price table, copy buttons, phone width, keyboard."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.browser.conftest import screenshot


def visible_ids(page) -> list[str]:
    return page.eval_on_selector_all(
        "#model-table tr.model-row:not([hidden]) td:first-child code", "els => els.map(e => e.textContent)"
    )


def test_models_search_and_mode_filter(page, live_gateway: str) -> None:
    page.goto(f"{live_gateway}/models")
    all_ids = visible_ids(page)
    assert "gpt-image-1" in all_ids and "flux-1-dev" in all_ids and len(all_ids) >= 10
    screenshot(page, "models")
    page.fill("#model-search", "flux")
    flux = visible_ids(page)
    assert flux and all("flux" in model_id for model_id in flux)
    assert len(flux) < len(all_ids)
    page.fill("#model-search", "")
    page.select_option("#filter-mode", "image-edit")
    edit_rows = page.locator("#model-table tr.model-row:not([hidden])")
    assert 0 < edit_rows.count() < len(all_ids)
    for text in edit_rows.all_inner_texts():
        assert "image-edit" in text
    page.select_option("#filter-mode", "")
    page.fill("#filter-price", "0.02")
    cheap = visible_ids(page)
    assert "gpt-image-1" in cheap and "dall-e-3" not in cheap
    assert page.locator("#model-count").inner_text() == f"{len(cheap)} models"
    page.click("text=GPT Image 1")
    page.wait_for_url("**/models/gpt-image-1")


def test_model_page_prices_and_copy_runs(page, live_gateway: str, tmp_path: Path) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_gateway)
    page.goto(f"{live_gateway}/models/gpt-image-1")
    table = page.locator("section.offering").first.locator("table.prices")
    cells = table.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )
    assert cells == [
        ["1024x1024", "$0.011", "$0.042", "$0.167"],
        ["1024x1536", "$0.016", "$0.063", "$0.25"],
        ["1536x1024", "$0.016", "$0.063", "$0.25"],
    ]
    assert table.locator("thead th").all_inner_texts() == ["Size", "low", "medium", "high"]
    assert "successor: gpt-image-2.5-sunburst" in page.inner_text("dl.facts")
    screenshot(page, "model-gpt-image-1")

    page.click('button[data-copy-target="code-python"]')
    page.wait_for_function("window.__lastCopied !== undefined")
    try:
        copied = page.evaluate("navigator.clipboard.readText()")
    except Exception:  # a headless clipboard may be missing; the page keeps a copy
        copied = ""
    if not copied:
        copied = page.evaluate("window.__lastCopied")
    assert copied == page.locator("#code-python").text_content()
    assert f'base_url="{live_gateway}/v1"' in copied

    script = tmp_path / "example.py"
    script.write_text(copied)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    data = (tmp_path / "gpt-image-1.png").read_bytes()
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format in ("PNG", "JPEG")
    assert image.size == (1024, 1024)


def test_phone_width_has_no_horizontal_scroll(phone_page, live_gateway: str) -> None:
    for path in ("/models/gpt-image-1", "/models", "/models/flux-1-dev"):
        phone_page.goto(f"{live_gateway}{path}")
        width = phone_page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 391, (path, width)
    phone_page.goto(f"{live_gateway}/models/gpt-image-1")
    screenshot(phone_page, "model-gpt-image-1-phone")


def test_keyboard_reaches_search_and_copy_buttons(page, live_gateway: str) -> None:
    page.goto(f"{live_gateway}/models")
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "model-search":
            break
    else:
        raise AssertionError("Tab never reached the search box")
    page.keyboard.type("kontext")
    assert visible_ids(page) == ["flux-kontext-max", "flux-kontext-pro"]
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"

    page.goto(f"{live_gateway}/models/gpt-image-1")
    reached = None
    for _ in range(200):
        page.keyboard.press("Tab")
        target = page.evaluate("document.activeElement.getAttribute('data-copy-target')")
        if target and target.startswith("code-"):
            reached = target
            break
    assert reached == "code-python"
    page.keyboard.press("Enter")
    page.wait_for_function("window.__lastCopied !== undefined")
    assert "from openai import OpenAI" in page.evaluate("window.__lastCopied")
