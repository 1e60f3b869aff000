"""The OpenAI success path without a full JSON parse, and base64 passed through to the caller as it came."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import httpx
import orjson
import pybase64
import pytest
from PIL import Image
from starlette.applications import Starlette

from imagegate.config import CatalogSettings, ProviderSettings, RoutingSettings, SandboxSettings, Settings
from imagegate.errors import UpstreamMalformedError
from imagegate.providers import openai_wire as wire
from imagegate.web.app import create_app
from tests.fakes.faults import Fault
from tests.fakes.openai import FakeOpenAI

KEY = "sk-fast-path"
GEN = "/v1/images/generations"


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def slashy_png() -> tuple[bytes, str]:
    """A PNG whose base64 has '/' characters (to escape as '\\/')."""
    while True:
        data = png()
        text = pybase64.b64encode(data).decode()
        if "/" in text:
            return data, text


def reply(*texts: str, **extra: object) -> dict[str, object]:
    return {
        "created": 1,
        "data": [{"b64_json": text} for text in texts],
        "usage": {"input_tokens": 5, "output_tokens": 272, "total_tokens": 277},
        "quality": "low",
        "output_format": "png",
        **extra,
    }


# --- split_reply -----------------------------------------------------------------------------------


def test_split_reply_cuts_out_the_base64_and_parses_the_rest() -> None:
    texts = [pybase64.b64encode(png()).decode() for _ in range(3)]
    raw = orjson.dumps(reply(*texts))
    body, found = wire.split_reply(raw)
    assert [bytes(t).decode() for t in found] == texts
    assert [item["b64_json"] for item in body["data"]] == ["#0", "#1", "#2"]
    assert body["usage"]["output_tokens"] == 272
    assert [bytes(wire.image_bytes(item["b64_json"], found).b64).decode() for item in body["data"]] == texts


def _escaped_slashes(text: str) -> bytes:
    return orjson.dumps(reply(text)).replace(b"/", b"\\/")


def _spaced(text: str) -> bytes:
    return orjson.dumps(reply(text), option=orjson.OPT_INDENT_2)


def _reordered(text: str) -> bytes:
    return orjson.dumps(
        {"usage": {"input_tokens": 1}, "data": [{"revised_prompt": 'say "b64_json":"no"', "b64_json": text}]}
    )


def _stray_key(text: str) -> bytes:
    return orjson.dumps({"b64_json": "QUJD", **reply(text)})


@pytest.mark.parametrize("layout", [_escaped_slashes, _spaced, _reordered, _stray_key])
def test_odd_layouts_fall_back_to_a_full_parse(layout: Callable[[str], bytes]) -> None:
    data, text = slashy_png()
    body, found = wire.split_reply(layout(text))
    item = body["data"][0]
    assert bool(found) == (layout is _reordered)  # the fast path only where nothing is unusual
    if found:
        assert item["revised_prompt"] == 'say "b64_json":"no"'
    assert wire.image_bytes(item["b64_json"], found).raw == data


def test_url_items_parse_as_they_are() -> None:
    raw = orjson.dumps({"created": 1, "data": [{"url": "https://files.example/x.png", "revised_prompt": "r"}]})
    body, found = wire.split_reply(raw)
    assert found == [] and body["data"][0]["url"] == "https://files.example/x.png"


@pytest.mark.parametrize("value", [None, "", "#0", "QU!D", "QUJ", 17])
def test_unusable_b64_json_is_malformed(value: object) -> None:
    with pytest.raises(UpstreamMalformedError):
        wire.image_bytes(value, [])


def test_a_body_that_is_not_json_raises() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        wire.split_reply(b'{"data":[{"b64_json":"QUJD"}], oops')


# --- through the gateway ----------------------------------------------------------------------------


@dataclass
class Rig:
    http: httpx.AsyncClient
    openai: FakeOpenAI
    app: Starlette

    def send_raw(self, text: bytes | str, times: int = 2) -> None:
        """The next `times` upstream answers: a 200 with exactly this body."""
        body = text.decode() if isinstance(text, bytes) else text
        self.openai.script.push(Fault("malformed", body=body), times=times)

    async def generate(self, **fields: object) -> httpx.Response:
        payload = {"prompt": "x", "model": "gpt-image-1", "response_format": "b64_json", **fields}
        return await self.http.post(GEN, json=payload)


@pytest.fixture
async def rig(tmp_path) -> AsyncIterator[Rig]:
    fake = FakeOpenAI(key=KEY)
    url = await fake.start()
    settings = Settings(
        data_dir=tmp_path,
        signing_key="k",
        providers={"openai": ProviderSettings(base_url=url, api_key=KEY)},
        sandbox=SandboxSettings(enabled=False),
        catalog=CatalogSettings(status={"gpt-image-1": {"openai": "active"}}),
        routing=RoutingSettings(backoff_base_seconds=0.001),
    )
    app = create_app(settings)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    yield Rig(http, fake, app)
    await http.aclose()
    await app.state.registry.aclose()
    await fake.stop()


async def test_b64_passthrough_is_byte_identical(rig: Rig):
    first, second = png((64, 48)), png((32, 16))
    texts = [pybase64.b64encode(first).decode(), pybase64.b64encode(second).decode()]
    rig.send_raw(orjson.dumps(reply(*texts)), times=1)
    response = await rig.generate(output_format="png", n=2)
    assert response.status_code == 200, response.text
    assert rig.openai.requests[-1].json["n"] == 2  # one call: one reply carries both images
    body = response.json()
    assert [item["b64_json"] for item in body["data"]] == texts
    assert body["size"] == "64x48" and body["output_format"] == "png"
    assert f'"b64_json":"{texts[0]}"'.encode() in response.content
    assert body["imagegate"]["n"] == 2 and body["imagegate"]["provider"] == "openai"
    assert response.headers["content-length"] == str(len(response.content))


async def test_passthrough_with_revised_prompt_and_usage_is_valid_openai_json(rig: Rig):
    text = pybase64.b64encode(png()).decode()
    upstream = reply(text)
    upstream["data"] = [{"b64_json": text, "revised_prompt": 'a "quoted" \\ prompt'}]
    rig.send_raw(orjson.dumps(upstream), times=1)
    body = (await rig.generate()).json()
    assert body["data"] == [{"b64_json": text, "revised_prompt": 'a "quoted" \\ prompt'}]
    assert body["usage"]["output_tokens"] == 272 and body["imagegate"]["cost_usd"] is not None


@pytest.mark.parametrize("layout", [_escaped_slashes, _spaced, _reordered, _stray_key])
async def test_odd_layouts_are_served(rig: Rig, layout: Callable[[str], bytes]):
    data, text = slashy_png()
    rig.send_raw(layout(text), times=1)
    response = await rig.generate()
    assert response.status_code == 200, response.text
    assert pybase64.b64decode(response.json()["data"][0]["b64_json"]) == data


def _cut(text: str) -> str:
    return text[:-3]


def _cut_aligned(text: str) -> str:
    return text[: len(text) // 2 // 4 * 4]  # still valid base64: the PNG itself is cut short


def _bad_char(text: str) -> str:
    return text[:10] + "!" + text[11:]


def _inner_padding(text: str) -> str:
    return text[:8] + "QQ==" + text[8:]


@pytest.mark.parametrize("damage", [_cut, _cut_aligned, _bad_char, _inner_padding])
async def test_malformed_or_truncated_b64_is_502_upstream_malformed(rig: Rig, damage: Callable[[str], str]):
    rig.send_raw(orjson.dumps(reply(damage(pybase64.b64encode(png()).decode()))))
    response = await rig.generate()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_malformed_response"
    assert response.headers["x-should-retry"] == "false"


async def test_url_instead_of_b64_json_is_fetched(rig: Rig):
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{rig.openai.base_url}/images/generations",
            json={"model": "dall-e-3", "prompt": "cat"},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as answer,
    ):
        url = (await answer.json())["data"][0]["url"]
    rig.send_raw(orjson.dumps({"created": 1, "data": [{"url": url}], "output_format": "png"}), times=1)
    response = await rig.generate(output_format="png")
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(pybase64.b64decode(response.json()["data"][0]["b64_json"])))
    assert image.format == "PNG" and image.size == (1024, 1024)


async def test_a_conversion_still_decodes_and_reencodes(rig: Rig):
    text = pybase64.b64encode(png()).decode()
    rig.send_raw(orjson.dumps(reply(text)), times=1)
    response = await rig.generate(output_format="gif")
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(pybase64.b64decode(response.json()["data"][0]["b64_json"])))
    assert image.format == "GIF" and image.size == (64, 48)
