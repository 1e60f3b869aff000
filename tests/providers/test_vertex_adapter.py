"""The `vertex` kind (Gemini on Vertex AI, Imagen 4 `:predict`, service-account tokens) against
the fake Vertex AI and its token endpoint (tests/fakes/vertex.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image
from pydantic import ValidationError

from imagegate.catalog.loader import load_catalog
from imagegate.config import ConfigError, Settings
from imagegate.core.normalize import plan_request
from imagegate.core.sizes import build_size_request
from imagegate.core.types import Dimensions, ProviderJob, PublicRequest, SizeChoice
from imagegate.errors import (
    ImagegateError,
    InvalidRequestError,
    ModerationBlockedError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from imagegate.providers import imagen_wire, vertex
from imagegate.providers.base import CallContext, Provider
from imagegate.providers.vertex import VertexProvider, VertexSettings
from tests.fakes.faults import Fault
from tests.fakes.vertex import FakeVertex, TokenFault

PROJECT = "imagegate-test-project"
EMAIL = "imagegate@imagegate-test-project.iam.gserviceaccount.com"
PRO = "gemini-3-pro-image"
IMAGEN = "imagen-4.0-generate"
FAST = "imagen-4.0-fast-generate"
PREDICT_PATH = f"/v1/projects/{PROJECT}/locations/global/publishers/google/models/imagen-4.0-generate-001:predict"


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return _rsa_key()


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _key_body(pem: str) -> str:
    """A line from the middle of the PEM: what a leak of the private key would contain."""
    return pem.splitlines()[5]


@pytest.fixture
async def fake(signing_key: rsa.RSAPrivateKey) -> AsyncIterator[FakeVertex]:
    server = FakeVertex(project=PROJECT, public_key=signing_key.public_key(), client_email=EMAIL)
    await server.start()
    yield server
    await server.stop()


def _service_account(path: Path, key: rsa.RSAPrivateKey, token_uri: str) -> Path:
    info = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": _pem(key),
        "client_email": EMAIL,
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(info))
    return path


def _create(tmp_path: Path, fake: FakeVertex, key: rsa.RSAPrivateKey, **fields: object) -> VertexProvider:
    key_file = _service_account(tmp_path / "sa.json", key, fake.token_url)
    config = VertexSettings.model_validate(
        {"project": PROJECT, "credentials_file": str(key_file), "base_url": fake.root, **fields}
    )
    built = vertex.create("vertex", config, Settings(data_dir=tmp_path))
    assert built is not None
    return built


@pytest.fixture
async def provider(tmp_path: Path, fake: FakeVertex, signing_key: rsa.RSAPrivateKey) -> AsyncIterator[VertexProvider]:
    built = _create(tmp_path, fake, signing_key)
    yield built
    await built.aclose()


def _job(
    model: str = IMAGEN,
    *,
    provider: str = "vertex",
    prompt: str = "a lighthouse at dawn",
    n: int = 1,
    ratio: str | None = None,
    resolution: str | None = None,
    output_format: str | None = None,
    compression: int | None = None,
    options: dict[str, object] | None = None,
    extra: dict[str, object] | None = None,
) -> ProviderJob:
    """The first job the planner makes for `model`'s offering from `provider`."""
    offering = load_catalog().get(model).offering(provider)  # type: ignore[union-attr]
    assert offering is not None
    request = PublicRequest(
        mode="text-to-image",
        prompt=prompt,
        n=n,
        size=build_size_request(None, ratio, resolution),
        output_format=output_format,
        output_compression=compression,
        options=options or {},
        extra=extra or {},
    )
    return plan_request(request, offering).jobs[0]


def _gemini_job(**fields: object) -> ProviderJob:
    """A Gemini job as a Vertex offering would plan it (the catalog's google offering, same model ids)."""
    return _job(PRO, provider="google", **fields)  # type: ignore[arg-type]


def _ctx(seconds: float = 30.0) -> CallContext:
    return CallContext(request_id="t", deadline=asyncio.get_running_loop().time() + seconds)


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _bearers(fake: FakeVertex) -> list[str]:
    return [request.headers["authorization"].removeprefix("Bearer ") for request in fake.requests]


# --- settings and the provider contract --------------------------------------------------------------


