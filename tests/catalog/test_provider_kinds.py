"""Catalog x provider kinds: every offering names a kind this gateway has an adapter for (or one that
is knowingly still missing), and neither /v1/models nor the pages show an offering as served when no
provider instance can call it."""

from __future__ import annotations

from pathlib import Path

import httpx

from imagegate.catalog.loader import load_catalog
from imagegate.config import Settings
from imagegate.providers.kinds import kinds
from imagegate.web.app import create_app

# Kinds the catalog names before their adapter lands. Empty now; never grow it without an issue: a new
# unknown kind fails here.
NOT_YET_ADAPTED: set[str] = set()


def test_every_offering_names_a_kind_with_an_adapter() -> None:
    named = {offering.kind or offering.provider for model in load_catalog() for offering in model.offerings}
    missing = named - set(kinds()) - {"sandbox"}
    assert missing == NOT_YET_ADAPTED, f"offerings name kinds without an adapter: {sorted(missing)}"


async def test_unserved_offerings_are_labelled_not_configured(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, signing_key="k"))  # no provider keys: only the sandbox
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        providers = {p["provider"]: p for p in (await http.get("/v1/models/flux-1-dev")).json()["providers"]}
        assert providers["replicate"]["serving"] == "no_key"  # the adapter is there, no REPLICATE_API_TOKEN
        assert providers["fal"]["serving"] == "no_key"
        assert providers["sandbox"]["serving"] == "ready"
        grok = {p["provider"]: p for p in (await http.get("/v1/models/grok-imagine-image")).json()["providers"]}
        assert grok["xai"]["serving"] == "not_configured" and grok["xai"]["kind"] == "openai-compatible"
        page = (await http.get("/models/flux-1-dev")).text
        assert "not configured here" in (await http.get("/models/grok-imagine-image")).text
        assert "not configured: no API key" in page
        assert "served here by Sandbox" in page or "served here by sandbox" in page
    await app.state.registry.aclose()
    await app.state.runtime.aclose()


def test_every_price_says_where_it_comes_from_and_when() -> None:
    """A price in the data carries its source and an "as of" date in the offering's pricing notes."""
    import re

    undated = [
        (model.id, offering.provider)
        for model in load_catalog()
        for offering in model.offerings
        if (offering.pricing.per_image or offering.pricing.tokens or offering.pricing.per_megapixel)
        and not re.search(r"20\d\d-\d\d", offering.pricing.notes)
    ]
    assert not undated, f"prices without a dated source: {undated}"
