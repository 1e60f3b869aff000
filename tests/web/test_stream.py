"""stream=true: OpenAI's SSE events from the sandbox (which mirrors OpenAI's streaming capability)."""

from __future__ import annotations

import orjson
import pybase64

from tests.helpers import open_image, png_bytes


def parse_sse(text: str) -> list[tuple[str, dict]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


async def test_generation_stream_with_two_partials(client):
    response = await client.post(
        "/v1/images/generations",
        json={"prompt": "stream me", "stream": True, "partial_images": 2, "output_format": "webp"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [data["partial_image_index"] for _, data in events[:2]] == [0, 1]
    for name, data in events:
        assert data["type"] == name
        image = open_image(pybase64.b64decode(data["b64_json"]))
        assert image.format == "WEBP" and image.size == (1024, 1024)  # conversion applies to partials too
    completed = events[-1][1]
    assert completed["imagegate"]["provider"] == "sandbox" and completed["imagegate"]["cost_usd"] == "0"


async def test_stream_without_partials_sends_completed_only(client):
    response = await client.post("/v1/images/generations", json={"prompt": "x", "stream": True})
    assert [name for name, _ in parse_sse(response.text)] == ["image_generation.completed"]


async def test_model_that_cannot_stream_sends_completed_only(client):
    response = await client.post(
        "/v1/images/generations", json={"prompt": "x", "stream": True, "partial_images": 3, "model": "flux-1-schnell"}
    )
    assert [name for name, _ in parse_sse(response.text)] == ["image_generation.completed"]


async def test_edit_stream_uses_image_edit_events(client):
    response = await client.post(
        "/v1/images/edits",
        data={"prompt": "x", "stream": "true", "partial_images": "1"},
        files={"image": ("a.png", png_bytes(256, 256), "image/png")},
    )
    names = [name for name, _ in parse_sse(response.text)]
    assert names == ["image_edit.partial_image", "image_edit.completed"]


async def test_stream_errors_before_the_first_event_are_plain_http_errors(client):
    response = await client.post(
        "/v1/images/generations", json={"prompt": "x", "stream": True, "model": "gpt-image-2", "size": "abc"}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "size"


async def test_dry_run_estimates_per_candidate_and_calls_nobody(client, settings):
    response = await client.post(
        "/v1/images/generations",
        json={"prompt": "x", "model": "gpt-image-1", "quality": "high", "size": "1536x1024", "n": 2, "dry_run": True},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True and body["object"] == "imagegate.estimate"
    rows = {row["provider"]: row for row in body["candidates"]}
    assert rows["sandbox"]["estimated_cost_usd"] == "0" and rows["sandbox"]["size"] == "1536x1024"
    files = settings.data_dir / "files"
    assert not files.exists() or list(files.iterdir()) == []
