"""Giving memory back to the system (glibc): large allocations in their own mappings, and trimming the heap.

Both are no-ops on other C libraries.
"""

from __future__ import annotations

import ctypes
import logging

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
