"""Sources: text and image documents read from files and directories through one walk (ingest/sources.py)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from m3search.ingest.sources import Sources, read_images, read_sources
from tests.references import import_or_skip

PIL = import_or_skip("PIL.Image", "the 'images' extra (Pillow) is not installed")


def _png() -> bytes:
    buffer = io.BytesIO()
    PIL.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _folder(tmp_path: Path) -> Path:
    """Text and images side by side, a file name that is not UTF-8 and a dangling symbolic link."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("second document", encoding="utf-8")
    (folder / "sub" / "a.md").write_text("first document", encoding="utf-8")
    (folder / "pic.png").write_bytes(_png())
    (folder / "sub" / "pic2.png").write_bytes(_png())
    (folder / os.fsdecode(b"caf\xe9.txt")).write_text("latin-1 name", encoding="utf-8")
    (folder / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    return folder


def _problems(sources: Sources, root: Path) -> list[tuple[str, str]]:
    return [(p.source.replace(str(root) + "/", ""), p.reason.split(" (")[0]) for p in sources.problems]


def test_text_sources_walk_in_name_order_and_report_every_skip(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    sources = read_sources([folder, tmp_path / "missing", folder / "b.txt"])
    assert [(d.doc_id, d.text) for d in sources.documents] == [("b.txt", "second document"),
                                                               ("sub/a.md", "first document")]
    assert _problems(sources, folder) == [
        ("caf\\xe9.txt", "file name is not valid UTF-8"),
        ("gone.txt", "unreadable"),  # a dangling link is reported, not passed over
        ("pic.png", "unsupported type"),
        ("sub/pic2.png", "unsupported type"),
        (str(tmp_path / "missing"), "no such file or directory"),
        ("b.txt", "duplicate id 'b.txt'"),  # the file argument: its id is its name
    ]


def test_image_sources_walk_the_same_way_and_pass_over_dangling_links(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    sources = read_images([folder, tmp_path / "missing", folder / "pic.png"])
    assert [(d.doc_id, d.text, d.metadata["format"]) for d in sources.documents] == [
        ("pic.png", "pic.png", "png"), ("sub/pic2.png", "pic2.png", "png")]
    assert _problems(sources, folder) == [
        ("b.txt", "not an image"),
        ("caf\\xe9.txt", "file name is not valid UTF-8"),
        ("sub/a.md", "not an image"),
        (str(tmp_path / "missing"), "no such file or directory"),
        ("pic.png", "duplicate id 'pic.png'"),
    ]
