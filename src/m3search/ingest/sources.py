"""Sources: documents read from files and directories, and what was skipped (each problem with its source and
reason; bad input never stops the run).

Text (:func:`read_sources`): ``.txt`` and ``.md`` (one document each, id = path relative to the argument), and
``.jsonl`` in the BEIR corpus format (``_id`` or ``id``, ``text``, optional ``title`` and ``metadata``).
Images (:func:`read_images`, for an image model's collection): one document per image file; id = the path relative
to the argument, text = the file name, metadata = width, height and format, content hash = SHA-256 of the bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3search.errors import DocumentError, ImageError, InputError
from m3search.models.encoders import images
from m3search.store.types import Document
from m3search.validation import check_json, check_string

SUFFIXES = (".txt", ".md", ".jsonl")
DEFAULT_MAX_BYTES = 10_000_000


@dataclass(frozen=True)
class Problem:
    """Why one file, line or document was skipped."""

    source: str
    reason: str


@dataclass
class Sources:
    """Documents read from paths, and what was skipped."""

    documents: list[Document] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def printable(text: str) -> str:
    """``text`` as it can be printed and stored: bytes that were not UTF-8 (a file name's surrogate escapes) shown
    as ``\\xe9``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def undecodable_name(path: Path) -> Problem | None:
    """A problem for a file whose name is not UTF-8 (a Latin-1 ``caf\\xe9.txt``): ids and sources are text."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return Problem(printable(str(path)), "file name is not valid UTF-8 (rename it: ids and sources are text)")
    return None


def check_text(source: str, raw: bytes, max_bytes: int) -> str:
    """The text of ``raw`` if it is a usable document, else :class:`DocumentError` saying why."""
    if len(raw) > max_bytes:
        error = DocumentError(source, f"larger than {max_bytes} bytes (--max-bytes)")
        error.set_message(f"{source}: larger than {max_bytes} bytes", " (max_bytes)", cli=" (--max-bytes)",
                          http=" (the server's limit)")
        raise error
    if b"\x00" in raw:
        raise DocumentError(source, "contains NUL bytes (binary file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(source, f"not valid UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise DocumentError(source, "empty or whitespace only")
    return text


def _jsonl(path: Path, raw: bytes, max_bytes: int, out: Sources) -> None:
    seen: set[str] = set()
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise DocumentError(where, "not a JSON object")
            _check_unicode(where, line, record)
            doc_id = record.get("_id", record.get("id"))
            if not isinstance(doc_id, str | int) or str(doc_id) == "":
                raise DocumentError(where, "no '_id' or 'id'")
            text = record.get("text")
            if not isinstance(text, str):
                raise DocumentError(where, "no 'text' string")
            text = check_text(where, text.encode("utf-8"), max_bytes)
            metadata = record.get("metadata") or {}
            if not isinstance(metadata, dict):
                raise DocumentError(where, "'metadata' must be an object")
            if str(doc_id) in seen:
                raise DocumentError(where, f"duplicate id '{doc_id}' in this file")
            title = record.get("title") if isinstance(record.get("title"), str) else ""
            check_document(Document(str(doc_id), text, str(path), title or "", metadata), where)
        except DocumentError as exc:
            out.problems.append(Problem(exc.source, exc.reason))
            continue
        except (ValueError, UnicodeDecodeError) as exc:
            out.problems.append(Problem(where, f"invalid JSON ({exc})"))
            continue
        seen.add(str(doc_id))
        out.documents.append(Document(str(doc_id), text, str(path), title or "", metadata))


def _check_unicode(where: str, line: bytes, record: dict[str, Any]) -> None:
    """:class:`DocumentError` for a JSON line whose escapes make a lone surrogate (``"\\ud800"``) anywhere in the
    record: not text that can be hashed or stored. Only lines with escapes are looked at twice."""
    if b"\\u" not in line:
        return
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise DocumentError(where, "contains a lone surrogate escape (\\ud800-\\udfff): not valid Unicode "
                                   "text") from None


def check_document(doc: Document, where: str | None = None) -> Document:
    """``doc`` if its id, title, text and metadata pass :mod:`m3search.validation` (no lone surrogate or NUL, bounded
    metadata), else :class:`DocumentError` naming it: nothing that could not be hashed, stored or read back."""
    source = where or f"document {doc.doc_id[:200]!r}"
    try:
        for field_name, value in (("id", doc.doc_id), ("title", doc.title), ("text", doc.text)):
            check_string(field_name, value)
        check_json("metadata", doc.metadata)
    except InputError as exc:
        raise DocumentError(source, str(exc)) from exc
    return doc


def _walk(paths: Sequence[Path], out: Sources, *, links: bool) -> Iterator[tuple[Path, Path]]:
    """Every file under ``paths`` (a directory recursively, in name order) with the argument it was found under
    (ids are relative to it). A missing argument or a file name that is not UTF-8 becomes a problem in ``out``.
    ``links``: also symbolic links that are not files (dangling, or to a directory), so they are reported."""
    for argument in paths:
        if not argument.exists():
            out.problems.append(Problem(printable(str(argument)), "no such file or directory"))
            continue
        if argument.is_dir():
            found = [(p, argument) for p in sorted(argument.rglob("*")) if p.is_file() or (links and p.is_symlink())]
        else:
            found = [(argument, argument.parent)]
        for path, root in found:
            bad_name = undecodable_name(path)
            if bad_name is None:
                yield path, root
            else:
                out.problems.append(bad_name)


def read_sources(paths: Sequence[Path], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Sources:
    """Documents from files and directories (recursively); problems for everything skipped."""
    out = Sources()
    for path, root in _walk(paths, out, links=True):
        if path.suffix.lower() not in SUFFIXES:
            out.problems.append(Problem(str(path), f"unsupported type (use {', '.join(SUFFIXES)})"))
            continue
        try:
            raw = path.read_bytes()
        except OSError as exc:
            out.problems.append(Problem(str(path), f"unreadable ({exc.strerror or exc})"))
            continue
        if path.suffix.lower() == ".jsonl":
            _jsonl(path, raw, max_bytes, out)
            continue
        try:
            text = check_text(str(path), raw, max_bytes)
        except DocumentError as exc:
            out.problems.append(Problem(exc.source, exc.reason))
            continue
        out.documents.append(Document(path.relative_to(root).as_posix(), text, str(path)))
    return _dedupe(out)


def _dedupe(sources: Sources) -> Sources:
    first: dict[str, Document] = {}
    for doc in sources.documents:
        if doc.doc_id in first:
            other = first[doc.doc_id].source
            sources.problems.append(Problem(doc.source, f"duplicate id '{doc.doc_id}' (also in {other})"))
        else:
            first[doc.doc_id] = doc
    sources.documents = list(first.values())
    return sources


def image_document(path: Path, root: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """One image file as a document (decoded once to check it), or :class:`ImageError` naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImageError(str(path), f"unreadable ({exc.strerror or exc})") from exc
    if len(raw) > max_bytes:
        raise ImageError(str(path), f"larger than {max_bytes} bytes (--max-bytes)")
    width, height, kind = images.probe(raw, str(path))
    metadata = {"width": width, "height": height, "format": kind}
    return Document(path.relative_to(root).as_posix(), path.name, str(path), "", metadata,
                    stored_hash=hashlib.sha256(raw).hexdigest())


def read_images(paths: Sequence[Path], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Sources:
    """Image documents from files and directories (recursively); problems for everything skipped."""
    out = Sources()
    seen: dict[str, str] = {}
    for path, root in _walk(paths, out, links=False):
        if not images.is_image_path(path):
            out.problems.append(Problem(str(path), f"not an image ({', '.join(images.IMAGE_SUFFIXES)}); "
                                                   f"text goes into a collection of a text model"))
            continue
        try:
            doc = image_document(path, root, max_bytes)
        except DocumentError as exc:
            out.problems.append(Problem(exc.source, exc.reason))
            continue
        if doc.doc_id in seen:
            out.problems.append(Problem(str(path), f"duplicate id '{doc.doc_id}' (also in {seen[doc.doc_id]})"))
            continue
        seen[doc.doc_id] = str(path)
        out.documents.append(doc)
    return out
