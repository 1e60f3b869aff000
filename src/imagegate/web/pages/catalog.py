"""The model catalog pages: /models, /models/{id} and /models/{id}/llms.txt.

Built from the same catalog, registry and lifecycle dates as /v1/models; the facts are derived in
`catalog_views` so the HTML page and llms.txt agree.
"""

from __future__ import annotations

from datetime import date
from html import escape
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from imagegate.core.types import ModelInfo, Offering
from imagegate.providers.registry import ProviderRegistry
from imagegate.routing.candidates import all_offerings, serving_state
from imagegate.web.models import model_status
from imagegate.web.pages import catalog_views as views
from imagegate.web.pages.layout import page

CSS = '<link rel="stylesheet" href="/static/catalog.css">'


def _base_url(request: Request) -> str:
    root = request.app.state.settings.public_url or str(request.base_url)
    return root.rstrip("/") + "/v1"


def _e(value: object) -> str:
    return escape(str(value))


def _table(head: list[str], rows: list[list[str]], caption: str = "", cls: str = "") -> str:
    """A table inside a horizontally scrolling wrapper. Cells are trusted HTML."""
    cap = f"<caption>{caption}</caption>" if caption else ""
    th = "".join(f'<th scope="col">{h}</th>' for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    cls_attr = f' class="{cls}"' if cls else ""
    table = f"<table{cls_attr}>{cap}<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
    return f'<div class="table-wrap" tabindex="0">{table}</div>'


# --- /models ----------------------------------------------------------------------------------


def _options(label: str, name: str, values: list[str]) -> str:
    opts = "".join(
        f'<option value="{_e(v)}">{_e(views.provider_name(v) if name == "provider" else v)}</option>' for v in values
    )
    return (
        f'<div class="filter"><label for="filter-{name}">{label}</label>'
        f'<select id="filter-{name}" data-filter="{name}"><option value="">Any</option>{opts}</select></div>'
    )


async def models_index(request: Request) -> Response:
    state = request.app.state
    today: date = state.service.today()
    models: list[ModelInfo] = state.catalog.models()
    rows = []
    providers: set[str] = set()
    for model in models:
        offerings = all_offerings(model, state.registry)
        names = sorted({o.provider for o in offerings})
        providers.update(names)
        usd, price = views.starting_price(model)
        search = " ".join([model.id, model.display_name, model.creator, *model.tags, *model.aliases]).lower()
        href = f"/models/{quote(model.id)}"
        status = model_status(model, today)
        rows.append(
            f'<tr class="model-row" data-search="{_e(search)}" data-modes="{_e(" ".join(model.modes))}" '
            f'data-providers="{_e(" ".join(names))}" data-creator="{_e(model.creator)}" '
            f'data-price="{"" if usd is None else _e(usd)}">'
            f'<td><a href="{href}"><strong>{_e(model.display_name)}</strong></a><br><code>{_e(model.id)}</code></td>'
            f"<td>{_e(model.creator)}</td>"
            f"<td>{''.join(f'<span class=tag>{_e(m)}</span>' for m in model.modes)}</td>"
            f"<td>{_e(model.max_resolution)}</td>"
            f'<td><span class="status status-{status}">{_e(status)}</span></td>'
            f"<td>{_e(price)}</td></tr>"
        )
    creators = sorted({m.creator for m in models})
    head = "".join(
        f'<th scope="col">{h}</th>' for h in ("Model", "Creator", "Modes", "Max resolution", "Status", "Starting price")
    )
    body = f"""{CSS}
<h1>Models</h1>
<p class="muted">Every image model this gateway serves, from its catalog.
Prices are the providers' list prices in USD.</p>
<form class="filters card" role="search" aria-label="Filter models">
<div class="filter grow"><label for="model-search">Search</label>
<input id="model-search" type="search" placeholder="id, name, creator or tag" autocomplete="off"></div>
<div class="filter"><label for="filter-mode">Mode</label><select id="filter-mode" data-filter="mode">
<option value="">Any</option><option value="text-to-image">text-to-image</option>
<option value="image-edit">image-edit</option></select></div>
{_options("Provider", "provider", sorted(providers))}
{_options("Creator", "creator", creators)}
<div class="filter"><label for="filter-price">Max price (USD)</label>
<input id="filter-price" type="number" min="0" step="0.001" inputmode="decimal" placeholder="any"></div>
</form>
<p id="model-count" class="muted" aria-live="polite">{len(models)} models</p>
<p><a href="/models/compare">Compare prices for one request across every model and provider</a></p>
<div class="table-wrap" tabindex="0"><table id="model-table" class="models"><thead><tr>{head}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></div>
<p id="no-match" class="muted" hidden>No model matches these filters.</p>"""
    return page(
        "Models",
        body,
        active="/models",
        scripts=["catalog.js"],
        description=f"{len(models)} image models with prices, sizes and parameters.",
    )


# --- /models/{id} -----------------------------------------------------------------------------


def _copy_button(target: str, label: str) -> str:
    return f'<button type="button" class="copy" data-copy-target="{target}" aria-label="{_e(label)}">Copy</button>'


def _header(model: ModelInfo, offerings: list[Offering], today: date) -> str:
    _, price = views.starting_price(model)
    status = model_status(model, today)
    notes = [views.offering_status(o, today) for o in offerings]
    notes = [n for n in notes if n != "active"]
    status_html = f'<span class="status status-{status}">{_e(status)}</span>'
    if notes:
        status_html += "<ul class='lifecycle'>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
    facts = [
        (
            "Model id",
            f'<code id="model-id" class="model-id">{_e(model.id)}</code> {_copy_button("model-id", "Copy model id")}',
        ),
        ("Creator", _e(model.creator)),
        ("Family", _e(model.family)),
        ("Modes", "".join(f"<span class=tag>{_e(m)}</span>" for m in model.modes)),
        ("Max resolution", _e(model.max_resolution)),
        ("Max input images", _e(model.max_input_images)),
        ("Tags", "".join(f"<span class=tag>{_e(t)}</span>" for t in model.tags) or "none"),
        ("Status", status_html),
        ("Starting price", _e(price)),
    ]
    if model.aliases:
        facts.insert(1, ("Aliases", ", ".join(f"<code>{_e(a)}</code>" for a in model.aliases)))
    dl = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts)
    return f'<dl class="facts card">{dl}</dl>'