async def test_settings_factory_and_protocol(
    tmp_path: Path, fake: FakeVertex, signing_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = _create(tmp_path, fake, signing_key)
    assert isinstance(built, Provider) and built.available() and not built.fallback_only
    assert built.name == "vertex" and built.extra_offering(load_catalog().get(IMAGEN)) is None  # type: ignore[arg-type]
    assert built.url("imagen-4.0-generate-001") == f"{fake.root}{PREDICT_PATH}"
    assert built.url(PRO).endswith(f"/locations/global/publishers/google/models/{PRO}:generateContent")
    assert built.url("../x?y").endswith("/models/..%2Fx%3Fy:generateContent")
    with pytest.raises(NotImplementedError):
        built.stream(_job(), None, _ctx())
    await built.aclose()
    assert vertex.default_base_url("global") == "https://aiplatform.googleapis.com"
    assert vertex.default_base_url("us-central1") == "https://us-central1-aiplatform.googleapis.com"
    regional = vertex.create("v", VertexSettings(project="p", location="europe-west4"), Settings(data_dir=tmp_path))
    assert regional is not None and regional.url("imagen-4.0-generate-001") == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4"
        "/publishers/google/models/imagen-4.0-generate-001:predict"
    )
    # ADC: available only where google.auth.default would find a key file.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "nowhere.json"))
    assert not regional.available()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
    assert regional.available()
    missing = VertexSettings(project="p", credentials_file=tmp_path / "missing.json")
    no_file = vertex.create("v", missing, Settings(data_dir=tmp_path))
    assert no_file is not None and not no_file.available()
    assert vertex.create("v", VertexSettings(project="p", enabled=False), Settings(data_dir=tmp_path)) is None
    with pytest.raises(ConfigError, match="not an API key"):
        vertex.create("v", VertexSettings(project="p", api_key_env="X"), Settings(data_dir=tmp_path))
    for bad in (
        {},
        {"project": ""},
        {"project": "p", "location": "US Central"},
        {"project": "p", "token_url": "ftp://x"},
    ):
        with pytest.raises(ValidationError):
            VertexSettings.model_validate(bad)
    assert vertex.KIND.name == "vertex" and vertex.KIND.settings_model is VertexSettings
    assert not vertex.KIND.default_instance


# --- Gemini on Vertex ---------------------------------------------------------------------------------


