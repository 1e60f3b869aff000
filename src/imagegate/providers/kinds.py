"""Provider kinds: how to speak to a wire API, and the settings each `[providers.NAME]` table may hold.

A kind is one adapter module's answer to three questions: its name (``"openai"``, ``"fal"``,
``"openai-compatible"``, a plugin's own), the pydantic model that validates a table of that kind
(`ProviderSettings` or a subclass that adds the kind's own fields, so a plugin declares its settings
without touching the core's), and a factory that builds one provider *instance* from a table.

Instances: each ``[providers.NAME]`` table is one instance, of the kind named by its ``kind`` key,
which defaults to the table name when that names a kind (``[providers.openai]`` is the ``openai``
kind, ``[providers.vertex]`` the ``vertex`` kind). Several instances of one kind live side by side
(``[providers.xai]`` and ``[providers.together]``, both ``kind = "openai-compatible"``), each with its
own key, base URL and model map; catalog offerings name the instance. A kind with ``default_instance`` is also built
when no table names it (OpenAI and fal: they become available once their key is in the environment).

Plugins declare an entry point in group ``imagegate.provider_kinds`` whose value is a `ProviderKind`.
The older group ``imagegate.providers`` (a factory of `Settings`) keeps working, see the registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from imagegate.config import ConfigError, ProviderSettings

if TYPE_CHECKING:
    from imagegate.config import Settings
    from imagegate.providers.base import Provider

log = logging.getLogger("imagegate.providers")
KIND_ENTRY_POINT_GROUP = "imagegate.provider_kinds"


@dataclass(frozen=True)
class ProviderKind:
    """One wire API: its settings model and how to build an instance (`create(name, table, settings)`,
    None when the table disables it)."""

    name: str
    settings_model: type[ProviderSettings]
    create: Callable[[str, Any, Settings], Provider | None]
    default_instance: bool = False
    default_key_env: str | None = None


@cache
def kinds() -> dict[str, ProviderKind]:
    """Built-in kinds, then plugins' (a plugin may not replace a built-in)."""
    from imagegate.providers import azure, bfl, compatible, fal, google, openai, openrouter, replicate, vertex

    builtins = (
        openai.KIND,
        fal.KIND,
        google.KIND,
        vertex.KIND,
        replicate.KIND,
        bfl.KIND,
        openrouter.KIND,
        compatible.KIND,
        azure.KIND,
    )
    found = {kind.name: kind for kind in builtins}
    for point in entry_points(group=KIND_ENTRY_POINT_GROUP):
        try:
            kind = point.load()
        except Exception:  # a broken plugin must not stop the gateway
            log.exception("provider kind plugin %s failed to load", point.name)
            continue
        if not isinstance(kind, ProviderKind) or kind.name in found:
            log.error("provider kind plugin %s is not a new ProviderKind; ignored", point.name)
            continue
        found[kind.name] = kind
    return found


@cache
def legacy_plugin_names() -> frozenset[str]:
    """Providers of the older plugin group (a factory of `Settings`): their tables have no kind."""
    from imagegate.providers.registry import ENTRY_POINT_GROUP

    return frozenset(point.name for point in entry_points(group=ENTRY_POINT_GROUP))


def kind_of(name: str, table: ProviderSettings | dict[str, Any]) -> ProviderKind | None:
    """The kind of the `[providers.NAME]` table: its `kind` key, else the kind named like the table;
    None for the table of an older-style plugin provider (it reads its own table)."""
    declared = table.get("kind") if isinstance(table, dict) else table.kind
    kind_name = declared or name
    found = kinds().get(kind_name)
    if found is None and declared is None and name in legacy_plugin_names():
        return None
    if found is None:
        known = ", ".join(sorted(kinds()))
        where = f"kind {kind_name!r}" if declared else "no kind"
        raise ConfigError(f"[providers.{name}]: {where}; set kind to one of {known}")
    return found


def validate_table(name: str, table: ProviderSettings | dict[str, Any]) -> ProviderSettings:
    """A `[providers.NAME]` table as its kind's settings model (ConfigError naming the table)."""
    kind = kind_of(name, table)
    model = kind.settings_model if kind is not None else ProviderSettings
    if type(table) is model:
        return table
    raw = table.model_dump(exclude_unset=True) if isinstance(table, ProviderSettings) else dict(table)
    try:
        return model.model_validate(raw)
    except Exception as exc:  # pydantic's ValidationError, said with the table's name
        raise ConfigError(f"[providers.{name}] ({kind.name if kind else 'plugin'}): {exc}") from None
