"""The providers' shared HTTP client keeps no state between calls: no cookie set by one reply is sent again."""

from __future__ import annotations

from aiohttp import web

from imagegate.providers.http import HttpClient
from tests.local_server import local_app


async def test_a_cookie_set_by_an_upstream_is_never_sent_back() -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.json_response({"ok": True})
        response.set_cookie("__cf_bm", "bot-management-of-another-caller", path="/")
        return response

    app = web.Application()
    app.router.add_post("/v1/images/generations", handler)
    client = HttpClient("openai", connect_timeout=5, max_connections=4, max_bytes=1 << 20)
    async with local_app(app) as port:
        base = f"http://localhost:{port}"  # a host name: aiohttp keeps no cookies of a bare IP address anyway
        try:
            for _ in range(2):
                reply = await client.request("POST", f"{base}/v1/images/generations", timeout=5, json={"prompt": "x"})
                assert reply.status == 200 and "__cf_bm" in reply.headers.get("Set-Cookie", "")
        finally:
            await client.aclose()
    assert seen == [None, None]
