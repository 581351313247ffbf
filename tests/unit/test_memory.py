"""Dropping the resident pages of mapped files (what OpenVINO's mapped weights cost after they are repacked)."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from m3search.memory import drop_file_pages, shedding_file_pages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_PAGEOUT) is Linux's")
SIZE = 32 << 20


def resident_mb(path: Path) -> float:
    """This process's resident memory in mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            inside = len(head) == 6 and head[5] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total / 1024


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "weights.bin"
    np.arange(SIZE // 4, dtype=np.float32).tofile(path)
    return path


def test_dropped_pages_leave_the_rss_and_read_back_the_same(weights: Path) -> None:
    with weights.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        values = np.frombuffer(mapped, dtype=np.float32)
        before = float(values.sum(dtype=np.float64))  # touches every page
        assert resident_mb(weights) > 30
        assert drop_file_pages([weights]) == 1
        assert resident_mb(weights) < 2
        assert float(values.sum(dtype=np.float64)) == before  # read again from the file, unchanged
        del values


def test_a_folder_stands_for_its_files_and_unmapped_paths_are_ignored(weights: Path, tmp_path: Path) -> None:
    assert drop_file_pages([tmp_path / "nothing"]) == 0
    with weights.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        values = np.frombuffer(mapped, dtype=np.float32)
        values.sum()
        with shedding_file_pages([tmp_path], every=0.05):
            values[: SIZE // 8].sum()
        assert resident_mb(weights) < 2  # dropped at the end of the block
        del values
