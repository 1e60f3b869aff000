"""The request-path benchmark's results and their markdown tables (bench/request_path.py)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.harness import percentile
from bench.procinfo import Memory


@dataclass(frozen=True)
class Round:
    """One side's batch in one round, with the CPU each process spent meanwhile (seconds)."""

    latencies_ms: list[float]
    ok: int
    requests: int
    wall_s: float
    gateway_cpu_s: float
    fake_cpu_s: float
    client_cpu_s: float


@dataclass
class Level:
    concurrency: int
    requests: int  # per side per round
    a: list[Round] = field(default_factory=list)  # the fake directly
    b: list[Round] = field(default_factory=list)  # through the gateway


@dataclass
class PayloadRun:
    name: str
    size_bytes: int
    memory_start: Memory
    levels: list[Level] = field(default_factory=list)
    memory_after: list[Memory] = field(default_factory=list)  # after each level


def _pooled(rounds: list[Round], q: float) -> float:
    return percentile([ms for r in rounds for ms in r.latencies_ms], q)


def _rate(rounds: list[Round]) -> float:
    return sum(r.requests for r in rounds) / sum(r.wall_s for r in rounds)


def _spread(values: list[float]) -> str:
    return f"{min(values):.1f}..{max(values):.1f}"


def _added(level: Level, q: float) -> str:
    """B - A of the q-th percentile in each round: median (min..max) over rounds."""
    pairs = zip(level.a, level.b, strict=True)
    per_round = [percentile(b.latencies_ms, q) - percentile(a.latencies_ms, q) for a, b in pairs]
    return f"{statistics.median(per_round):.1f} ({_spread(per_round)})"


def _per_request_ms(rounds: list[Round], cpu: str) -> list[float]:
    return [getattr(r, cpu) * 1000 / r.requests for r in rounds]


def _cpu_cell(rounds: list[Round], cpu: str) -> str:
    values = _per_request_ms(rounds, cpu)
    return f"{statistics.median(values):.1f} ({min(values):.1f}..{max(values):.1f})"


def _label(run: PayloadRun) -> str:
    size = run.size_bytes
    return f"{run.name} ({size / 1e6:.2f} MB)" if size >= 1e6 else f"{run.name} ({size / 1e3:.1f} KB)"


def latency_table(runs: list[PayloadRun]) -> list[str]:
    lines = [
        "| payload | concurrency | requests per side | A p50 ms | A p99 ms | B p50 ms | B p99 ms "
        "| added p50 ms | added p99 ms | A req/s | B req/s | A ok | B ok |",
        "|---|---:|---|---:|---:|---:|---:|---|---|---:|---:|---|---|",
    ]
    for run in runs:
        for lv in run.levels:
            ok_a, ok_b = sum(r.ok for r in lv.a), sum(r.ok for r in lv.b)
            sent = len(lv.a) * lv.requests
            lines.append(
                f"| {_label(run)} | {lv.concurrency} | {len(lv.a)} x {lv.requests} | {_pooled(lv.a, 50):.1f} "
                f"| {_pooled(lv.a, 99):.1f} | {_pooled(lv.b, 50):.1f} | {_pooled(lv.b, 99):.1f} | {_added(lv, 50)} "
                f"| {_added(lv, 99)} | {_rate(lv.a):.1f} | {_rate(lv.b):.1f} | {ok_a}/{sent} | {ok_b}/{sent} |"
            )
    return lines


def cpu_table(runs: list[PayloadRun]) -> list[str]:
    lines = [
        "| payload | concurrency | gateway CPU ms/req (B) | fake CPU ms/req (A) | fake CPU ms/req (B) "
        "| client CPU ms/req (A) | client CPU ms/req (B) | gateway CPU during A (ms/req) |",
        "|---|---:|---|---|---|---|---|---|",
    ]
    for run in runs:
        for lv in run.levels:
            lines.append(
                f"| {_label(run)} | {lv.concurrency} | {_cpu_cell(lv.b, 'gateway_cpu_s')} "
                f"| {_cpu_cell(lv.a, 'fake_cpu_s')} | {_cpu_cell(lv.b, 'fake_cpu_s')} "
                f"| {_cpu_cell(lv.a, 'client_cpu_s')} | {_cpu_cell(lv.b, 'client_cpu_s')} "
                f"| {_cpu_cell(lv.a, 'gateway_cpu_s')} |"
            )
    return lines


def memory_table(runs: list[PayloadRun]) -> list[str]:
    levels = [lv.concurrency for lv in runs[0].levels] if runs else []
    after = "".join(f" VmRSS after c={c} MiB |" for c in levels)
    lines = [f"| payload | VmRSS at start MiB |{after} VmHWM at end MiB |", "|---|---:|" + "---:|" * (len(levels) + 1)]
    for run in runs:
        cells = "".join(f" {m.rss_mib:.1f} |" for m in run.memory_after)
        peak = run.memory_after[-1].hwm_mib if run.memory_after else float("nan")
        lines.append(f"| {_label(run)} | {run.memory_start.rss_mib:.1f} |{cells} {peak:.1f} |")
    return lines


def render(header: list[str], runs: list[PayloadRun]) -> str:
    """The three tables under `header`, in markdown."""
    parts = [*header, "", "Latency and throughput (A: fake directly, B: through the gateway); added = B - A per round,"]
    parts += ["median (min..max) over rounds; A and B percentiles over all rounds", ""]
    parts += latency_table(runs)
    parts += ["", "CPU per request, median over rounds (min..max); gateway and fake from /proc/<pid>/stat", ""]
    parts += cpu_table(runs)
    parts += ["", "Gateway memory (/proc/<pid>/status); one gateway process per payload", ""]
    parts += memory_table(runs)
    return "\n".join(parts)
