"""Property-based fuzzing from our own OpenAPI document: no input may produce a 5xx.

Schemathesis generates requests (valid and invalid) for every operation the document
describes and runs them in-process against the ASGI app.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from imagegate.config import Settings
from imagegate.web.app import create_app

app = create_app(Settings(data_dir=Path(tempfile.mkdtemp(prefix="imagegate-fuzz-")), signing_key="fuzz"))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)

# CI runs a fixed, derandomized sample; IMAGEGATE_FUZZ_EXAMPLES=N with IMAGEGATE_FUZZ_RANDOM=1 explores more.
EXAMPLES = int(os.environ.get("IMAGEGATE_FUZZ_EXAMPLES", "150"))
RANDOM = os.environ.get("IMAGEGATE_FUZZ_RANDOM") == "1"


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}
