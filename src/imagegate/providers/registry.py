"""Provider discovery: built-ins and plugins register the same way.

A plugin package declares an entry point in group ``imagegate.providers`` whose value is a
`ProviderFactory`. Built-ins are listed in `BUILTIN_FACTORIES` in exactly that form.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points

from imagegate.config import Settings
from imagegate.providers.base import Provider, ProviderFactory

log = logging.getLogger("imagegate.providers")
ENTRY_POINT_GROUP = "imagegate.providers"


def _builtin_factories() -> dict[str, ProviderFactory]:
    from imagegate.providers import fal, openai, sandbox

    return {"sandbox": sandbox.create, "openai": openai.create, "fal": fal.create}


class ProviderRegistry:
    """The providers of one running gateway, by name."""

    def __init__(self, providers: Mapping[str, Provider] | None = None) -> None:
        self._providers: dict[str, Provider] = dict(providers or {})

    def register(self, provider: Provider) -> None:
        self._providers[provider.name] = provider

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def names(self) -> list[str]:
        return sorted(self._providers)

    def __iter__(self) -> Iterator[Provider]:
        return iter(list(self._providers.values()))

    def any_primary_available(self) -> bool:
        """Whether a provider that is not fallback-only can be called."""
        return any(p.available() and not p.fallback_only for p in self._providers.values())

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


def load_factories() -> dict[str, ProviderFactory]:
    factories = _builtin_factories()
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            factories[point.name] = point.load()
        except Exception:  # a broken plugin must not stop the gateway
            log.exception("provider plugin %s failed to load", point.name)
    return factories


def build_registry(settings: Settings, factories: Mapping[str, ProviderFactory] | None = None) -> ProviderRegistry:
    registry = ProviderRegistry()
    for name, factory in (factories or load_factories()).items():
        provider = factory(settings)
        if provider is not None:
            if provider.name != name:
                log.warning("provider factory %s built a provider named %s", name, provider.name)
            registry.register(provider)
    return registry
