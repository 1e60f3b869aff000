"""Prints how many schemathesis cases ran and how many failed (the bar: 0 failures in >= 5,000 cases)."""

from __future__ import annotations

import pytest

from tests.fuzz.harness import FUZZ_STATS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FUZZ_STATS.cases:
        terminalreporter.write_line(
            f"schemathesis (all checks, positive + negative data): {FUZZ_STATS.cases} cases, "
            f"{FUZZ_STATS.failures} failing calls"
        )
