"""The packaged catalog loads, holds the seed facts exactly, and bad data files fail loudly."""

from __future__ import annotations

import tomllib
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest

from imagegate.catalog import Catalog, CatalogError, load_catalog
from imagegate.core.types import MODES, Dimensions, ModelInfo

EXPECTED_IDS = {
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-flare",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
    "chatgpt-image-latest",
    "grok-imagine-image",
    "dall-e-2",
    "dall-e-3",
    "flux-1-schnell",
    "flux-1-dev",
    "flux-kontext-pro",
    "flux-kontext-max",
    "flux-1.1-pro",
    "flux-1.1-pro-ultra",
    "flux-2-pro",
    "flux-2-max",
    "flux-2-flex",
    "flux-2-klein-4b",
    "flux-2-klein-9b",
    "seedream-4.5",
    "qwen-image",
    "recraft-v3",
    "ideogram-v3",
    "gemini-2.5-flash-image",
    "gemini-3-pro-image",
    "gemini-3.1-flash-image",
    "imagen-4.0-generate",
    "imagen-4.0-fast-generate",
    "imagen-4.0-ultra-generate",
}

GPT_IMAGE_1_PRICES = {
    ("low", "1024x1024"): "0.011",
    ("medium", "1024x1024"): "0.042",
    ("high", "1024x1024"): "0.167",
    ("low", "1024x1536"): "0.016",
    ("medium", "1024x1536"): "0.063",
    ("high", "1024x1536"): "0.25",
    ("low", "1536x1024"): "0.016",
    ("medium", "1536x1024"): "0.063",
    ("high", "1536x1024"): "0.25",
}

MINIMAL_MODEL = """\
id = "{id}"
display_name = "Test model"
creator = "Tester"
family = "Test"
modes = ["text-to-image"]
max_input_images = 0
max_resolution = "1024x1024"

[[offerings]]
provider = "{provider}"
model_ids = {{ "text-to-image" = "test/{id}" }}

[offerings.caps]
sizes = "openai-gpt-image"
formats = ["png", "jpeg"]
default_format = "png"

[offerings.pricing]
per_image = [{{ quality = "standard", size = "1024x1024", usd = "0.01" }}]
"""


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _model(catalog: Catalog, model_id: str) -> ModelInfo:
    model = catalog.get(model_id)
    assert model is not None, model_id
    return model


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the packaged data ----------------------------------------------------------------------------


def test_packaged_catalog_loads(catalog: Catalog) -> None:
    assert {m.id for m in catalog.models()} == EXPECTED_IDS
    assert len(catalog) == len(EXPECTED_IDS)
    assert [m.id for m in catalog.models()] == sorted(EXPECTED_IDS)
    assert catalog.providers() == {"openai", "fal", "replicate", "google", "vertex", "xai", "bfl", "openrouter"}
    assert "gpt-image-1" in catalog
    assert "no-such-model" not in catalog
    assert catalog.get("no-such-model") is None


def test_packaged_files_are_named_after_their_model() -> None:
    data = resources.files("imagegate.catalog") / "data"
    for item in data.iterdir():
        if item.name.endswith(".toml") and item.name != "size_systems.toml":
            assert tomllib.loads(item.read_text(encoding="utf-8"))["id"] + ".toml" == item.name


def test_every_model_is_described(catalog: Catalog) -> None:
    for model in catalog.models():
        assert model.overview and model.tags and model.display_name
        assert set(model.modes) <= set(MODES)
        for off in model.offerings:
            assert set(off.model_ids) <= set(model.modes)


