"""/models/compare: one request's parameters priced at every offering that can take it."""

from __future__ import annotations

from pathlib import Path

import httpx

from imagegate.config import Settings
from imagegate.web.app import create_app


async def _get(tmp_path: Path, query: str) -> httpx.Response:
    providers = {"fal": {"api_key": "fal-compare:key"}}  # fal is callable here, the rest is not configured
    app = create_app(Settings(data_dir=tmp_path, signing_key="k", providers=providers))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.get(f"/models/compare?{query}")
    await app.state.registry.aclose()
    await app.state.runtime.aclose()
    return response


async def test_every_offering_is_priced_and_the_cheapest_served_one_is_marked(tmp_path: Path) -> None:
    response = await _get(tmp_path, "size=1024x1024&n=2&quality=low")
    assert response.status_code == 200
    html = response.text
    rows = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr ")[1:]
    assert len(rows) > 20  # every model that takes a low-quality 1024x1024 request, at each provider
    costs = [row.split("</td>")[4] for row in rows]
    priced = [c for c in costs if "unknown" not in c]
    assert priced and costs.index(priced[-1]) < costs.index(next(c for c in costs if "unknown" in c))  # unknown last
    marked = [row for row in rows if "cheapest" in row]
    assert len(marked) == 1 and 'data-provider="fal"' in marked[0]  # the only instance with a key
    fal_gpt = next(row for row in rows if "gpt-image-1<" in row and 'data-provider="fal"' in row)
    assert "$0.022" in fal_gpt  # 2 x 0.011, fal's low 1024x1024


async def test_sorting_and_bad_parameters(tmp_path: Path) -> None:
    by_model = (await _get(tmp_path, "size=1024x1024&sort=model")).text
    models = [cell.split(">")[2].split("<")[0] for cell in by_model.split("<tbody>", 1)[1].split("<tr ")[1:]]
    assert models == sorted(models)
    for query in ("n=11", "n=x", "sort=price", "size=banana", "quality=ultra"):
        assert (await _get(tmp_path / query.replace("=", "_"), query)).status_code == 400
