"""One adapter contract, run against every provider kind and its fake upstream (tests/fakes/).

Each case builds the instance through its kind as the gateway does (`kinds()[kind].create` with the
kind's settings model), wraps it in the registry's `GuardedProvider` (a `Redactor` holding the key),
and plans the job with the real planner from the catalog offering the gateway would pick. The test
ids read as the matrix: ``test_<case>[<provider>]``.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import pytest
from PIL import Image

from imagegate.catalog.loader import load_catalog
from imagegate.config import Settings
from imagegate.core.normalize import plan_request
from imagegate.core.pricing import token_cost
from imagegate.core.types import Offering, Plan
from imagegate.errors import (
    ImagegateError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from imagegate.imaging.probe import ImageLimits, decode_image
from imagegate.providers.base import CallContext, EditInputs, Provider, ProviderResult
from imagegate.providers.kinds import kinds
from imagegate.providers.registry import ProviderRegistry
from imagegate.redaction import Redactor
from imagegate.results import FinalImage, result_cost
from imagegate.schemas import EditParams, GenerateParams, parse_params, to_public
from tests.fakes.azure import FakeAzure
from tests.fakes.bfl import FakeBFL
from tests.fakes.fal import FakeFal
from tests.fakes.faults import Fault, RecordedRequest
from tests.fakes.google import FakeGoogle
from tests.fakes.images import make_image
from tests.fakes.openai import FakeOpenAI
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.replicate import FakeReplicate
from tests.fakes.server import FakeServer
from tests.fakes.xai import FakeXAI

Mode = Literal["text-to-image", "image-edit"]
PROMPT = "a lighthouse at dusk"
SIZE = "1536x1024"  # not every provider has it: the plan picks each one's nearest, and the reply must match it
DEADLINE = 30.0
SHORT_DEADLINE = 0.4
SLOW = 5.0  # a latency fault well past SHORT_DEADLINE
NO_KEY_ENV = "IMAGEGATE_TEST_CONTRACT_NO_KEY"


@dataclass(frozen=True)
class Upstream:
    """One provider under contract: its kind, instance name, catalog model and fake.

    `table` is the instance's `[providers.NAME]` table for a started fake (without the key);
    `auth_body` an upstream-shaped 401 body that quotes a key back; `edit_sent` whether a recorded
    request carried the edit's input image; `image_tokens` the image output tokens the fake reports
    for the generation (None: the upstream reports no usage)."""

    id: str
    kind: str
    name: str
    model: str
    key: str
    fake: Callable[[str], FakeServer[Any]]
    table: Callable[[Any], dict[str, Any]]
    auth_body: Callable[[str], Any]
    edit_sent: Callable[[RecordedRequest], bool]
    rate_limit_headers: dict[str, str] = field(default_factory=lambda: {"retry-after": "3"})
    retry_after: float = 3.0
    image_tokens: int | None = None


def _openai_auth_body(key: str) -> Any:
    return {
        "error": {"message": f"Incorrect API key: {key}", "type": "invalid_request_error", "param": key, "code": key}
    }


def _multipart_image(sent: RecordedRequest) -> bool:
    return sent.path.split("?")[0].endswith("/images/edits") and any(
        name.startswith("image") for name, _, _ in sent.files
    )


UPSTREAMS = (
    Upstream(
        id="openai",
        kind="openai",
        name="openai",
        model="gpt-image-1",
        key="sk-contract-openai-key-0123456789abcdef",
        fake=lambda key: FakeOpenAI(key=key),
        table=lambda fake: {"base_url": fake.base_url},
        auth_body=_openai_auth_body,
        edit_sent=_multipart_image,
        image_tokens=1584,  # gpt-image-1, quality medium, a 1536-class size
    ),
    Upstream(
        id="fal",
        kind="fal",
        name="fal",
        model="gpt-image-1",
        key="fal-contract-id:fal-contract-secret-0123456789",
        fake=lambda key: FakeFal(key=key, job_seconds=0.02),
        table=lambda fake: {
            "base_url": fake.run_url,
            "queue_url": fake.queue_url,
            "poll_interval_seconds": 0.01,
            "poll_max_interval_seconds": 0.05,
        },
        auth_body=lambda key: {"detail": f"Invalid key: {key}"},
        edit_sent=lambda sent: bool(sent.json and sent.json.get("image_urls")),
    ),
    Upstream(
        id="google",
        kind="google",
        name="google",
        model="gemini-2.5-flash-image",
        key="AIzaContractGoogleKey0123456789abcdefXYZ",
        fake=lambda key: FakeGoogle(key=key),
        table=lambda fake: {"base_url": fake.base_url},
        auth_body=lambda key: {
            "error": {"code": 401, "message": f"API key {key} not valid", "status": "UNAUTHENTICATED"}
        },
        edit_sent=lambda sent: "inlineData" in str(sent.json),
        image_tokens=1290,  # Gemini 2.5 Flash Image, any ratio at 1K
    ),
    Upstream(
        id="openai-compatible-xai",
        kind="openai-compatible",
        name="xai",  # the instance the catalog's grok-imagine-image offering names
        model="grok-imagine-image",
        key="xai-contract-key-0123456789abcdefghij",
        fake=lambda key: FakeXAI(key=key),
        table=lambda fake: {
            "base_url": fake.base_url,
            "response_format": "b64_json",
            "size_field": "aspect_ratio",
            "output_fields": False,
            "json_edits": True,
        },
        auth_body=lambda key: {"code": key, "error": f"Incorrect API key provided: {key}"},
        edit_sent=lambda sent: bool(sent.json and (sent.json.get("image") or sent.json.get("images"))),
    ),
    Upstream(
        id="replicate",
        kind="replicate",
        name="replicate",
        model="flux-1-schnell",  # generation only: the contract's edit case checks the offering says so
        key="r8_contractReplicateKey0123456789abcdef",
        fake=lambda key: FakeReplicate(key=key),
        table=lambda fake: {
            "base_url": fake.base_url,
            "poll_interval_seconds": 0.01,
            "poll_max_interval_seconds": 0.05,
        },
        auth_body=lambda key: {"title": "Unauthenticated", "detail": f"bad token {key}", "status": 401},
        edit_sent=lambda sent: False,
    ),
    Upstream(
        id="bfl",
        kind="bfl",
        name="bfl",
        model="flux-2-pro",
        key="bfl-contract-key-0123456789abcdef",
        fake=lambda key: FakeBFL(key=key),
        table=lambda fake: {
            "base_url": fake.base_url,
            "poll_interval_seconds": 0.01,
            "poll_max_interval_seconds": 0.02,
        },
        auth_body=lambda key: {"detail": f"Not authenticated: {key}"},
        edit_sent=lambda sent: bool(sent.json and sent.json.get("input_image")),
    ),
    Upstream(
        id="openrouter",
        kind="openrouter",
        name="openrouter",
        model="seedream-4.5",
        key="sk-or-v1-contract0123456789abcdef0123456789",
        fake=lambda key: FakeOpenRouter(key=key),
        table=lambda fake: {"base_url": fake.base_url},
        auth_body=lambda key: {"error": {"code": 401, "message": f"No auth credentials found for {key}"}},
        edit_sent=lambda sent: "image_url" in str(sent.json),
    ),
    Upstream(
        id="azure-openai",
        kind="azure-openai",
        name="azure",
        model="gpt-image-1.5",
        key="azure-contract-key-0123456789abcdefgh",
        fake=lambda key: FakeAzure(key, {"img-contract": "gpt-image-1.5"}),
        table=lambda fake: {"endpoint": fake.root_url, "deployments": {"gpt-image-1.5": "img-contract"}},
        auth_body=lambda key: {"error": {"code": "401", "message": f"Access denied for key {key}."}},
        edit_sent=_multipart_image,
        rate_limit_headers={"retry-after-ms": "1500"},
        retry_after=1.5,
        image_tokens=1584,
    ),
)


@dataclass
class Rig:
    """A started fake and the guarded instance that calls it."""

    upstream: Upstream
    fake: Any
    provider: Provider
    offering: Offering

    def plan(self, mode: Mode = "text-to-image", size: str = SIZE) -> Plan:
        """What the planner makes of a plain request for this offering."""
        cls = EditParams if mode == "image-edit" else GenerateParams
        parsed = parse_params(cls, {"prompt": PROMPT, "size": size})
        return plan_request(to_public(parsed, mode, 1 if mode == "image-edit" else 0, False), self.offering)

    async def run(self, plan: Plan, inputs: EditInputs | None = None, seconds: float = DEADLINE) -> ProviderResult:
        ctx = CallContext(request_id="contract", deadline=asyncio.get_running_loop().time() + seconds)
        return await self.provider.run(plan.jobs[0], inputs, ctx)

    async def fails(self, fault: Fault | None = None, seconds: float = DEADLINE) -> ImagegateError:
        """The error a generation raises after `fault` (pushed on the fake's script first)."""
        if fault is not None:
            self.fake.script.push(fault)
        with pytest.raises(ImagegateError) as caught:
            await self.run(self.plan(), seconds=seconds)
        return caught.value


async def _rig(upstream: Upstream, fake: Any, key: str, tmp_path: Path) -> tuple[Rig, ProviderRegistry]:
    """The instance the gateway would build from the fake's table with `key`, behind the redaction boundary."""
    kind = kinds()[upstream.kind]
    table = kind.settings_model.model_validate({**upstream.table(fake), "api_key": key, "api_key_env": NO_KEY_ENV})
    built = kind.create(upstream.name, table, Settings(data_dir=tmp_path))
    assert built is not None and built.available()
    registry = ProviderRegistry({upstream.name: built}, Redactor([key]))
    guarded = registry.get(upstream.name)
    assert guarded is not None
    model = load_catalog().get(upstream.model)
    assert model is not None
    offering = model.offering(upstream.name) or built.extra_offering(model)
    assert offering is not None and offering.provider == upstream.name
    return Rig(upstream, fake, guarded, offering), registry


@pytest.fixture(params=UPSTREAMS, ids=lambda upstream: upstream.id)
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Upstream, Any]]:
    spec: Upstream = request.param
    fake = spec.fake(spec.key)
    await fake.start()
    yield spec, fake
    await fake.stop()