def test_gpt_image_1_facts(catalog: Catalog) -> None:
    model = _model(catalog, "gpt-image-1")
    assert (model.creator, model.family) == ("OpenAI", "GPT Image")
    assert model.modes == ("text-to-image", "image-edit")
    assert model.max_resolution == "1536x1024"
    assert [off.provider for off in model.offerings] == ["openai", "fal"]
    openai = model.offering("openai")
    assert openai is not None
    caps = openai.caps
    assert openai.model_ids == {"text-to-image": "gpt-image-1", "image-edit": "gpt-image-1"}
    assert [s.size for s in caps.sizes.sizes] == ["1024x1024", "1536x1024", "1024x1536"]
    assert caps.sizes.kind == "discrete" and caps.sizes.auto and caps.sizes.default == "1024x1024"
    assert (caps.max_n, caps.n_wire, caps.mask, caps.compression) == (10, "n", True, True)
    assert caps.formats == ("png", "jpeg", "webp") and caps.default_format == "png"
    assert caps.qualities == ("low", "medium", "high", "auto") and caps.default_quality == "auto"
    assert caps.backgrounds == ("transparent", "opaque", "auto")
    assert caps.max_input_images == 16
    assert caps.params["moderation"].values == ("low", "auto")
    assert caps.params["input_fidelity"].values == ("low", "high")
    assert caps.params["user"].handling == "passthrough"
    seed = caps.params["seed"]
    assert (seed.handling, seed.on_unsupported) == ("unsupported", "drop")


def test_gpt_image_1_prices_are_exact_decimals(catalog: Catalog) -> None:
    model = _model(catalog, "gpt-image-1")
    for provider in ("openai", "fal"):
        off = model.offering(provider)
        assert off is not None
        prices = {(p.quality, p.size): p.usd for p in off.pricing.per_image}
        assert prices == {key: Decimal(usd) for key, usd in GPT_IMAGE_1_PRICES.items()}
        assert all(type(usd) is Decimal for usd in prices.values())
    openai = model.offering("openai")
    assert openai is not None and openai.pricing.tokens is not None
    tokens = openai.pricing.tokens
    assert tokens.text_input == Decimal("5.00")
    assert tokens.cached_text_input == Decimal("1.25")
    assert tokens.image_input == Decimal("10.00")
    assert tokens.cached_image_input == Decimal("2.50")
    assert tokens.image_output == Decimal("40.00")
    fal = model.offering("fal")
    assert fal is not None and "passes OpenAI's rates through" in fal.pricing.notes


def test_other_prices(catalog: Catalog) -> None:
    schnell = _model(catalog, "flux-1-schnell")
    fal = schnell.offering("fal")
    assert fal is not None and fal.pricing.per_megapixel == Decimal("0.003")
    dev_rep = _model(catalog, "flux-1-dev").offering("replicate")
    assert dev_rep is not None
    assert [(p.quality, p.size, p.usd) for p in dev_rep.pricing.per_image] == [("standard", "*", Decimal("0.025"))]
    pro = _model(catalog, "gemini-3-pro-image-preview").offering("google")
    assert pro is not None
    assert {p.size: p.usd for p in pro.pricing.per_image} == {
        "1K": Decimal("0.134"),
        "2K": Decimal("0.134"),
        "4K": Decimal("0.24"),
    }
    dalle = _model(catalog, "dall-e-3").offering("openai")
    assert dalle is not None
    assert {(p.quality, p.size): p.usd for p in dalle.pricing.per_image}[("hd", "1792x1024")] == Decimal("0.12")
    gpt2 = _model(catalog, "gpt-image-2").offering("openai")
    assert gpt2 is not None and not gpt2.pricing.per_image  # token-priced only: no per-image estimate
    assert gpt2.pricing.tokens is not None and gpt2.pricing.tokens.image_output == Decimal("30.00")


def test_fal_gpt_image_1_offering(catalog: Catalog) -> None:
    fal = _model(catalog, "gpt-image-1").offering("fal")
    assert fal is not None
    assert fal.model_ids == {
        "text-to-image": "fal-ai/gpt-image-1/text-to-image",
        "image-edit": "fal-ai/gpt-image-1/edit-image",
    }
    assert fal.caps.mask is False
    assert fal.caps.n_wire == "num_images"
    assert fal.caps.params["size"].wire == "image_size"
    assert "high" in fal.caps.params["input_fidelity"].note


def test_every_size_system_kind_appears(catalog: Catalog) -> None:
    kinds = {off.caps.sizes.kind for m in catalog.models() for off in m.offerings}
    assert kinds == {"discrete", "free", "ratio_tiers"}
    fal_flux = _model(catalog, "flux-1-schnell").offering("fal")
    assert fal_flux is not None
    assert fal_flux.caps.sizes.free is not None
    assert {s.name: s.size for s in fal_flux.caps.sizes.sizes}["landscape_16_9"] == "1024x576"
    gpt2 = _model(catalog, "gpt-image-2").offering("openai")
    assert gpt2 is not None and gpt2.caps.sizes.free is not None
    assert gpt2.caps.sizes.free.max_pixels == 3840 * 2160


