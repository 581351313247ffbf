"""Giving memory back to the system: large allocations in their own mappings and trimming the heap (glibc), and
dropping the resident pages of mapped model files once they have been read (Linux).

All are no-ops where the C library or kernel cannot do them.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_FROM_BYTES = 1 << 20


def release_large_allocations() -> None:
    """Have glibc serve every allocation of 1 MiB or more (a request body, a weight matrix) by its own mapping, given
    back to the system when freed. By default glibc raises that threshold to the largest block freed so far (up to
    32 MiB), so after one 15 MB block later ones come from the heap, which fragments and keeps the RSS of a burst
    (measured: 98 -> 194 MB after a burst of 15 MB embeddings)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_FROM_BYTES)
    except (OSError, AttributeError):
        LOGGER.debug("mallopt is not available: large allocations use the C library's defaults")


def trim_heap() -> None:
    """Return the free memory at the top of the heap to the system (after a step that allocated a lot)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        LOGGER.debug("malloc_trim is not available")


MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages now (clean file pages are dropped, re-read on the next access)


def drop_file_pages(paths: list[Path]) -> int:
    """Ask the kernel to reclaim this process's resident pages of the memory-mapped files ``paths`` (a directory
    stands for the files in it); returns how many mappings were advised (0 where the system cannot: other platforms,
    older kernels).

    Only clean, file-backed pages go (they are read again from the file if touched), so nothing is lost: this is
    what the kernel does itself under memory pressure, done before the pressure. OpenVINO maps a model's weights and
    then repacks them into its own buffers, after which the mapped originals are dead weight in the RSS (BGE-M3
    fp32: 2.2 GB of them)."""
    names = tuple(str(p) for p in paths)
    folders = tuple(name + "/" for name in names)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            fields = [line.rstrip("\n").split(maxsplit=5) for line in maps]
        spans = [f[0] for f in fields if len(f) == 6 and (f[5] in names or f[5].startswith(folders))]
        for span in spans:
            start, end = (int(x, 16) for x in span.split("-"))
            if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_PAGEOUT) != 0:
                return 0
    except (OSError, AttributeError, ValueError):
        LOGGER.debug("cannot advise the kernel about the pages of %s", names)
        return 0
    return len(spans)


@contextmanager
def shedding_file_pages(paths: list[Path], every: float = 0.5) -> Iterator[None]:
    """Drop the resident pages of ``paths`` every ``every`` seconds while the block runs, and once at its end: a
    step that reads a large mapped file once (OpenVINO compiling a model) then peaks at what it keeps, not at the
    file's size (BGE-M3 fp32 compile: 3.1 -> 1.1 GB measured, no slower at 0.5 s)."""
    stop = threading.Event()

    def shed() -> None:
        while not stop.wait(every):
            drop_file_pages(paths)

    thread = threading.Thread(target=shed, name="m3search-shed-pages", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        drop_file_pages(paths)