def _offering_section(off: Offering, today: date, serving: str) -> str:
    p = off.pricing
    name = views.provider_name(off.provider)
    badge = ' <span class="tag free">free</span>' if p.free else ""
    if serving != "ready":
        badge += f' <span class="tag not-configured">{_e(views.SERVING_LABELS[serving])}</span>'
    status = views.offering_status(off, today)
    parts = [f'<section class="offering card" aria-label="{_e(name)}"><h3>{_e(name)}{badge}</h3>']
    parts.append(
        f'<p class="muted">Status: {_e(status)}. Model ids: '
        + ", ".join(f"<code>{_e(v)}</code> ({_e(k)})" for k, v in off.model_ids.items())
        + "</p>"
    )
    if p.per_image:
        qualities = list(dict.fromkeys(r.quality for r in p.per_image))
        sizes = list(dict.fromkeys(r.size for r in p.per_image))
        cells = {(r.quality, r.size): views.money(r.usd) for r in p.per_image}
        rows = [[_e("any size" if s == "*" else s), *(_e(cells.get((q, s), "—")) for q in qualities)] for s in sizes]
        parts.append(_table(["Size", *(_e(q) for q in qualities)], rows, "Price per image (USD)", "prices"))
    if p.per_megapixel is not None:
        parts.append(f"<p>{_e(views.money(p.per_megapixel))} per megapixel (rounded up).</p>")
    if p.tokens is not None:
        token_rows = [
            [_e(label), _e(views.money(getattr(p.tokens, key)))]
            for key, label in views.TOKEN_LABELS
            if getattr(p.tokens, key) is not None
        ]
        parts.append(_table(["Tokens", "USD per million"], token_rows, "Token prices", "tokens"))
    if p.free:
        parts.append("<p>Free: the sandbox makes offline placeholder images and never calls a paid API.</p>")
    elif not p.per_image and p.per_megapixel is None and p.tokens is None:
        parts.append("<p>Price unknown.</p>")
    if p.notes:
        parts.append(f'<p class="muted">Pricing note: {_e(p.notes)}</p>')
    parts.append(f'<p class="muted">Sizes: {_e(views.size_text(off.caps.sizes))}</p>')
    if off.notes:
        parts.append(f'<p class="muted">Notes: {_e(off.notes)}</p>')
    if off.lifecycle.note:
        parts.append(f'<p class="muted">Lifecycle: {_e(off.lifecycle.note)}</p>')
    return "".join(parts) + "</section>"