@pytest.fixture
async def rig(upstream: tuple[Upstream, Any], tmp_path: Path) -> AsyncIterator[Rig]:
    spec, fake = upstream
    built, registry = await _rig(spec, fake, spec.key, tmp_path)
    yield built
    await registry.aclose()


def _size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def _finals(result: ProviderResult) -> list[FinalImage]:
    return [FinalImage(image.content, image.format, *_size(image.data)) for image in result.images]


def _planned(plan: Plan) -> tuple[int, int]:
    dims = plan.jobs[0].size.dims
    assert dims is not None
    return dims.width, dims.height


def _api_calls(fake: Any) -> list[RecordedRequest]:
    return [r for r in fake.requests if not r.path.startswith(("/_fake", "/files/"))]


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the fake never saw the call")


# --- the contract ---------------------------------------------------------------------------------


async def test_generate(rig: Rig) -> None:
    plan = rig.plan()
    result = await rig.run(plan)
    assert len(result.images) == 1 and result.billed
    assert _size(result.images[0].data) == _planned(plan)


async def test_edit(rig: Rig) -> None:
    if not rig.offering.supports("image-edit"):  # the catalog says so: the gateway never routes an edit here
        assert rig.upstream.edit_sent(RecordedRequest("POST", "/", {})) is False
        assert "image-edit" not in rig.offering.model_ids and rig.offering.caps.max_input_images == 0
        return
    plan = rig.plan("image-edit", "1024x1024")
    base = decode_image(make_image(512, 512, "png", seed=3), "image", ImageLimits())
    result = await rig.run(plan, EditInputs(images=[base]))
    assert len(result.images) == 1
    assert _size(result.images[0].data) == _planned(plan)
    assert any(rig.upstream.edit_sent(sent) for sent in _api_calls(rig.fake))


