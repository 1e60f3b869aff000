"""Serve the fuzz app (open mode, sandbox, throwaway data dir) for the schemathesis command line:

    .venv/bin/python -m tests.fuzz.serve --port 8930 &
    PYTHONPATH=. SCHEMATHESIS_HOOKS=tests.fuzz.hooks .venv/bin/st run http://127.0.0.1:8930/openapi.json \\
        --checks all --mode all -n 600
"""

from __future__ import annotations

import argparse

import uvicorn

from tests.fuzz.harness import fuzz_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8930)
    args = parser.parse_args()
    uvicorn.run(fuzz_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
