"""Placeholder until the playground pages land."""

from __future__ import annotations

from starlette.routing import Route


def routes() -> list[Route]:
    return []