def test_gemini_tier_sizes(catalog: Catalog) -> None:
    pro = _model(catalog, "gemini-3-pro-image-preview").offering("google")
    assert pro is not None
    tiers = {tier.name: tier for tier in pro.caps.sizes.tiers}
    assert tiers["4K"].sizes["16:9"] == "5504x3072"
    for ratio, size in tiers["1K"].sizes.items():
        one = Dimensions.parse(size)
        assert Dimensions.parse(tiers["2K"].sizes[ratio]) == Dimensions(one.width * 2, one.height * 2)
        assert Dimensions.parse(tiers["4K"].sizes[ratio]) == Dimensions(one.width * 4, one.height * 4)
    flash = _model(catalog, "gemini-2.5-flash-image").offering("google")
    assert flash is not None
    assert flash.caps.sizes.tiers[0].sizes["21:9"] == "1536x672"


def test_lifecycle(catalog: Catalog) -> None:
    day = date(2026, 11, 25)
    gpt1 = _model(catalog, "gpt-image-1")
    openai, fal = gpt1.offering("openai"), gpt1.offering("fal")
    dalle = _model(catalog, "dall-e-3").offering("openai")
    assert openai is not None and fal is not None and dalle is not None
    assert openai.lifecycle.status_on(day) == "retired"
    assert openai.lifecycle.successor == "gpt-image-2.5-sunburst"
    assert openai.lifecycle.status_on(date(2026, 10, 22)) == "active"
    assert dalle.lifecycle.status_on(day) == "retired"
    assert dalle.lifecycle.successor == "gpt-image-1.5"
    assert fal.lifecycle.status_on(day) == "active"


def test_aliases_resolve(catalog: Catalog) -> None:
    assert _model(catalog, "nano-banana").id == "gemini-2.5-flash-image"
    assert "nano-banana" in catalog


# --- overrides and operator files -------------------------------------------------------------------


def test_status_override_forces_active() -> None:
    catalog = load_catalog(status_overrides={("gpt-image-1", "openai"): "active"})
    off = _model(catalog, "gpt-image-1").offering("openai")
    assert off is not None
    assert off.lifecycle.status_on(date.today()) == "active"
    assert off.lifecycle.status_on(date(2030, 1, 1)) == "active"
    # the packaged (cached) catalog is untouched
    plain = _model(load_catalog(), "gpt-image-1").offering("openai")
    assert plain is not None and plain.lifecycle.retired_on == date(2026, 10, 23)


def test_status_override_forces_retired() -> None:
    catalog = load_catalog(status_overrides={("gpt-image-1", "fal"): "retired"})
    off = _model(catalog, "gpt-image-1").offering("fal")
    assert off is not None and off.lifecycle.status_on(date(2000, 1, 1)) == "retired"


@pytest.mark.parametrize(
    ("key", "status"),
    [
        (("no-such-model", "openai"), "active"),
        (("gpt-image-1", "replicate"), "active"),
        (("gpt-image-1", "openai"), "sleeping"),
    ],
)
def test_bad_status_override(key: tuple[str, str], status: str) -> None:
    with pytest.raises(CatalogError):
        load_catalog(status_overrides={key: status})


def test_operator_file_replaces_a_model(tmp_path: Path) -> None:
    text = MINIMAL_MODEL.format(id="gpt-image-1", provider="openai").replace("Test model", "Replaced")
    path = _write(tmp_path, "mine.toml", text)
    catalog = load_catalog([path])
    model = _model(catalog, "gpt-image-1")
    assert model.display_name == "Replaced"
    assert [off.provider for off in model.offerings] == ["openai"]
    assert len(catalog) == len(EXPECTED_IDS)
    assert catalog.source("gpt-image-1") == str(path)


