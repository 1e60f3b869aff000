"""Property-based fuzzing from our own OpenAPI document, with every schemathesis check.

Schemathesis generates valid and invalid requests (positive and negative data) for every operation
the document describes, runs them in-process against the ASGI app and applies ALL its checks: no
5xx, status codes, content types, headers and bodies as documented, valid data accepted, invalid
data rejected, undeclared methods answered 405 with `Allow`, and so on. So the document has to
describe exactly what the server accepts.

`IMAGEGATE_FUZZ_CASES` is the total number of generated cases to aim for (spread over the
operations; default 300 so the normal run stays fast). The bar is 5,000:

    IMAGEGATE_FUZZ_CASES=5000 .venv/bin/python -m pytest tests/fuzz -q

The run is derandomized (the same cases each time) unless `IMAGEGATE_FUZZ_RANDOM=1`. The count of
cases actually run and of failures is printed at the end (tests/fuzz/conftest.py).
"""

from __future__ import annotations

import math
import os

import schemathesis
from hypothesis import HealthCheck, settings

from tests.fuzz.harness import FUZZ_STATS, fuzz_app, fuzz_schema

TOTAL_CASES = int(os.environ.get("IMAGEGATE_FUZZ_CASES", "300"))
RANDOM = os.environ.get("IMAGEGATE_FUZZ_RANDOM") == "1"

app = fuzz_app()
schema = fuzz_schema(app)
PER_OPERATION = max(1, math.ceil(TOTAL_CASES / max(1, len(list(schema.get_all_operations())))))


@schema.parametrize()
@settings(max_examples=PER_OPERATION, deadline=None, derandomize=not RANDOM, suppress_health_check=list(HealthCheck))
def test_every_check(case: schemathesis.Case) -> None:
    FUZZ_STATS.cases += 1
    try:
        response = case.call_and_validate()
    except BaseException:
        FUZZ_STATS.failures += 1
        raise
    if response.status_code >= 400 and response.request.method != "HEAD":
        body = response.json()
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert len(response.content) < 4096, "error bodies stay small whatever the input"