@pytest.mark.parametrize("reply", ["upstream", "echoed"])
async def test_auth_failure(upstream: tuple[Upstream, Any], tmp_path: Path, reply: str) -> None:
    """A wrong key disables the provider and never comes back: not as the upstream's own 401 (fal
    quotes the key), nor when the upstream echoes it in every field and a header (the canary)."""
    spec, fake = upstream
    wrong = f"{spec.key[:4]}-wrong-canary-{spec.name}-9f8e7d6c5b4a"
    built, registry = await _rig(spec, fake, wrong, tmp_path)
    if reply == "echoed":
        echo_headers = {"www-authenticate": f'Bearer error="{wrong}"', "x-echo": wrong}
        fake.script.push(Fault("status", status=401, body=spec.auth_body(wrong), headers=echo_headers))
    try:
        error = await built.fails()
    finally:
        await registry.aclose()
    assert isinstance(error, UpstreamAuthError) and error.disable_provider
    exposed = [error.message, str(error), error.param, error.code, *error.headers, *error.headers.values()]
    assert not [text for text in exposed if text and wrong in str(text)]
    assert wrong not in str(error.body())
    assert any(wrong in str(sent.headers) for sent in _api_calls(fake))  # it was sent, so the check is real


async def test_rate_limit_with_retry_after(rig: Rig) -> None:
    fault = Fault("status", status=429, headers=rig.upstream.rate_limit_headers)
    error = await rig.fails(fault)
    assert isinstance(error, UpstreamRateLimitError) and error.retryable
    assert error.retry_after == rig.upstream.retry_after


