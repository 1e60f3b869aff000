"""One bounded thread pool for Pillow work.

Pillow releases the GIL while decoding, encoding and resampling, so threads give real
parallelism; bounding the pool to the CPU count keeps a burst of requests from running more
CPU-heavy tasks at once than there are cores (the rest wait in the executor's queue).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_THREAD_NAME_PREFIX = "imagegate-img"

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def pool_size() -> int:
    """The number of worker threads: one per CPU (2 when the count is unknown)."""
    return os.cpu_count() or 2


def get_pool() -> ThreadPoolExecutor:
    """The shared executor, created on first use."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=pool_size(), thread_name_prefix=_THREAD_NAME_PREFIX)
        return _executor


async def run_image_task(fn: Callable[..., T], *args: object) -> T:
    """Run ``fn(*args)`` in the image pool and await its result (exceptions propagate)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(get_pool(), fn, *args)


def shutdown_pool(wait: bool = True) -> None:
    """Stop the pool (queued tasks are cancelled); the next task creates a fresh one."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=wait, cancel_futures=True)
