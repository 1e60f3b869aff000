"""Schemathesis hooks for the command-line run (`SCHEMATHESIS_HOOKS=tests.fuzz.hooks`): real images
and cursors for the formats JSON Schema cannot describe, and the multipart ST201 filter, as in the
pytest run."""

from __future__ import annotations

from tests.fuzz.harness import register_hooks

register_hooks()