def test_operator_dir_adds_a_model_and_size_system(tmp_path: Path) -> None:
    _write(tmp_path, "size_systems.toml", '[tiny]\nkind = "discrete"\nsizes = ["64x64"]\ndefault = "64x64"\n')
    text = (
        MINIMAL_MODEL.format(id="my-model", provider="local")
        .replace("1024x1024", "64x64")
        .replace('"openai-gpt-image"', '"tiny"')
    )
    _write(tmp_path, "my-model.toml", text)
    catalog = load_catalog([tmp_path])
    model = _model(catalog, "my-model")
    assert model.offerings[0].caps.sizes.sizes[0].size == "64x64"
    assert "local" in catalog.providers()
    assert len(catalog) == len(EXPECTED_IDS) + 1


def test_missing_operator_path(tmp_path: Path) -> None:
    with pytest.raises(CatalogError):
        load_catalog([tmp_path / "absent.toml"])


# --- bad data ---------------------------------------------------------------------------------------


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


BASE = MINIMAL_MODEL.format(id="bad-model", provider="local")

BAD_FILES = {
    "typo": (_replace_once(BASE, "default_format", "default_fromat"), "default_fromat"),
    "typo_top": (_replace_once(BASE, "creator =", "creater ="), "creater"),
    "bad_size": (
        _replace_once(BASE, 'max_resolution = "1024x1024"', 'max_resolution = "1024*1024"'),
        "1024*1024",
    ),
    "bad_inline_size": (
        _replace_once(
            BASE,
            'sizes = "openai-gpt-image"',
            'sizes = { kind = "discrete", sizes = ["big"], default = "big" }',
        ),
        "big",
    ),
    "format": (_replace_once(BASE, 'default_format = "png"', 'default_format = "webp"'), "default_format"),
    "mode": (
        _replace_once(BASE, '{ "text-to-image" = "test/bad-model" }', '{ "text-to-image" = "a", "image-edit" = "b" }'),
        "image-edit",
    ),
    "unknown_mode": (
        _replace_once(BASE, 'modes = ["text-to-image"]', 'modes = ["text-to-image", "video"]'),
        "video",
    ),
    "price_size": (_replace_once(BASE, 'size = "1024x1024"', 'size = "512x512"'), "512x512"),
    "float_price": (_replace_once(BASE, 'usd = "0.01"', "usd = 0.01"), "usd"),
    "unknown_system": (_replace_once(BASE, '"openai-gpt-image"', '"no-such-system"'), "no-such-system"),
    "wrong_type": (
        _replace_once(BASE, "max_input_images = 0", 'max_input_images = "many"'),
        "max_input_images",
    ),
    "bad_toml": (BASE + "\n[[[\n", "TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_names_the_file(tmp_path: Path, case: str) -> None:
    text, needle = BAD_FILES[case]
    path = _write(tmp_path, f"{case}.toml", text)
    with pytest.raises(CatalogError) as info:
        load_catalog([path])
    assert info.value.file == str(path)
    assert str(path) in str(info.value)
    assert needle in info.value.message


def test_duplicate_id_across_operator_files(tmp_path: Path) -> None:
    _write(tmp_path, "a.toml", BASE)
    _write(tmp_path, "b.toml", BASE)
    with pytest.raises(CatalogError) as info:
        load_catalog([tmp_path])
    assert info.value.file == str(tmp_path / "b.toml")
    assert "bad-model" in info.value.message


def test_alias_colliding_with_an_id(tmp_path: Path) -> None:
    text = _replace_once(BASE, 'max_resolution = "1024x1024"', 'max_resolution = "1024x1024"\naliases = ["dall-e-3"]')
    path = _write(tmp_path, "alias.toml", text)
    with pytest.raises(CatalogError) as info:
        load_catalog([path])
    assert "dall-e-3" in info.value.message


def test_duplicate_provider(tmp_path: Path) -> None:
    offering = BASE[BASE.index("[[offerings]]") :]
    path = _write(tmp_path, "dup.toml", BASE + "\n" + offering)
    with pytest.raises(CatalogError, match="local"):
        load_catalog([path])


def test_bad_size_system_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "size_systems.toml",
        '[r]\nkind = "ratio_tiers"\nratios = ["1:1"]\n'
        'tiers = [{ name = "1", megapixels = 1, sizes = { "16:9" = "1344x768" } }]\n',
    )
    with pytest.raises(CatalogError) as info:
        load_catalog([path])
    assert info.value.file == str(path) and "16:9" in info.value.message
