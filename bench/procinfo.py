"""What a benchmark reports about its machine and processes: CPU time and memory from /proc, git revision."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    system = f"{platform.system()} {platform.machine()}"
    return f"{cpu_model()}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def git_revision(path: Path) -> str:
    """`git rev-parse --short HEAD` of the checkout holding `path`, plus " dirty" when it has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain"], cwd=path, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} dirty" if changes else head


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` (all threads, reaped children) and of its live descendants, in seconds."""
    fields = _stat_fields(pid)
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    for child in _children(pid):
        try:
            ticks += sum(int(v) for v in _stat_fields(child)[11:13])
        except OSError:
            continue
    return ticks / _TICKS


@dataclass(frozen=True)
class Memory:
    rss_mib: float  # VmRSS: resident now
    hwm_mib: float  # VmHWM: peak resident since start


def memory(pid: int) -> Memory:
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024  # kB
    return Memory(values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan")))
