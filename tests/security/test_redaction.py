"""The Redactor (table-driven), the provider boundary, the log filter and the last guard on error bodies."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
import pytest

from imagegate import redaction
from imagegate.config import AuthSettings, ProviderSettings, Settings
from imagegate.core.types import ModelInfo, Offering, ProviderJob
from imagegate.errors import ImagegateError, InvalidRequestError, UpstreamError, UpstreamTimeoutError
from imagegate.providers.base import (
    CallContext,
    EditInputs,
    PartialImage,
    ProducedImage,
    ProviderResult,
    StreamDone,
    StreamEvent,
)
from imagegate.providers.registry import GuardedProvider, ProviderRegistry, build_registry
from imagegate.redaction import MASK, Redactor, mask, relayable
from imagegate.web.responses import error_response

OPENAI = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
FAL = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0:9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
IGK = "igk_0123456789ABCDEFGHIJKLMNOPQRSTUVW_a1B2c3"
SHORT = "k3y"
REDACTOR = Redactor([OPENAI, FAL, b"signing-key-bytes-0001", "a-secret-of-10", SHORT, None])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # configured literals, wherever they stand
        (f"Incorrect API key provided: {OPENAI}.", "Incorrect API key provided: sk-...6789."),
        (f"x{OPENAI}x", "x" + mask(OPENAI) + "x"),
        (f"detail: {FAL}", "detail: ...5c4d"),
        (f"only the secret half {FAL.split(':')[1]} here", "only the secret half ...5c4d here"),
        (f"only the id half {FAL.split(':')[0]}", "only the id half ...e1f0"),
        ("url-encoded " + FAL.replace(":", "%3A"), "url-encoded ...5c4d"),
        ("signing-key-bytes-0001 in a log", "...0001 in a log"),
        ("a-secret-of-10 in a log", f"{MASK} in a log"),
        # credential patterns, configured or not
        ("Authorization: Bearer abcdefghijklmnop1234567890", "Authorization: Bearer ...7890"),
        ("authorization: bearer Zm9vYmFyYmF6cXV4MTIzNA==", "authorization: bearer ...NA=="),
        ("Authorization: Key someid:somesecret12", f"Authorization: Key {MASK}"),
        ("leaked sk-ABCDEFGHIJKLMNOPQRSTUVWXYZ", "leaked sk-...WXYZ"),
        ("leaked sk-abcdefghijklmnop", f"leaked sk-{MASK}"),
        (f"key {IGK} used", "key igk_...B2c3 used"),
        ("postgresql://app:s3cretpass@db:5432/x", f"postgresql://app:{MASK}@db:5432/x"),
        ("GET https://h.test/v1/x?key=AIzaSyA-0123456789&alt=json", f"GET https://h.test/v1/x?key={MASK}&alt=json"),
        ("POST /x?api_key=abcdef0123456789", f"POST /x?api_key={MASK}"),
        # what must stay as it is
        ("short", "short"),
        ("k3y and k3y again: short secrets are not literals", "k3y and k3y again: short secrets are not literals"),
        ("Idempotency-Key must be 1-255 characters", "Idempotency-Key must be 1-255 characters"),
        ("Key must be given; Bearer authentication failed", "Key must be given; Bearer authentication failed"),
        ("task-management-system-of-things", "task-management-system-of-things"),
        ("a fox at dawn, 1536x1024, quality high", "a fox at dawn, 1536x1024, quality high"),
        ("https://example.test/path?size=1024x1024", "https://example.test/path?size=1024x1024"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert REDACTOR.redact(text) == expected


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("sk-0123456789abcdefghijKLMN", "sk-...KLMN"),
        ("sk-0123456789", f"sk-{MASK}"),
        ("igk_0123456789abcdefghijklmnop", "igk_...mnop"),
        ("plain-secret-value-0123456789", "...6789"),
        ("plain-short-123", MASK),
    ],
)
def test_mask_shows_at_most_the_last_four(secret: str, expected: str) -> None:
    assert mask(secret) == expected
    assert secret not in mask(secret)


def test_relayable_redacts_before_it_cuts_and_folds_whitespace() -> None:
    text = "x" * 290 + " Bearer abcdefghijklmnop1234567890"
    relayed = relayable(text)
    assert len(relayed) == 300 and relayed.endswith("…")
    assert "abcdefghij" not in relayed  # cut after redaction, so no readable prefix of the token survives
    assert relayable("a\n  b\tc") == "a b c"


def test_add_extends_and_ignores_short_values() -> None:
    redactor = Redactor()
    assert redactor.literal_count == 0
    redactor.add("seven77", "", None, "eight888")
    assert redactor.literal_count == 1
    assert redactor.redact("seven77 eight888") == f"seven77 {MASK}"


def test_error_is_redacted_in_place() -> None:
    exc = InvalidRequestError(f"bad: {OPENAI}", param=f"p{OPENAI}", code="invalid_value")
    exc.headers["x-debug"] = f"Bearer {OPENAI}"
    assert REDACTOR.error(exc) is exc
    assert OPENAI not in exc.message and OPENAI not in str(exc) and OPENAI not in (exc.param or "")
    assert OPENAI not in exc.headers["x-debug"] and exc.code == "invalid_value"


def test_provider_secrets_come_from_config_and_default_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_DEFAULT_ENV", "from-the-default-env-0001")
    monkeypatch.setenv("CANARY_OTHER_ENV", "from-a-configured-env-0002")
    settings = Settings(
        providers={
            "configured": ProviderSettings(kind="openai-compatible", api_key="from-config-0003"),
            "other": ProviderSettings(kind="openai-compatible", api_key_env="CANARY_OTHER_ENV"),
        }
    )
    keys = redaction.provider_secrets(settings, {"plugin": "CANARY_DEFAULT_ENV", "configured": None})
    assert sorted(keys) == ["from-a-configured-env-0002", "from-config-0003", "from-the-default-env-0001"]


def test_local_secrets(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_PEPPER", "pepper-from-env-0004")
    settings = Settings(
        data_dir=tmp_path,
        signing_key="signing-from-config-0005",
        auth=AuthSettings(pepper_env="CANARY_PEPPER"),
        database_url="postgresql://user:db-password-0006@localhost/test",
        redis_url="redis://:redis-password-0007@localhost:6379/0",
    )
    found = redaction.local_secrets(settings)
    assert found == [b"signing-from-config-0005", b"pepper-from-env-0004", "db-password-0006", "redis-password-0007"]


# --- the provider boundary -----------------------------------------------------------------------


class Scripted:
    """A provider that raises or returns what it is told (a stand-in for any plugin)."""

    name = "scripted"
    fallback_only = False

    def __init__(self, outcome: BaseException | ProviderResult, events: list[StreamEvent] | None = None) -> None:
        self.outcome = outcome
        self.events = events or []
        self.closed = False

    def available(self) -> bool:
        return True

    def extra_offering(self, model: ModelInfo) -> Offering | None:
        return None

    async def run(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> ProviderResult:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    async def stream(self, job: ProviderJob, inputs: EditInputs | None, ctx: CallContext) -> AsyncIterator[StreamEvent]:
        try:
            for event in self.events:
                yield event
            if isinstance(self.outcome, BaseException):
                raise self.outcome
        finally:
            self.closed = True

    async def aclose(self) -> None:
        return None


def _guarded(provider: Scripted) -> GuardedProvider:
    registry = ProviderRegistry({provider.name: provider}, Redactor([OPENAI]))
    guarded = registry.get(provider.name)
    assert isinstance(guarded, GuardedProvider) and guarded.inner is provider
    return guarded


CTX = CallContext("req_test", deadline=float("inf"))
JOB = ProviderJob.__new__(ProviderJob)  # never read by the scripted provider


async def test_boundary_redacts_our_errors_and_keeps_their_type() -> None:
    error = UpstreamTimeoutError(f"timed out; sent Bearer {OPENAI}", provider="scripted")
    with pytest.raises(UpstreamTimeoutError) as raised:
        await _guarded(Scripted(error)).run(JOB, None, CTX)
    assert raised.value is error and OPENAI not in raised.value.message


@pytest.mark.parametrize(
    ("foreign", "kind", "code"),
    [
        (RuntimeError(f"GET https://x.test/?key={OPENAI} failed"), UpstreamError, "upstream_error"),
        (KeyError(OPENAI), UpstreamError, "upstream_error"),
        (TimeoutError(), UpstreamTimeoutError, "upstream_timeout"),
    ],
)
async def test_boundary_translates_foreign_exceptions_without_their_text(
    foreign: Exception, kind: type[ImagegateError], code: str, caplog: pytest.LogCaptureFixture
) -> None:
    redaction.install(Redactor([OPENAI]))
    with pytest.raises(kind) as raised:
        await _guarded(Scripted(foreign)).run(JOB, None, CTX)
    assert type(raised.value) is kind and raised.value.code == code
    assert OPENAI not in raised.value.message and raised.value.__cause__ is None
    assert raised.value.__suppress_context__
    assert OPENAI not in caplog.text


async def test_boundary_redacts_result_text_fields() -> None:
    image = ProducedImage(b"\x89PNG", "png", revised_prompt=f"a fox, said {OPENAI}")
    plain = ProducedImage(b"\x89PNG", "png")
    result = ProviderResult(images=[image, plain], usage={"note": OPENAI, "tokens": 3}, upstream_request_id=OPENAI)
    cleaned = await _guarded(Scripted(result)).run(JOB, None, CTX)
    assert OPENAI not in (cleaned.images[0].revised_prompt or "") and cleaned.images[1] is plain
    assert cleaned.usage == {"note": mask(OPENAI), "tokens": 3}
    assert OPENAI not in (cleaned.upstream_request_id or "")
    untouched = ProviderResult(images=[plain], usage={"tokens": 3})
    assert await _guarded(Scripted(untouched)).run(JOB, None, CTX) is untouched


async def test_boundary_covers_stream_events_and_errors() -> None:
    partial = PartialImage(b"\x89PNG", "png", 0)
    done = StreamDone(ProviderResult(images=[ProducedImage(b"\x89PNG", "png", revised_prompt=OPENAI)]))
    events = [
        event async for event in _guarded(Scripted(ProviderResult(images=[]), [partial, done])).stream(JOB, None, CTX)
    ]
    assert events[0] is partial and isinstance(events[1], StreamDone)
    assert OPENAI not in (events[1].result.images[0].revised_prompt or "")
    failing = Scripted(UpstreamError(f"stream failed: {OPENAI}"), [partial])
    stream = _guarded(failing).stream(JOB, None, CTX)
    assert await stream.__anext__() is partial
    with pytest.raises(UpstreamError) as raised:
        await stream.__anext__()
    assert OPENAI not in raised.value.message and failing.closed


def test_build_registry_wraps_every_provider_and_knows_their_keys(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, providers={"openai": ProviderSettings(api_key=OPENAI)})
    registry = build_registry(settings)
    assert {p.name for p in registry} >= {"sandbox", "openai", "fal"}
    assert all(isinstance(p, GuardedProvider) for p in registry)
    assert OPENAI not in registry.redactor.redact(f"echo {OPENAI}")


# --- the log filter and the last guard -----------------------------------------------------------


def test_log_records_of_any_logger_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    redaction.install(Redactor([OPENAI]))
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("imagegate.some.child")
    logger.debug("sent %s", {"Authorization": f"Bearer {OPENAI}"})
    try:
        raise ValueError(f"upstream said {OPENAI}")
    except ValueError:
        logger.exception("failed")
    logging.getLogger().warning("root logger: %s", OPENAI)
    assert OPENAI not in caplog.text
    assert all(OPENAI not in record.getMessage() for record in caplog.records)
    failed = next(r for r in caplog.records if r.getMessage() == "failed")
    assert failed.exc_info is None and "ValueError" in (failed.exc_text or "")
    assert redaction.FILTER in logging.getLogger().filters


def test_log_filter_leaves_clean_records_alone(caplog: pytest.LogCaptureFixture) -> None:
    redaction.install(Redactor([OPENAI]))
    caplog.set_level(logging.INFO)
    logging.getLogger("imagegate.test").info("served %d images", 3)
    record = caplog.records[-1]
    assert record.msg == "served %d images" and record.args == (3,)


def test_error_response_is_the_last_guard() -> None:
    redaction.install(Redactor([OPENAI]))
    error = UpstreamError(f"relayed {OPENAI}", param=OPENAI)
    error.headers["x-debug"] = OPENAI
    response = error_response(error)
    assert OPENAI.encode() not in response.body
    assert OPENAI not in response.headers["x-debug"]
    assert orjson.loads(response.body)["error"]["code"] == "upstream_error"