async def test_gemini_on_vertex_with_one_cached_token(provider: VertexProvider, fake: FakeVertex) -> None:
    job = _gemini_job(ratio="16:9", resolution="2K")
    first = await provider.run(job, None, _ctx())
    second = await provider.run(job, None, _ctx())
    for result in (first, second):
        assert _open(result.images[0].data).size == (2752, 1536) and result.images[0].format == "png"
        assert result.usage is not None and result.usage["output_tokens"] == 1120 + 180
    sent = fake.requests[-1]
    assert sent.path == f"/v1/projects/{PROJECT}/locations/global/publishers/google/models/{PRO}:generateContent"
    assert sent.json["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9", "imageSize": "2K"}
    assert "x-goog-api-key" not in sent.headers
    tokens = _bearers(fake)
    assert len(tokens) == 2 and tokens[0] == tokens[1] and tokens[0].startswith("ya29.fake-")
    assert fake.issued == 1 and len(fake.token_requests) == 1  # minted once, cached across both calls
    grant = fake.token_requests[0]
    assert grant["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer" and grant["assertion"].count(".") == 2


async def test_gemini_vertex_only_image_config(provider: VertexProvider, fake: FakeVertex) -> None:
    job = _gemini_job(ratio="1:1", extra={"person_generation": "allow_adult"})
    job = dataclasses.replace(job, output_format="jpeg", output_compression=80)
    result = await provider.run(job, None, _ctx())
    assert result.images[0].format == "jpeg" and _open(result.images[0].data).format == "JPEG"
    config = fake.requests[-1].json["generationConfig"]
    assert config["imageConfig"] == {
        "aspectRatio": "1:1",
        "personGeneration": "ALLOW_ADULT",
        "outputMimeType": "image/jpeg",
        "outputCompressionQuality": 80,
    }
    assert "person_generation" not in config
    with pytest.raises(InvalidRequestError) as refused:
        await provider.run(_gemini_job(extra={"person_generation": "everyone"}), None, _ctx())
    assert refused.value.param == "person_generation" and len(fake.requests) == 1


# --- Imagen 4 -------------------------------------------------------------------------------------------


async def test_imagen_seed_is_deterministic(provider: VertexProvider, fake: FakeVertex) -> None:
    job = _job(options={"seed": 42})
    first = await provider.run(job, None, _ctx())
    second = await provider.run(job, None, _ctx())
    assert first.images[0].data == second.images[0].data and first.metadata == {"seed": 42}
    assert _open(first.images[0].data).size == (1024, 1024) and first.images[0].format == "png"
    sent = fake.requests[-1]
    assert sent.path == PREDICT_PATH
    assert sent.json == {
        "instances": [{"prompt": "a lighthouse at dawn"}],
        "parameters": {
            "seed": 42,
            "addWatermark": False,
            "sampleCount": 1,
            "aspectRatio": "1:1",
            "outputOptions": {"mimeType": "image/png"},
            "includeRaiReason": True,
        },
    }
    other = await provider.run(_job(options={"seed": 43}), None, _ctx())
    unseeded = [await provider.run(_job(), None, _ctx()) for _ in range(2)]
    assert other.images[0].data != first.images[0].data
    assert unseeded[0].images[0].data != unseeded[1].images[0].data
    assert (
        "seed" not in fake.requests[-1].json["parameters"]
        and "addWatermark" not in fake.requests[-1].json["parameters"]
    )


async def test_imagen_negative_prompt_2k_jpeg(provider: VertexProvider, fake: FakeVertex) -> None:
    job = _job(
        ratio="16:9",
        resolution="2K",
        output_format="jpeg",
        compression=70,
        extra={"negative_prompt": "people, text", "person_generation": "dont_allow"},
    )
    result = await provider.run(job, None, _ctx())
    image = _open(result.images[0].data)
    assert (image.format, image.size) == ("JPEG", (2816, 1536)) and result.images[0].format == "jpeg"
    parameters = fake.requests[-1].json["parameters"]
    assert parameters["negativePrompt"] == "people, text" and parameters["personGeneration"] == "DONT_ALLOW"
    assert parameters["sampleImageSize"] == "2K" and parameters["aspectRatio"] == "16:9"
    assert parameters["outputOptions"] == {"mimeType": "image/jpeg", "compressionQuality": 70}
    assert "negative_prompt" not in parameters


async def test_imagen_n_goes_as_sample_count(provider: VertexProvider, fake: FakeVertex) -> None:
    job = _job(n=2, ratio="9:16")
    assert job.n == 2
    result = await provider.run(job, None, _ctx())
    assert len(result.images) == 2 and all(_open(item.data).size == (768, 1408) for item in result.images)
    assert result.images[0].data != result.images[1].data
    assert fake.requests[-1].json["parameters"]["sampleCount"] == 2
    offering = load_catalog().get(IMAGEN).offering("vertex")  # type: ignore[union-attr]
    assert offering is not None
    plan = plan_request(PublicRequest(mode="text-to-image", prompt="x", n=6), offering)
    assert [planned.n for planned in plan.jobs] == [4, 2]  # the planner fans out past Imagen's four


async def test_fast_has_no_2k_and_the_fake_says_so(provider: VertexProvider) -> None:
    planned = _job(FAST, ratio="4:3", resolution="2K")
    assert planned.size.tier == "1K" and planned.size.dims == Dimensions(1280, 896)  # the catalog knows
    forced = dataclasses.replace(planned, size=SizeChoice(dims=Dimensions(2560, 1792), ratio="4:3", tier="2K"))
    with pytest.raises(InvalidRequestError) as caught:
        await provider.run(forced, None, _ctx())
    assert "sampleImageSize 2K is not supported" in caught.value.message


async def test_imagen_request_refusals(provider: VertexProvider, fake: FakeVertex) -> None:
    with pytest.raises(InvalidRequestError) as watermark:  # the caller insisted on the watermark
        await provider.run(_job(options={"seed": 1}, extra={"add_watermark": True}), None, _ctx())
    assert "Seed is not supported when watermark is enabled" in watermark.value.message
    with pytest.raises(InvalidRequestError) as person:
        await provider.run(_job(extra={"person_generation": "kids"}), None, _ctx())
    assert person.value.param == "person_generation"
    with pytest.raises(InvalidRequestError) as ratio:
        await provider.run(dataclasses.replace(_job(), size=SizeChoice(dims=Dimensions(1536, 1024))), None, _ctx())
    assert ratio.value.param == "size"
    with pytest.raises(InvalidRequestError) as edit:
        await provider.run(dataclasses.replace(_job(), mode="image-edit"), None, _ctx())
    assert edit.value.param == "image"
    assert len(fake.requests) == 1  # only the watermark case reached Vertex


async def test_rai_filtered_results(provider: VertexProvider) -> None:
    with pytest.raises(ModerationBlockedError) as blocked:
        await provider.run(_job(n=2, prompt="a BLOCKED_BY_SAFETY scene"), None, _ctx())
    assert blocked.value.status == 400 and "safety filter threshold filtered out" in blocked.value.message
    with pytest.raises(UpstreamMalformedError) as partial:
        await provider.run(_job(n=2, prompt="PARTLY_BLOCKED please"), None, _ctx())
    error = partial.value
    assert "1 of 2 images came back" in error.message and error.may_have_charged and error.retryable
    with pytest.raises(ModerationBlockedError) as silent:  # includeRaiReason off: Vertex answers {}
        imagen_wire.parse_reply({}, 1, "vertex")
    assert "no image came back" in silent.value.message
    for body in ([], {"predictions": "x"}, {"predictions": [{"bytesBase64Encoded": "@@"}]}, {"error": {}}):
        with pytest.raises(UpstreamMalformedError):
            imagen_wire.parse_reply(body, 1, "vertex")


# --- tokens ------------------------------------------------------------------------------------------------


async def test_token_endpoint_refusing_is_auth_error(provider: VertexProvider, fake: FakeVertex) -> None:
    fake.fail_tokens(TokenFault(400, "invalid_grant", "Invalid JWT Signature."))
    with pytest.raises(UpstreamAuthError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert error.disable_provider and fake.requests == [] and "token endpoint refused" in error.message
    assert "JWT" not in error.message and "invalid_grant" not in error.message
    result = await provider.run(_job(), None, _ctx())  # the next call mints anew
    assert len(result.images) == 1 and fake.issued == 1


async def test_a_foreign_key_is_refused_by_signature(
    tmp_path: Path, fake: FakeVertex, signing_key: rsa.RSAPrivateKey
) -> None:
    other = _rsa_key()
    built = _create(tmp_path, fake, other)
    with pytest.raises(UpstreamAuthError) as caught:
        await built.run(_job(), None, _ctx())
    await built.aclose()
    assert fake.issued == 0 and fake.requests == [] and _key_body(_pem(other)) not in caught.value.message


async def test_unreadable_key_file_is_auth_error(tmp_path: Path, fake: FakeVertex) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"type": "service_account", "client_email": "x"}')
    config = VertexSettings(project=PROJECT, credentials_file=path, base_url=fake.root)
    built = vertex.create("vertex", config, Settings(data_dir=tmp_path))
    assert built is not None and built.available()
    with pytest.raises(UpstreamAuthError) as caught:
        await built.run(_job(), None, _ctx())
    await built.aclose()
    assert caught.value.disable_provider and "could not be loaded" in caught.value.message


async def test_expired_token_is_renewed_once(provider: VertexProvider, fake: FakeVertex) -> None:
    fake.expire_next_token()  # the API refuses the first token with 401 although it claims an hour
    result = await provider.run(_job(), None, _ctx())
    assert len(result.images) == 1 and fake.issued == 2
    first, second = _bearers(fake)
    assert first != second
    await provider.run(_job(), None, _ctx())
    assert fake.issued == 2 and _bearers(fake)[-1] == second  # the renewed token is cached


async def test_a_second_401_gives_up(provider: VertexProvider, fake: FakeVertex) -> None:
    fake.expire_next_token(times=2)
    with pytest.raises(UpstreamAuthError) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    assert error.upstream_status == 401 and error.disable_provider
    assert fake.issued == 2 and len(fake.requests) == 2  # renewed once, retried once


async def test_token_near_expiry_is_renewed_before_use(provider: VertexProvider, fake: FakeVertex) -> None:
    fake.expires_in = 120  # inside the renewal margin: every call mints first
    await provider.run(_job(), None, _ctx())
    await provider.run(_job(), None, _ctx())
    assert fake.issued == 2 and len(set(_bearers(fake))) == 2 and len(fake.requests) == 2


async def test_concurrent_calls_mint_one_token(provider: VertexProvider, fake: FakeVertex) -> None:
    results = await asyncio.gather(*(provider.run(_job(), None, _ctx()) for _ in range(4)))
    assert len(results) == 4 and fake.issued == 1 and len(set(_bearers(fake))) == 1


# --- error ladder and secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize(("headers", "expected"), [({"retry-after": "2"}, 2.0), ({}, 7.0)])
async def test_rate_limit(provider: VertexProvider, fake: FakeVertex, headers: dict[str, str], expected: float) -> None:
    fake.script.push(Fault("status", status=429, headers=headers))
    with pytest.raises(UpstreamRateLimitError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.retry_after == expected and caught.value.retryable and not caught.value.disable_provider


@pytest.mark.parametrize(("status", "kind"), [(500, UpstreamError), (503, UpstreamError), (504, UpstreamTimeoutError)])
async def test_server_errors(
    provider: VertexProvider, fake: FakeVertex, status: int, kind: type[UpstreamError]
) -> None:
    fake.script.push(Fault("status", status=status))
    with pytest.raises(kind) as caught:
        await provider.run(_gemini_job(), None, _ctx())
    assert type(caught.value) is kind and caught.value.retryable and caught.value.upstream_status == status


async def test_permission_denied_disables(provider: VertexProvider, fake: FakeVertex) -> None:
    fake.script.push(Fault("status", status=403))
    with pytest.raises(UpstreamAuthError) as caught:
        await provider.run(_job(), None, _ctx())
    assert caught.value.disable_provider and caught.value.upstream_status == 403 and fake.issued == 1


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, InvalidRequestError), (404, UpstreamError), (429, UpstreamRateLimitError), (500, UpstreamError)],
)
async def test_token_and_key_never_in_an_error(
    provider: VertexProvider,
    fake: FakeVertex,
    signing_key: rsa.RSAPrivateKey,
    status: int,
    kind: type[ImagegateError],
) -> None:
    echoed = {"error": {"code": status, "message": "you sent {authorization} (token={token})", "status": "X"}}
    fake.script.push(Fault("status", status=status, body=echoed, headers={"x-echo": "{token}"}))
    with pytest.raises(kind) as caught:
        await provider.run(_job(), None, _ctx())
    error = caught.value
    token = _bearers(fake)[-1]
    texts = [error.message, str(error.param), str(error.code), *error.headers.values(), str(error)]
    assert "you sent" in error.message
    assert all(token not in text and token[10:30] not in text for text in texts)
    assert all(_key_body(_pem(signing_key)) not in text for text in texts)