async def test_server_error_is_retryable(rig: Rig) -> None:
    error = await rig.fails(Fault("status", status=500))
    assert isinstance(error, UpstreamError) and error.retryable
    assert not isinstance(error, UpstreamRateLimitError | UpstreamAuthError | UpstreamMalformedError)
    assert error.upstream_status == 500


async def test_non_json_200_is_malformed(rig: Rig) -> None:
    error = await rig.fails(Fault("malformed"))
    assert isinstance(error, UpstreamMalformedError)


async def test_timeout(rig: Rig) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    error = await rig.fails(Fault("latency", delay=SLOW), seconds=SHORT_DEADLINE)
    assert isinstance(error, UpstreamTimeoutError)
    assert loop.time() - started < SHORT_DEADLINE + 2.0


async def test_cancellation(rig: Rig) -> None:
    """Cancelling the call mid-flight raises CancelledError only; fal cancels its queued job upstream
    (Replicate's and BFL's polling is covered by their own tests)."""
    queued = isinstance(rig.fake, FakeFal)
    rig.fake.script.push(Fault("stall") if queued else Fault("latency", delay=SLOW))
    task = asyncio.create_task(rig.run(rig.plan()))
    if queued:  # the job is submitted and being polled
        await _until(lambda: any(r.path.endswith("/status") for r in rig.fake.requests))
    else:
        await _until(lambda: bool(_api_calls(rig.fake)))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    if queued:
        (job_id,) = rig.fake.jobs
        await _until(lambda: job_id in rig.fake.cancelled)


async def test_cost(rig: Rig) -> None:
    """Where the upstream reports usage, the cost is its tokens at the catalog's token prices; else
    the catalog's image table prices it (None where the offering's price is unknown)."""
    plan = rig.plan()
    result = await rig.run(plan)
    cost = result_cost(rig.offering, plan, result, _finals(result))
    if result.usage is not None and "cost" in result.usage:  # the provider reported what it charged: it wins
        assert cost == Decimal(str(result.usage["cost"])) and cost >= 0
        return
    tokens = rig.upstream.image_tokens
    prices = rig.offering.pricing.tokens
    if tokens is None:
        assert result.usage is None
    else:
        assert result.usage is not None
        assert result.usage["output_tokens_details"] == {"image_tokens": tokens, "text_tokens": 0}
    if prices is not None:
        assert result.usage is not None
        text_in = result.usage["input_tokens_details"]["text_tokens"]  # type: ignore[index]
        assert cost == (tokens * prices.image_output + text_in * prices.text_input) / 1_000_000  # type: ignore[operator]
        assert cost == token_cost(prices, result.usage) and cost > 0
    elif rig.offering.pricing.per_image:
        assert cost is not None and cost > 0  # the image table (fal passes OpenAI's rates through)
    else:
        assert cost is None  # documented: the operator's contract (azure) or no published price (xai)
        if result.usage is not None:  # the usage is still usable: priced as OpenAI prices the same model
            reference = load_catalog().get(rig.upstream.model).offering("openai")  # type: ignore[union-attr]
            assert reference is not None and reference.pricing.tokens is not None
            assert token_cost(reference.pricing.tokens, result.usage) > Decimal(0)
