"""Load the model catalog: TOML data files validated into the frozen types of ``core.types``.

Data layout (``imagegate/catalog/data/``):

- ``size_systems.toml``: named, reusable size systems. Each top-level table holds the fields of
  :class:`~imagegate.core.types.SizeSystem`. ``sizes`` entries are either ``"WxH"`` strings or
  ``{size = "WxH", name = "preset"}`` inline tables; ``free`` is a table; ``tiers`` a list of
  tables (:class:`~imagegate.core.types.Tier`).
- ``<model-id>.toml``: one model (:class:`~imagegate.core.types.ModelInfo` fields) with
  ``[[offerings]]``. ``[offerings.caps] sizes`` is either the name of a system in
  ``size_systems.toml`` or an inline table. Prices are written as strings (``usd = "0.011"``) so
  they load as exact Decimals; a float price is refused.

Prices per image (``[offerings.pricing] per_image = [{quality, size, usd}]``):

- ``size`` must be one of the listed sizes when the offering's size system is ``discrete``;
  for ``ratio_tiers`` systems it is ``"*"`` (any size) or a tier name (``"1K"``, ``"4K"``);
  for ``free`` systems it is ``"*"`` or a ``"WxH"``.
- ``quality`` must be one of the offering's ``qualities``; an offering without qualities uses
  ``"standard"``.

Operator files passed to :func:`load_catalog` follow the same layout: a model whose id already
exists replaces it, a new id adds a model, and a file named ``size_systems.toml`` adds or
replaces named size systems. Any unknown key, malformed size or inconsistent value fails the
whole load with a :class:`CatalogError` naming the file.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import pydantic

from imagegate.core.types import MODES, OUTPUT_FORMATS, Lifecycle, ModelInfo, Offering, SizeSystem

__all__ = ["SIZE_SYSTEMS_FILE", "STATUSES", "Catalog", "CatalogError", "load_catalog"]

SIZE_SYSTEMS_FILE = "size_systems.toml"
STATUSES: tuple[str, ...] = ("active", "deprecated", "retired")
ANY_SIZE = "*"
NO_QUALITY = "standard"

_WXH = re.compile(r"[1-9][0-9]*x[1-9][0-9]*")
_RATIO = re.compile(r"[1-9][0-9]*:[1-9][0-9]*")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")

_MODEL_ADAPTER = pydantic.TypeAdapter(ModelInfo)
_SYSTEM_ADAPTER = pydantic.TypeAdapter(SizeSystem)


class CatalogError(Exception):
    """A catalog file (or a status override) is invalid. `file` names where, `message` what."""

    def __init__(self, file: str | Path, message: str) -> None:
        super().__init__(f"{file}: {message}")
        self.file = str(file)
        self.message = message


class _Source(NamedTuple):
    name: str
    text: str


class _Entry(NamedTuple):
    model: ModelInfo
    file: str


# --- the catalog --------------------------------------------------------------------------------


class Catalog:
    """The loaded models, looked up by id or alias."""

    def __init__(self, entries: Iterable[_Entry]) -> None:
        self._models: dict[str, ModelInfo] = {}
        self._files: dict[str, str] = {}
        self._names: dict[str, str] = {}
        for entry in entries:
            self._models[entry.model.id] = entry.model
            self._files[entry.model.id] = entry.file
        for model in self._models.values():
            for name in (model.id, *model.aliases):
                other = self._names.get(name)
                if other is not None and other != model.id:
                    raise CatalogError(self._files[model.id], f"name {name!r} is already used by model {other!r}")
                self._names[name] = model.id

    def models(self) -> list[ModelInfo]:
        return [self._models[key] for key in sorted(self._models)]

    def get(self, model_id: str) -> ModelInfo | None:
        key = self._names.get(model_id)
        return None if key is None else self._models[key]

    def source(self, model_id: str) -> str | None:
        """The file a model (id or alias) was loaded from."""
        key = self._names.get(model_id)
        return None if key is None else self._files[key]

    def providers(self) -> set[str]:
        return {off.provider for model in self._models.values() for off in model.offerings}

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, str) and model_id in self._names

    def __len__(self) -> int:
        return len(self._models)

    def __iter__(self) -> typing.Iterator[ModelInfo]:
        return iter(self.models())

    def __repr__(self) -> str:
        return f"Catalog({len(self)} models)"


def load_catalog(
    extra_paths: Sequence[Path | str] = (),
    status_overrides: Mapping[tuple[str, str], str] | None = None,
) -> Catalog:
    """Load the packaged catalog, then operator files/directories, then status overrides.

    `status_overrides` maps ``(model_id, provider)`` to ``"active"``, ``"deprecated"`` or
    ``"retired"``. Forcing a status also clears the lifecycle dates that would contradict it, so
    ``lifecycle.status_on(any_day)`` returns the forced status.
    """
    systems_raw, packaged = _packaged()
    systems = dict(systems_raw)
    entries = {entry.model.id: entry for entry in packaged}
    sources = _expand_paths(extra_paths)
    for source in sources:
        if Path(source.name).name == SIZE_SYSTEMS_FILE:
            systems.update(_parse_systems(source))
    seen: dict[str, str] = {}
    for source in sources:
        if Path(source.name).name == SIZE_SYSTEMS_FILE:
            continue
        entry = _parse_model(source, systems)
        if entry.model.id in seen:
            raise CatalogError(source.name, f"model {entry.model.id!r} is also defined in {seen[entry.model.id]}")
        seen[entry.model.id] = source.name
        entries[entry.model.id] = entry
    catalog = Catalog(entries.values())
    if status_overrides:
        catalog = Catalog(_apply_overrides(catalog, status_overrides))
    return catalog


# --- reading files ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _packaged() -> tuple[tuple[tuple[str, dict[str, Any]], ...], tuple[_Entry, ...]]:
    """Parse and validate the packaged data once per process."""
    data = resources.files("imagegate.catalog") / "data"
    files = sorted((f for f in data.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    sources = [_Source(f"imagegate/catalog/data/{f.name}", f.read_text(encoding="utf-8")) for f in files]
    systems: dict[str, dict[str, Any]] = {}
    for source in sources:
        if source.name.endswith("/" + SIZE_SYSTEMS_FILE):
            systems.update(_parse_systems(source))
    entries: dict[str, _Entry] = {}
    for source in sources:
        if source.name.endswith("/" + SIZE_SYSTEMS_FILE):
            continue
        entry = _parse_model(source, systems)
        if entry.model.id in entries:
            raise CatalogError(
                source.name, f"model {entry.model.id!r} is also defined in {entries[entry.model.id].file}"
            )
        entries[entry.model.id] = entry
    return tuple(systems.items()), tuple(entries.values())


def _expand_paths(paths: Sequence[Path | str]) -> list[_Source]:
    sources: list[_Source] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix == ".toml" and p.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise CatalogError(path, "no such catalog file or directory")
        for file in files:
            try:
                sources.append(_Source(str(file), file.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise CatalogError(file, f"cannot read: {exc}") from exc
    return sources


def _read_toml(source: _Source) -> dict[str, Any]:
    try:
        return tomllib.loads(source.text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(source.name, f"invalid TOML: {exc}") from exc


def _parse_systems(source: _Source) -> dict[str, dict[str, Any]]:
    """Read a size_systems.toml: validate every system, return the raw (normalized) tables."""
    data = _read_toml(source)
    systems: dict[str, dict[str, Any]] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise CatalogError(source.name, f"{name}: a size system must be a table")
        raw = _normalize_system(table)
        _check_keys(raw, SizeSystem, name, source.name)
        system = _validate(_SYSTEM_ADAPTER, raw, source.name, prefix=name)
        _check_system(system, source.name, name)
        systems[name] = raw
    return systems


def _parse_model(source: _Source, systems: Mapping[str, dict[str, Any]]) -> _Entry:
    data = _read_toml(source)
    for index, offering in enumerate(_list(data.get("offerings"))):
        caps = offering.get("caps") if isinstance(offering, dict) else None
        if not isinstance(caps, dict):
            continue
        sizes = caps.get("sizes")
        if isinstance(sizes, str):
            if sizes not in systems:
                raise CatalogError(source.name, f"offerings[{index}].caps.sizes: unknown size system {sizes!r}")
            caps["sizes"] = copy.deepcopy(systems[sizes])
        elif isinstance(sizes, dict):
            caps["sizes"] = _normalize_system(sizes)
        _check_prices_are_text(offering.get("pricing"), source.name, f"offerings[{index}].pricing")
    _check_keys(data, ModelInfo, "", source.name)
    model = _validate(_MODEL_ADAPTER, data, source.name)
    _check_model(model, source.name)
    return _Entry(model, source.name)


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _normalize_system(table: dict[str, Any]) -> dict[str, Any]:
    raw = dict(table)
    if isinstance(raw.get("sizes"), list):
        raw["sizes"] = [{"size": s} if isinstance(s, str) else s for s in raw["sizes"]]
    return raw


def _validate(adapter: pydantic.TypeAdapter[Any], data: Any, file: str, prefix: str = "") -> Any:
    try:
        return adapter.validate_python(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = _join(prefix, ".".join(_loc(part) for part in first["loc"]))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CatalogError(file, f"{where or 'top level'}: {first['msg']}{more}") from exc


def _loc(part: object) -> str:
    return f"[{part}]" if isinstance(part, int) else str(part)


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if not key or key.startswith("["):
        return prefix + key
    return f"{prefix}.{key}"


# --- unknown keys -------------------------------------------------------------------------------


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _check_keys(value: Any, tp: Any, path: str, file: str) -> None:
    """Refuse keys that are not fields of the dataclass `tp`, recursively, naming the key."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            return
        hints = _field_types(tp)
        for key, item in value.items():
            if key not in hints:
                close = difflib.get_close_matches(str(key), list(hints), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise CatalogError(file, f"unknown key {_join(path, str(key))!r}{hint}")
            _check_keys(item, hints[key], _join(path, str(key)), file)
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                _check_keys(value, arg, path, file)
    elif origin is tuple and isinstance(value, list):
        (item_type, *_rest) = typing.get_args(tp)
        for index, item in enumerate(value):
            _check_keys(item, item_type, f"{path}[{index}]", file)
    elif origin is dict and isinstance(value, dict):
        item_type = typing.get_args(tp)[1]
        for key, item in value.items():
            _check_keys(item, item_type, _join(path, str(key)), file)


def _check_prices_are_text(pricing: object, file: str, path: str) -> None:
    if not isinstance(pricing, dict):
        return
    places: list[tuple[str, object]] = [(f"{path}.per_megapixel", pricing.get("per_megapixel"))]
    for index, price in enumerate(_list(pricing.get("per_image"))):
        if isinstance(price, dict):
            places.append((f"{path}.per_image[{index}].usd", price.get("usd")))
    tokens = pricing.get("tokens")
    if isinstance(tokens, dict):
        places.extend((f"{path}.tokens.{key}", value) for key, value in tokens.items())
    for where, value in places:
        if isinstance(value, float):
            raise CatalogError(file, f'{where}: write prices as strings ("{value}") to keep them exact')


# --- semantic checks ----------------------------------------------------------------------------


def _fail(file: str, where: str, message: str) -> typing.NoReturn:
    raise CatalogError(file, f"{where}: {message}" if where else message)


def _check_wxh(text: str, file: str, where: str) -> None:
    if not _WXH.fullmatch(text):
        _fail(file, where, f"{text!r} is not a size of the form 'WxH' (e.g. '1024x1024')")


def _check_system(system: SizeSystem, file: str, where: str) -> None:
    """Sizes are WxH, ratios are W:H, tiers name known ratios, defaults exist."""
    _check_wxh(system.default, file, f"{where}.default")
    sizes = [entry.size for entry in system.sizes]
    for index, size in enumerate(sizes):
        _check_wxh(size, file, f"{where}.sizes[{index}]")
    if len(set(sizes)) != len(sizes):
        _fail(file, f"{where}.sizes", "a size is listed twice")
    for index, ratio in enumerate(system.ratios):
        if not _RATIO.fullmatch(ratio):
            _fail(file, f"{where}.ratios[{index}]", f"{ratio!r} is not a ratio of the form 'W:H'")
    tier_names = [tier.name for tier in system.tiers]
    if len(set(tier_names)) != len(tier_names):
        _fail(file, f"{where}.tiers", "a tier name is used twice")
    for index, tier in enumerate(system.tiers):
        if tier.megapixels <= 0 or tier.multiple < 1:
            _fail(file, f"{where}.tiers[{index}]", "megapixels must be > 0 and multiple >= 1")
        for ratio, size in tier.sizes.items():
            if ratio not in system.ratios:
                _fail(file, f"{where}.tiers[{index}].sizes", f"ratio {ratio!r} is not in ratios")
            _check_wxh(size, file, f"{where}.tiers[{index}].sizes.{ratio}")
    if system.free is not None:
        rule = system.free
        if rule.multiple < 1 or rule.min_edge > rule.max_edge or rule.min_ratio > rule.max_ratio:
            _fail(file, f"{where}.free", "inconsistent limits (multiple, min/max edge or ratio)")
    if system.kind == "discrete":
        if not sizes:
            _fail(file, f"{where}.sizes", "a discrete size system needs at least one size")
        if system.default not in sizes:
            _fail(file, f"{where}.default", f"{system.default!r} is not one of the listed sizes")
    elif system.kind == "free" and system.free is None:
        _fail(file, f"{where}.free", "a free size system needs its limits")
    elif system.kind == "ratio_tiers":
        if not system.ratios or not system.tiers:
            _fail(file, where, "a ratio_tiers size system needs ratios and tiers")
        if system.default_ratio not in system.ratios:
            _fail(file, f"{where}.default_ratio", f"{system.default_ratio!r} is not in ratios")
        if system.default_tier is not None and system.default_tier not in tier_names:
            _fail(file, f"{where}.default_tier", f"{system.default_tier!r} is not a tier name")


def _check_model(model: ModelInfo, file: str) -> None:
    if not _NAME.fullmatch(model.id):
        _fail(file, "id", f"{model.id!r} must be lowercase letters, digits, '.', '_' or '-'")
    for alias in model.aliases:
        if not alias or "/" in alias or alias == model.id:
            _fail(file, "aliases", f"{alias!r} is not a usable alias")
    if not model.modes or len(set(model.modes)) != len(model.modes):
        _fail(file, "modes", "list each mode once, at least one")
    for mode in model.modes:
        if mode not in MODES:
            _fail(file, "modes", f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    _check_wxh(model.max_resolution, file, "max_resolution")
    if not model.offerings:
        _fail(file, "offerings", "a model needs at least one offering")
    providers = [off.provider for off in model.offerings]
    for provider in providers:
        if providers.count(provider) > 1:
            _fail(file, "offerings", f"provider {provider!r} appears twice")
    for mode in model.modes:
        if not any(off.supports(mode) for off in model.offerings):
            _fail(file, "modes", f"no offering serves mode {mode!r}")
    for index, offering in enumerate(model.offerings):
        _check_offering(model, offering, file, f"offerings[{index}]")


def _check_offering(model: ModelInfo, off: Offering, file: str, where: str) -> None:
    caps = off.caps
    if not _NAME.fullmatch(off.provider):
        _fail(file, f"{where}.provider", f"{off.provider!r} must be lowercase letters, digits, '.', '_' or '-'")
    if not off.model_ids:
        _fail(file, f"{where}.model_ids", "name the provider's model id for at least one mode")
    for mode, wire_id in off.model_ids.items():
        if mode not in model.modes:
            _fail(file, f"{where}.model_ids", f"mode {mode!r} is not one of the model's modes")
        if not wire_id:
            _fail(file, f"{where}.model_ids.{mode}", "empty provider model id")
    _check_system(caps.sizes, file, f"{where}.caps.sizes")
    if caps.max_n < 1 or not caps.n_wire:
        _fail(file, f"{where}.caps", "max_n must be >= 1 and n_wire non-empty")
    for fmt in caps.formats:
        if fmt not in OUTPUT_FORMATS:
            _fail(file, f"{where}.caps.formats", f"unknown format {fmt!r}")
    if caps.default_format not in caps.formats:
        _fail(file, f"{where}.caps.default_format", f"{caps.default_format!r} is not in formats")
    if caps.default_quality is not None and caps.default_quality not in caps.qualities:
        _fail(file, f"{where}.caps.default_quality", f"{caps.default_quality!r} is not in qualities")
    if off.supports("image-edit") and caps.max_input_images < 1:
        _fail(file, f"{where}.caps.max_input_images", "an offering that edits must accept an image")
    if caps.max_prompt_chars < 1:
        _fail(file, f"{where}.caps.max_prompt_chars", "must be >= 1")
    for name, rule in caps.params.items():
        if rule.handling == "renamed" and not rule.wire:
            _fail(file, f"{where}.caps.params.{name}", "a renamed parameter needs its wire name")
    _check_pricing(off, file, f"{where}.pricing")


def _check_pricing(off: Offering, file: str, where: str) -> None:
    system = off.caps.sizes
    qualities = off.caps.qualities or (NO_QUALITY,)
    seen: set[tuple[str, str]] = set()
    for index, price in enumerate(off.pricing.per_image):
        here = f"{where}.per_image[{index}]"
        if price.quality not in qualities:
            _fail(file, f"{here}.quality", f"{price.quality!r} is not one of {', '.join(qualities)}")
        if system.kind == "discrete":
            listed = [entry.size for entry in system.sizes]
            if price.size not in listed:
                _fail(file, f"{here}.size", f"{price.size!r} is not one of the offering's sizes")
        elif system.kind == "ratio_tiers":
            if price.size != ANY_SIZE and price.size not in {tier.name for tier in system.tiers}:
                _fail(file, f"{here}.size", f"{price.size!r} is neither '*' nor a tier name")
        elif price.size != ANY_SIZE:
            _check_wxh(price.size, file, f"{here}.size")
        if (price.quality, price.size) in seen:
            _fail(file, here, f"a second price for {price.quality} {price.size}")
        seen.add((price.quality, price.size))
        if price.usd < 0:
            _fail(file, f"{here}.usd", "negative price")
    money = [off.pricing.per_megapixel]
    if off.pricing.tokens is not None:
        money.extend(dataclasses.astuple(off.pricing.tokens))
    if any(value is not None and value < 0 for value in money):
        _fail(file, where, "negative price")


# --- status overrides ---------------------------------------------------------------------------


def _apply_overrides(catalog: Catalog, overrides: Mapping[tuple[str, str], str]) -> list[_Entry]:
    where = "status_overrides"
    changed: dict[str, ModelInfo] = {model.id: model for model in catalog.models()}
    for key, status in overrides.items():
        model_id, provider = key
        model = catalog.get(model_id)
        if model is None:
            raise CatalogError(where, f"unknown model {model_id!r}")
        if status not in STATUSES:
            raise CatalogError(where, f"{model_id}/{provider}: unknown status {status!r}")
        current = changed[model.id]
        if current.offering(provider) is None:
            raise CatalogError(where, f"model {model.id!r} has no offering from provider {provider!r}")
        offerings = tuple(
            dataclasses.replace(off, lifecycle=_forced(off.lifecycle, status)) if off.provider == provider else off
            for off in current.offerings
        )
        changed[model.id] = dataclasses.replace(current, offerings=offerings)
    return [_Entry(model, catalog.source(model.id) or where) for model in changed.values()]


def _forced(lifecycle: Lifecycle, status: str) -> Lifecycle:
    """Force a status, dropping the dates that would move it elsewhere."""
    if status == "active":
        return dataclasses.replace(lifecycle, status="active", deprecated_on=None, retired_on=None)
    if status == "deprecated":
        return dataclasses.replace(lifecycle, status="deprecated", retired_on=None)
    return dataclasses.replace(lifecycle, status="retired")