async def test_transport_faults(provider: VertexProvider, fake: FakeVertex) -> None:
    fake.script.push(Fault("reset"))
    with pytest.raises(UpstreamError) as reset:
        await provider.run(_job(), None, _ctx())
    assert reset.value.code == "upstream_connection_reset"
    for kind in ("truncate", "malformed"):
        fake.script.push(Fault(kind))  # type: ignore[arg-type]
        with pytest.raises(UpstreamMalformedError):
            await provider.run(_job(), None, _ctx())


async def test_a_call_past_the_deadline_is_a_timeout(provider: VertexProvider, fake: FakeVertex) -> None:
    await provider.run(_job(), None, _ctx())  # a token first, so the deadline falls on the image call
    fake.script.push(Fault("latency", delay=5.0))
    started = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamTimeoutError):
        await provider.run(_job(), None, _ctx(0.4))
    assert asyncio.get_running_loop().time() - started < 2.5


async def test_cancelling_a_call_raises_only_cancelled(provider: VertexProvider, fake: FakeVertex) -> None:
    fake.script.push(Fault("latency", delay=5.0))
    task = asyncio.create_task(provider.run(_job(), None, _ctx()))
    for _ in range(500):
        if any(r.path.endswith(":predict") for r in fake.requests):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- the fake itself --------------------------------------------------------------------------------------


