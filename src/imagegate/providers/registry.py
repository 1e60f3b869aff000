"""Provider discovery: built-ins and plugins register the same way.

A plugin package declares an entry point in group ``imagegate.providers`` whose value is a
`ProviderFactory`. Built-ins are listed in `BUILTIN_FACTORIES` in exactly that form.

Every provider that enters a registry is wrapped in a `GuardedProvider`: the one boundary where
what leaves a provider is made safe to relay. Each `ImagegateError` raised by `run`/`stream` has
its message, param, code and headers redacted (`imagegate.redaction`); any foreign exception
becomes an `UpstreamError` that names only its type (the original is logged, redacted); the text
fields of each result (revised prompts, usage, request ids) are redacted too. A provider's
module may declare `DEFAULT_KEY_ENV` (its key's default environment variable) so that the key is
masked even when it comes from the environment.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any

import aiohttp

from imagegate.config import Settings
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.errors import ImagegateError, UpstreamError, UpstreamTimeoutError
from imagegate.providers.base import (
    CallContext,
    EditInputs,
    ProducedImage,
    Provider,
    ProviderFactory,
    ProviderResult,
    StreamDone,
    StreamEvent,
)
from imagegate.providers.http import transport_error
from imagegate.providers.kinds import kind_of, kinds
from imagegate.redaction import Redactor, provider_secrets

log = logging.getLogger("imagegate.providers")
ENTRY_POINT_GROUP = "imagegate.providers"
_OFFERINGS_KEPT = 4096  # models whose offerings the registry remembers (the catalog has tens)


def _builtin_factories() -> dict[str, ProviderFactory]:
    from imagegate.providers import sandbox

    return {"sandbox": sandbox.create}


class GuardedProvider:
    """A provider behind the redaction boundary (see the module docstring)."""

    def __init__(self, inner: Provider, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor
        self.name = inner.name
        self.fallback_only = inner.fallback_only

    def available(self) -> bool:
        return self.inner.available()

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        return self.inner.extra_offering(model)

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        try:
            result = await self.inner.run(job, inputs, ctx)
        except ImagegateError as exc:
            self.redactor.error(exc)  # the same object and type: only its text changes
            raise
        except NotImplementedError:
            raise
        except Exception as exc:
            raise self._foreign(exc) from None
        return self._result(result)

    async def stream(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        try:
            events = self.inner.stream(job, inputs, ctx)
            async with _closing(events):
                async for event in events:
                    yield StreamDone(self._result(event.result)) if isinstance(event, StreamDone) else event
        except ImagegateError as exc:
            self.redactor.error(exc)
            raise
        except NotImplementedError:
            raise
        except Exception as exc:
            raise self._foreign(exc) from None

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _foreign(self, exc: Exception) -> UpstreamError:
        """Any other exception: a provider bug or an untranslated library error. Logged (the log
        filter redacts the traceback); the caller gets its type only, never its text."""
        if isinstance(exc, aiohttp.ClientError):
            error = transport_error(self.name, exc, True)
            self.redactor.error(error)
            return error
        if isinstance(exc, TimeoutError):
            return UpstreamTimeoutError(f"{self.name} timed out", provider=self.name, may_have_charged=True)
        log.error("provider %s raised %s", self.name, type(exc).__name__, exc_info=exc)
        return UpstreamError(
            f"{self.name} failed unexpectedly ({type(exc).__name__})", provider=self.name, may_have_charged=True
        )

    def _result(self, result: ProviderResult) -> ProviderResult:
        """The result with its upstream-supplied text fields redacted (a copy only when one changed)."""
        redact = self.redactor.redact
        images = [_with_prompt(image, self.redactor) for image in result.images]
        changed = any(new is not old for new, old in zip(images, result.images, strict=True))
        request_id = redact(result.upstream_request_id) if result.upstream_request_id else result.upstream_request_id
        usage = _redact_values(result.usage, self.redactor) if result.usage else result.usage
        metadata = _redact_values(result.metadata, self.redactor)
        same = request_id is result.upstream_request_id and usage is result.usage and metadata is result.metadata
        if same and not changed:
            return result
        return dataclasses.replace(
            result, images=images, upstream_request_id=request_id, usage=usage, metadata=metadata or {}
        )


def _with_prompt(image: ProducedImage, redactor: Redactor) -> ProducedImage:
    """`image` with its revised prompt redacted (a shallow copy, whatever ProducedImage's class shape)."""
    if not image.revised_prompt:
        return image
    prompt = redactor.redact(image.revised_prompt)
    if prompt == image.revised_prompt:
        return image
    clone = copy.copy(image)
    object.__setattr__(clone, "revised_prompt", prompt)
    return clone


def _redact_values(values: Mapping[str, object] | None, redactor: Redactor) -> Mapping[str, object] | None:
    """`values` with every string inside redacted; the same object when nothing changed."""
    if values is None:
        return None
    cleaned = {key: _redact_value(value, redactor) for key, value in values.items()}
    if all(cleaned[key] is values[key] for key in values):
        return values
    return cleaned


def _redact_value(value: object, redactor: Redactor) -> object:
    if isinstance(value, str):
        redacted = redactor.redact(value)
        return value if redacted == value else redacted
    if isinstance(value, Mapping):
        return _redact_values(value, redactor)
    if isinstance(value, list | tuple):
        items = [_redact_value(item, redactor) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


@contextlib.asynccontextmanager
async def _closing(events: AsyncIterator[Any]) -> AsyncGenerator[None, None]:
    """Close the inner event stream when the outer one is closed or fails."""
    try:
        yield
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


class ProviderRegistry:
    """The providers of one running gateway, by name, each behind the redaction boundary.

    `redactor` is the gateway's one `Redactor` (the web app adds its local secrets to it and uses
    it for logs and error bodies too); a registry built without one masks credential patterns only.
    """

    def __init__(self, providers: Mapping[str, Provider] | None = None, redactor: Redactor | None = None) -> None:
        self.redactor = redactor or Redactor()
        self._providers: dict[str, Provider] = {}
        self._kinds: dict[str, str] = {}
        self._offerings: dict[int, tuple[ModelInfo, tuple[Offering, ...]]] = {}
        for provider in (providers or {}).values():
            self.register(provider)

    def register(self, provider: Provider, kind: str | None = None) -> None:
        """Add `provider` (an instance of `kind`, when it came from a `[providers.NAME]` table)."""
        if not isinstance(provider, GuardedProvider):
            provider = GuardedProvider(provider, self.redactor)
        self._providers[provider.name] = provider
        if kind is not None:
            self._kinds[provider.name] = kind
        self._offerings.clear()

    def offerings_of(self, model: ModelInfo, compute: Callable[[], list[Offering]]) -> list[Offering]:
        """`compute()`'s offerings of `model`, kept until a provider is registered: they depend only on
        the model and on which instances exist (routing.candidates.all_offerings)."""
        entry = self._offerings.get(id(model))
        if entry is None or entry[0] is not model:
            if len(self._offerings) >= _OFFERINGS_KEPT:  # models made on the fly must not pile up
                self._offerings.clear()
            entry = (model, tuple(compute()))
            self._offerings[id(model)] = entry
        return list(entry[1])

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def of_kind(self, kind: str) -> list[str]:
        """The names of the instances of `kind`, in name order."""
        return sorted(name for name, of in self._kinds.items() if of == kind)

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


def default_key_envs(factories: Mapping[str, ProviderFactory]) -> dict[str, str | None]:
    """Each factory's `DEFAULT_KEY_ENV` (declared in its module), and each kind's default instance's,
    by provider name."""
    envs: dict[str, str | None] = {
        kind.name: kind.default_key_env for kind in kinds().values() if kind.default_instance
    }
    for name, factory in factories.items():
        module = sys.modules.get(getattr(factory, "__module__", "") or "")
        value = getattr(module, "DEFAULT_KEY_ENV", None)
        envs[name] = value if isinstance(value, str) else None
    return envs


def instances(settings: Settings) -> dict[str, tuple[str, Provider | None]]:
    """One provider per `[providers.NAME]` table (of the table's kind), plus the default instance of
    each kind that has one and no table (see imagegate.providers.kinds); by name, with its kind."""
    built: dict[str, tuple[str, Provider | None]] = {}
    for kind in kinds().values():
        if kind.default_instance and kind.name not in settings.providers:
            built[kind.name] = (kind.name, kind.create(kind.name, kind.settings_model(), settings))
    for name, table in settings.providers.items():
        kind = kind_of(name, table)
        if kind is not None:  # None: an older-style plugin's table, read by its own factory
            built[name] = (kind.name, kind.create(name, table, settings))
    return built


def build_registry(
    settings: Settings, factories: Mapping[str, ProviderFactory] | None = None, redactor: Redactor | None = None
) -> ProviderRegistry:
    """The providers `settings` configure; every provider key is added to `redactor` (a new one by default)."""
    factories = factories or load_factories()
    redactor = redactor or Redactor()
    redactor.add(*provider_secrets(settings, default_key_envs(factories)))
    registry = ProviderRegistry(redactor=redactor)
    for name, (kind, instance) in instances(settings).items():
        if instance is not None:
            if instance.name != name:
                log.warning("provider instance %s is named %s", name, instance.name)
            registry.register(instance, kind)
    for name, factory in factories.items():
        provider = factory(settings)
        if provider is not None:
            if provider.name != name:
                log.warning("provider factory %s built a provider named %s", name, provider.name)
            registry.register(provider)
    return registry
