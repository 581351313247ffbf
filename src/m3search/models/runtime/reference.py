"""The fp32 reference of the fidelity sample, computed in a child process and kept beside the prepared model.

Every precision mode is checked against fp32 on the bundled held-out sample. Holding the fp32 model beside the
candidate would add the whole fp32 model to the memory of a first use (BGE-M3: 1.3 GB more), so the fp32 vectors
are computed once by a child process (``python -m m3search.models.runtime.reference JOB OUT``; it gets token ids and
loads no tokenizer) that exits before the candidate runs, written to ``fidelity-reference.npz`` in the prepared
model's folder (keyed by the sample, the outputs and the max length), and read back by every later check.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from m3search.errors import M3SearchError
from m3search.models.runtime.contract import SessionOwner
from m3search.types import Embedding, Output, SparseVector

FILE = "fidelity-reference.npz"
REFERENCE_BATCH_TOKENS = 512  # small batches keep the fp32 child's activations small (BGE-M3: 2.7 -> 1.9 GB)


def _key(texts: Sequence[str], outputs: Sequence[str], max_length: int) -> str:
    text = "\n".join([*outputs, str(max_length), *texts])
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def save(path: Path, key: str, embeddings: Sequence[Embedding]) -> None:
    """Write ``embeddings`` as plain arrays (no pickles), atomically."""
    arrays: dict[str, Any] = {
        "key": np.array(key), "tokens": np.array([e.tokens for e in embeddings]),
        "truncated": np.array([e.truncated for e in embeddings]),
    }
    if embeddings and all(e.dense is not None for e in embeddings):
        arrays["dense"] = np.stack([e.dense for e in embeddings])  # type: ignore[misc]
    if embeddings and all(e.sparse is not None for e in embeddings):
        sparse = [e.sparse for e in embeddings if e.sparse is not None]
        arrays.update(sparse_indices=np.concatenate([s.indices for s in sparse]),
                      sparse_values=np.concatenate([s.values for s in sparse]),
                      sparse_sizes=np.array([s.indices.size for s in sparse]))
    if embeddings and all(e.colbert is not None for e in embeddings):
        colbert = [e.colbert for e in embeddings if e.colbert is not None]
        arrays.update(colbert=np.concatenate(colbert), colbert_sizes=np.array([c.shape[0] for c in colbert]))
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load(path: Path, key: str | None = None) -> list[Embedding] | None:
    """The embeddings saved in ``path`` if its key matches (any key when None), else None."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if key is not None and str(data["key"]) != key:
                return None
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError):
        return None
    count = len(arrays["tokens"])
    split = {name: np.split(arrays[name], np.cumsum(arrays[f"{base}_sizes"])[:-1])
             for name, base in (("sparse_indices", "sparse"), ("sparse_values", "sparse"), ("colbert", "colbert"))
             if name in arrays}
    return [Embedding(
        tokens=int(arrays["tokens"][i]), truncated=bool(arrays["truncated"][i]),
        dense=arrays["dense"][i] if "dense" in arrays else None,
        sparse=SparseVector(split["sparse_indices"][i], split["sparse_values"][i]) if "sparse_indices" in split
        else None,
        colbert=split["colbert"][i] if "colbert" in split else None,
    ) for i in range(count)]


def fp32_reference(encoder: SessionOwner, texts: list[str], outputs: list[Output]) -> list[Embedding]:
    """The fp32 embeddings of ``texts``: from the cache beside the prepared model, else from a child process."""
    path = encoder.prepared.directory / FILE
    key = _key(texts, outputs, encoder.max_length)
    found = load(path, key)
    if found is not None:
        return found
    cls = type(encoder)
    kwargs = {**encoder.sibling_kwargs(), "batch_tokens": min(encoder.batch_tokens, REFERENCE_BATCH_TOKENS)}
    unused = getattr(encoder, "unused_token_ids", None)  # BGE-M3's special tokens: the child loads no tokenizer
    job = {"module": cls.__module__, "class": cls.__qualname__, "spec": encoder.spec, "prepared": encoder.prepared,
           "threads": encoder.threads, "kwargs": kwargs, "tokens": encoder.tokenize(texts), "outputs": outputs,
           "unused": unused() if unused is not None else None}
    with tempfile.TemporaryDirectory(prefix="m3search-reference-") as tmp:
        job_file, out = Path(tmp) / "job.pickle", Path(tmp) / "out.npz"
        job_file.write_bytes(pickle.dumps(job))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        done = subprocess.run([sys.executable, "-m", "m3search.models.runtime.reference", str(job_file), str(out)],
                              capture_output=True, text=True, env=env, check=False)
        embeddings = load(out) if done.returncode == 0 else None
        if embeddings is None:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise M3SearchError(f"the fp32 reference of the fidelity check failed ({reason}); run "
                                f"'m3search models prepare {encoder.spec.name} --force' or set "
                                f"M3SEARCH_FORCE_PRECISION=1 to skip the check")
    save(path, key, embeddings)
    return embeddings


def _child(job_file: Path, out: Path) -> None:
    job = pickle.loads(job_file.read_bytes())  # our own file, written by the parent a moment ago
    cls = getattr(importlib.import_module(job["module"]), job["class"])
    prepared = job["prepared"]
    encoder = cls(job["spec"], lambda: prepared, backend="onnxruntime", precision="fp32", threads=job["threads"],
                  **job["kwargs"])
    if job["unused"] is not None:
        encoder._unused = job["unused"]
    save(out, "", encoder.encode_tokens(job["tokens"], job["outputs"]))


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