async def test_fake_checks_bearer_project_and_parameters(fake: FakeVertex, provider: VertexProvider) -> None:
    await provider.run(_job(), None, _ctx())  # a valid token exists now
    token = _bearers(fake)[-1]
    body = {"instances": [{"prompt": "x"}], "parameters": {"sampleCount": 1}}
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.root}{PREDICT_PATH}", json=body) as reply:
            assert reply.status == 401 and (await reply.json())["error"]["status"] == "UNAUTHENTICATED"
        other = PREDICT_PATH.replace(PROJECT, "someone-else")
        async with session.post(f"{fake.root}{other}", json=body, headers=auth) as reply:
            assert reply.status == 403
        bad = {"instances": [{"prompt": "x"}], "parameters": {"sampleCount": 5}}
        async with session.post(f"{fake.root}{PREDICT_PATH}", json=bad, headers=auth) as reply:
            assert reply.status == 400
        unknown = {"instances": [{"prompt": "x"}], "parameters": {"numberOfImages": 1}}
        async with session.post(f"{fake.root}{PREDICT_PATH}", json=unknown, headers=auth) as reply:
            assert reply.status == 400 and "numberOfImages" in (await reply.json())["error"]["message"]
        async with session.post(
            f"{fake.root}{PREDICT_PATH}", json={"instances": [{"prompt": "x"}]}, headers=auth
        ) as reply:
            assert reply.status == 200 and len((await reply.json())["predictions"]) == 4  # Vertex's default count
        async with session.post(fake.token_url, data={"grant_type": "password"}) as reply:
            assert reply.status == 400 and (await reply.json())["error"] == "unsupported_grant_type"
