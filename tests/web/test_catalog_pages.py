"""The catalog pages /models, /models/{id} and llms.txt, in process."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from imagegate.config import Settings
from imagegate.web.app import create_app

BASE = "http://testserver"
SEED_PRICES = ("$0.011", "$0.042", "$0.167", "$0.016", "$0.063", "$0.25")


class Pages:
    """GET helper over the in-process app: Starlette's TestClient (httpx) runs the app on its own
    thread and loop, so these tests also pass after the sync Playwright tests in one session."""

    def __init__(self, tmp_path: Path) -> None:
        self.app = create_app(Settings(data_dir=tmp_path, signing_key="k"))
        self.state = self.app.state
        self.client = TestClient(self.app, base_url=BASE, follow_redirects=False)

    def __call__(self, path: str) -> Any:  # the TestClient's httpx response
        return self.client.get(path)


@pytest.fixture
def get(tmp_path: Path) -> Pages:
    return Pages(tmp_path)


def test_models_index_lists_every_catalog_model(get: Pages) -> None:
    response = get("/models")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    catalog = get.state.catalog
    assert len(catalog.models()) >= 10
    for model in catalog.models():
        assert f'href="/models/{model.id}"' in html
        assert model.display_name.replace("&", "&amp;") in html or model.id in html
    assert html.count('class="model-row"') == len(catalog.models())
    assert 'id="model-search"' in html and 'id="filter-mode"' in html and 'id="filter-price"' in html
    assert 'src="/static/catalog.js"' in html and 'href="/static/catalog.css"' in html
    assert "from $0.011 / image" in html


def test_gpt_image_1_page_has_prices_examples_and_lifecycle(get: Pages) -> None:
    response = get("/models/gpt-image-1")
    assert response.status_code == 200
    html = response.text
    for price in SEED_PRICES:
        assert price in html
    # The 3x3 seed table (OpenAI's): rows are sizes, columns low/medium/high.
    table = html.split('class="prices"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>", table)
    assert rows == [
        ("1024x1024", "$0.011", "$0.042", "$0.167"),
        ("1024x1536", "$0.016", "$0.063", "$0.25"),
        ("1536x1024", "$0.016", "$0.063", "$0.25"),
    ]
    for lang in ("python", "javascript", "curl"):
        code = html.split(f'id="code-{lang}"', 1)[1].split("</code>", 1)[0]
        assert "gpt-image-1" in code and f"{BASE}/v1" in code
        assert f'data-copy-target="code-{lang}"' in html
    assert "from openai import OpenAI" in html and "import OpenAI from &quot;openai&quot;" in html
    assert 'href="/playground?model=gpt-image-1"' in html
    assert "retired at OpenAI on 2026-10-23; successor: gpt-image-2.5-sunburst" in html
    assert "Sandbox" in html and ">free<" in html
    assert "How much does GPT Image 1 cost?" in html
    assert "$40 per million" not in html and "$40" in html  # token prices in their own table


def test_parameters_are_derived_from_capabilities(get: Pages) -> None:
    flux = get("/models/flux-1-dev").text
    assert "renamed to num_images" in flux and "emulated beyond 4" in flux
    assert "converted to a preset name" in flux
    dalle = get("/models/dall-e-3").text
    assert "emulated beyond 1" in dalle
    assert "converted: low → standard" in dalle
    assert "image-edit" not in dalle.split('id="parameters"', 1)[1].split('id="code"', 1)[0].replace(
        "(use image-edit)", ""
    )


def test_unknown_model_is_a_404_page_and_alias_redirects(get: Pages) -> None:
    response = get("/models/no-such-model")
    assert response.status_code == 404
    assert "Model not found" in response.text and "<nav" in response.text
    alias = get("/models/nano-banana")
    assert alias.status_code in (301, 302, 307, 308)
    assert alias.headers["location"] == "/models/gemini-2.5-flash-image"
    assert get("/models/no-such-model/llms.txt").status_code == 404


def test_llms_txt_is_plain_text_with_prices(get: Pages) -> None:
    response = get("/models/gpt-image-1/llms.txt")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    text = response.text
    for price in SEED_PRICES:
        assert price in text
    assert "successor: gpt-image-2.5-sunburst" in text
    assert "## Parameters: image-edit" in text


@pytest.mark.parametrize("path", ["/models", "/models/gpt-image-1", "/models/flux-1-dev", "/models/no-such-model"])
def test_no_external_urls(get: Pages, path: str) -> None:
    html = get(path).text
    for pattern in ('<script src="http', '<link href="http', 'rel="stylesheet" href="http', '<img src="http'):
        assert pattern not in html
    blocks = re.findall(r"<pre><code[^>]*>.*?</code></pre>", html, re.S)
    outside = html
    for block in blocks:
        outside = outside.replace(block, "")
    assert re.findall(r"https?://", outside) == []
    for url in re.findall(r"https?://[^\s\"'<&]+", "".join(blocks)):
        assert url.startswith(f"{BASE}/v1"), url


def test_every_model_page_renders(get: Pages) -> None:
    for model in get.state.catalog.models():
        response = get(f"/models/{model.id}")
        assert response.status_code == 200, model.id
        assert get(f"/models/{model.id}/llms.txt").status_code == 200


def test_the_parameter_reference_shows_svg_gif_and_markup_handling(get: Pages) -> None:
    rich = get("/models/gpt-image-2.6-sunburst")
    assert rich.status_code == 200
    html = rich.text
    assert "frame_count / frame_duration_ms" in html and "an animated GIF made by the provider" in html
    assert "svg: made by the provider" in html and "complexity" in html and "xhigh" in html
    assert "markup" in html and "not with mask" in html
    plain = get("/models/gpt-image-1.5").text
    assert "refused with a 400: this provider cannot animate" in plain
    assert "svg: refused (no faithful raster-to-vector conversion)" in plain
    assert "refused with a 400: no faithful emulation exists" in plain  # markup, on the edit reference
