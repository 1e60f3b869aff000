"""Giving freed image memory back to the operating system.

Decoded images are large (a 40-megapixel RGB picture is 120 MB) and short-lived. glibc's malloc
keeps freed memory in its arenas for reuse, so after a burst the process can keep gigabytes it
no longer uses. `trim_heap` calls ``malloc_trim(0)``, which returns every free page of every arena
to the OS (the envelope calls it in a thread once the process has been idle for a moment).
Elsewhere (musl, macOS) there is no such call and `trim_heap` does nothing.

Pillow's own block cache (``PIL.Image.core.set_blocks_max``) is 0 by default: Pillow keeps no
freed image blocks, so there is nothing of its own to release; we leave it at 0.

``MALLOC_ARENA_MAX``: glibc gives each thread that allocates concurrently an arena of its own (up
to 8 per core); the image pool has one thread per core, so there are only a handful, and
`malloc_trim` reaches all of them. We measured (docs/benchmarks.md, "Memory under bursts") that
the trim alone brings the process back near its start, so the server does not change the arena
count; an operator can still set ``MALLOC_ARENA_MAX=2`` in the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger("imagegate.memory")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def can_trim() -> bool:
    """Whether this process's C library has ``malloc_trim`` (glibc)."""
    return _libc() is not None


# mallopt(3) parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024


def keep_request_buffers() -> bool:
    """Keep a request's multi-MB buffers (a 3.5 MB upstream reply, a 2.6 MB image) in the heap
    between requests instead of mapping and unmapping them every time.

    glibc serves blocks above its mmap threshold (dynamic, from 128 KiB) with fresh mmaps and trims
    the heap top above its trim threshold on every free, so a process can fault in ~10 MB of zeroed
    pages per large-image request: measured 15-18 ms of CPU per request instead of 9-10 in about
    half of the gateway processes, depending on early allocation history. Fixed thresholds (64 MiB,
    256 MiB) make that deterministic. Only with `trim_heap` in use: the envelope gives the heap back
    once the process is idle, so a burst's memory is still returned. Returns False off glibc."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def trim_heap() -> bool:
    """``malloc_trim(0)``: hand free heap pages back to the OS; True when something was released."""
    libc = _libc()
    if libc is None:
        return False
    released = bool(libc.malloc_trim(0))
    log.debug("malloc_trim(0): %s", "released memory" if released else "nothing to release")
    return released
