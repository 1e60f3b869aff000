"""/models/compare: one request's parameters (size, n, quality) priced at every offering that can serve it.

Each row is one model at one provider instance: what the planner would send there (the size it
produces after the offering's size rules, the quality), the estimated cost of the whole request from
the catalog's prices (the same estimate budgets reserve; "unknown" where no price is known, never 0)
and whether this gateway can call it now. Sorted by cost (unknown last) unless another column is
asked for; the cheapest priced row that can be served here is marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from html import escape
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imagegate.core import pricing
from imagegate.core.normalize import plan_request
from imagegate.core.sizes import build_size_request
from imagegate.core.types import ParamError, PublicRequest
from imagegate.routing.candidates import all_offerings, serving_state
from imagegate.web.pages import catalog_views as views
from imagegate.web.pages.layout import page

SORTS = ("cost", "model", "provider")
QUALITIES = ("", "low", "medium", "high", "auto")


@dataclass(frozen=True)
class Row:
    model: str
    provider: str
    size: str
    quality: str
    cost: Decimal | None
    serving: str


def _e(value: object) -> str:
    return escape(str(value))


def rows(request: Request, size: str, n: int, quality: str | None) -> list[Row]:
    """Every offering that can serve a text-to-image request with these parameters, priced."""
    state = request.app.state
    today = state.service.today()
    asked = PublicRequest(mode="text-to-image", prompt="compare", n=n, size=build_size_request(size, None, None))
    if quality:
        asked = PublicRequest(mode="text-to-image", prompt="compare", n=n, size=asked.size, quality=quality)
    found: list[Row] = []
    for model in state.catalog.models():
        for offering in all_offerings(model, state.registry):
            if offering.provider == "sandbox" or not offering.supports("text-to-image"):
                continue
            if offering.lifecycle.status_on(today) == "retired":
                continue
            try:
                plan = plan_request(asked, offering)
            except ParamError:
                continue  # this offering cannot take the request (e.g. the quality asked for)
            job = plan.jobs[0]
            cost = pricing.estimate(offering, job.quality, job.size.dims, job.size.tier, n)
            produced = job.size.size_text if job.size.dims is not None else "auto"
            found.append(
                Row(
                    model.id,
                    offering.provider,
                    produced,
                    job.quality or "-",
                    cost,
                    serving_state(offering, state.registry),
                )
            )
    return found


def _sorted(found: list[Row], sort: str) -> list[Row]:
    if sort == "model":
        return sorted(found, key=lambda r: (r.model, r.provider))
    if sort == "provider":
        return sorted(found, key=lambda r: (r.provider, r.model))
    return sorted(found, key=lambda r: (r.cost is None, r.cost or Decimal(0), r.model, r.provider))


def _cheapest(found: list[Row]) -> Row | None:
    priced = [r for r in found if r.cost is not None and r.serving == "ready"]
    return min(priced, key=lambda r: (r.cost or Decimal(0), r.model)) if priced else None


async def compare_page(request: Request) -> Response:
    size = request.query_params.get("size") or "1024x1024"
    quality = request.query_params.get("quality") or ""
    sort = request.query_params.get("sort") or "cost"
    try:
        n = int(request.query_params.get("n") or "1")
        if not 1 <= n <= 10 or sort not in SORTS or quality not in QUALITIES:
            raise ValueError
        found = _sorted(rows(request, size, n, quality or None), sort)
    except (ValueError, ParamError):
        body = '<h1>Compare prices</h1><p>Use size "WxH" or "W:H", n 1-10, quality low/medium/high/auto.</p>'
        response = page("Compare prices", body, active="/models")
        response.status_code = 400
        return response
    best = _cheapest(found)
    query = {"size": size, "n": str(n), "quality": quality}
    heads = [
        f'<a href="?{_e(urlencode({**query, "sort": key}))}">{label}</a>'
        for key, label in (("model", "Model"), ("provider", "Provider"))
    ]
    heads += ["Produces", "Quality", f'<a href="?{_e(urlencode({**query, "sort": "cost"}))}">Cost (USD)</a>', "Here"]
    body_rows = []
    for row in found:
        mark = ' <span class="tag free">cheapest</span>' if row is best else ""
        cost = views.money(row.cost) if row.cost is not None else "unknown"
        here = "ready" if row.serving == "ready" else views.SERVING_LABELS[row.serving]
        cells = [
            f'<a href="/models/{_e(row.model)}">{_e(row.model)}</a>',
            _e(views.provider_name(row.provider)),
            _e(row.size),
            _e(row.quality),
            _e(cost) + mark,
            _e(here),
        ]
        body_rows.append(f'<tr data-provider="{_e(row.provider)}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    th = "".join(f'<th scope="col">{h}</th>' for h in heads)
    form = (
        '<form class="compare card" method="get">'
        f'<label>Size <input name="size" value="{_e(size)}"></label> '
        f'<label>n <input name="n" type="number" min="1" max="10" value="{n}"></label> '
        '<label>Quality <select name="quality">'
        + "".join(
            f'<option value="{q}"{" selected" if q == quality else ""}>{q or "default"}</option>' for q in QUALITIES
        )
        + f'</select></label> <input type="hidden" name="sort" value="{_e(sort)}">'
        + '<button type="submit">Compare</button></form>'
    )
    body = (
        '<link rel="stylesheet" href="/static/catalog.css"><h1>Compare prices</h1>'
        "<p>The estimated cost of one text-to-image request at every offering that can take it, from the "
        "catalog's prices (what a budget reserves); a provider that reports its cost may charge less.</p>"
        f'{form}<div class="table-wrap" tabindex="0"><table class="compare"><thead><tr>{th}</tr></thead>'
        f"<tbody>{''.join(body_rows)}</tbody></table></div>"
    )
    return page("Compare prices", body, active="/models", description="Image model prices side by side.")


def routes() -> list[Route]:
    return [Route("/models/compare", compare_page, methods=["GET"])]