def _params_section(model: ModelInfo, offerings: list[Offering], today: date) -> str:
    parts = ['<h2 id="parameters">Parameters</h2>']
    for mode in model.modes:
        ref, param_rows = views.mode_rows(model, offerings, mode, today)
        if ref is None:
            continue
        rows = [
            [
                f"<code>{_e(r.name)}</code>",
                f'<span class="avail avail-{r.availability.replace(" ", "-")}">{_e(r.availability)}</span>',
                _e(r.handling),
            ]
            for r in param_rows
        ]
        ref_name = _e(views.provider_name(ref.provider))
        parts.append(
            f'<h3>{_e(mode)}</h3><p class="muted">How the gateway handles each parameter for the '
            f"reference offering ({ref_name}), the first provider that serves it.</p>"
        )
        parts.append(_table(["Parameter", "Availability", "Handling"], rows, "", f"params params-{mode}"))
    parts.append(
        '<p class="muted">Handling: passthrough = sent as is; renamed = the provider\'s field name; '
        "converted = turned into the provider's form; emulated = done by the gateway; "
        "dropped = left out with a warning.</p>"
    )
    return "".join(parts)


def _examples_section(model: ModelInfo, ref: Offering | None, base: str) -> str:
    parts = [
        '<h2 id="code">Code examples</h2>',
        '<p class="muted">Each example calls this gateway\'s OpenAI-compatible API (<code>/v1</code>).</p>',
    ]
    for lang, code in views.examples(model, ref, base).items():
        key = "code-" + lang.lower()
        parts.append(
            f'<div class="example"><div class="example-head"><h3>{_e(lang)}</h3>'
            f"{_copy_button(key, f'Copy {lang} example')}</div>"
            f'<pre><code id="{key}" data-lang="{_e(lang.lower())}">{_e(code)}</code></pre></div>'
        )
    return "".join(parts)


def _faq_section(model: ModelInfo, offerings: list[Offering], today: date, registry: ProviderRegistry) -> str:
    ready = {o.provider for o in offerings if serving_state(o, registry) == "ready"}
    items = "".join(f"<dt>{_e(q)}</dt><dd>{_e(a)}</dd>" for q, a in views.faq(model, offerings, today, ready))
    return f'<h2 id="faq">FAQ</h2><dl class="faq">{items}</dl>'


async def model_page(request: Request) -> Response:
    state = request.app.state
    asked = request.path_params["model_id"]
    model = state.catalog.get(asked)
    if model is None:
        body = f"""{CSS}<h1>Model not found</h1>
<p>There is no model <code>{_e(asked)}</code> in this gateway's catalog.</p>
<p><a href="/models">See all models</a></p>"""
        response = page("Model not found", body, active="/models", description="Unknown model")
        response.status_code = 404
        return response
    if asked != model.id:
        return RedirectResponse(f"/models/{quote(model.id)}", status_code=308)
    today: date = state.service.today()
    offerings = all_offerings(model, state.registry)
    base = _base_url(request)
    ref = views.reference_offering(offerings, model.modes[0], today)
    playground = f"/playground?model={quote(model.id)}"
    body = f"""{CSS}
<nav class="crumbs" aria-label="Breadcrumb"><a href="/models">Models</a> / {_e(model.id)}</nav>
<div class="title-row"><h1>{_e(model.display_name)}</h1>
<a class="button primary" href="{playground}">Try in playground</a></div>
<p>{_e(model.overview)}</p>
{_header(model, offerings, today)}
<p class="muted">Plain-text facts for tools: <a href="/models/{quote(model.id)}/llms.txt">llms.txt</a></p>
<h2 id="pricing">Providers and pricing</h2>
{"".join(_offering_section(o, today, serving_state(o, state.registry)) for o in offerings)}
{_params_section(model, offerings, today)}
{_examples_section(model, ref, base)}
{_faq_section(model, offerings, today, state.registry)}"""
    _, price = views.starting_price(model)
    return page(
        model.display_name,
        body,
        active="/models",
        scripts=["catalog.js"],
        description=f"{model.display_name} ({model.id}) by {model.creator}: {price}, sizes, parameters, code.",
    )


async def model_llms(request: Request) -> Response:
    state = request.app.state
    model = state.catalog.get(request.path_params["model_id"])
    if model is None:
        return PlainTextResponse("unknown model\n", status_code=404)
    offerings = all_offerings(model, state.registry)
    text = views.llms_text(model, offerings, state.service.today(), _base_url(request))
    return PlainTextResponse(text, media_type="text/plain; charset=utf-8")


def routes() -> list[Route]:
    return [
        Route("/models", models_index, methods=["GET"]),
        Route("/models/{model_id}/llms.txt", model_llms, methods=["GET"]),
        Route("/models/{model_id}", model_page, methods=["GET"]),
    ]
