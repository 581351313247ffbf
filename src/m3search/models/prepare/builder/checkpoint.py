"""Reading a checkpoint's tensors without torch: safetensors tensor by tensor, ``.pt`` heads by a restricted reader.

Tensors are read one at a time (or a block of rows at a time, for the large embedding tables), so building a
graph never holds the whole model in memory. ``.pt`` files (BGE-M3's ``colbert_linear.pt`` / ``sparse_linear.pt``)
are torch's zip format: a pickle that names storages plus one raw file per storage. The pickle is read by an
unpickler that knows only the few names a plain state dict uses and builds numpy arrays; anything else (arbitrary
objects, code) is refused, so a hostile file cannot run code.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from m3search.errors import ModelFormatError

_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
                       "I64": np.int64, "I32": np.int32}
_TORCH_STORAGES = {"FloatStorage": np.float32, "HalfStorage": np.float16, "DoubleStorage": np.float64,
                   "BFloat16Storage": np.uint16, "LongStorage": np.int64}


def _to_float32(array: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":  # bfloat16 is the upper half of a float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    return np.asarray(array, dtype=np.float32)


class SafeTensors:
    """One ``.safetensors`` file; tensors are read one at a time (file reads, so the process never maps the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY)
            (size,) = struct.unpack("<Q", os.pread(self._fd, 8, 0))
            header = json.loads(os.pread(self._fd, size, 8))
        except (OSError, ValueError, struct.error) as exc:
            raise ModelFormatError(f"{path} is not a readable safetensors file ({exc}); copy it again") from exc
        header.pop("__metadata__", None)
        self._start = 8 + size
        self._header: dict[str, Any] = header

    def names(self) -> list[str]:
        return list(self._header)

    def close(self) -> None:
        os.close(self._fd)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self._header[name]["shape"])

    def _read(self, name: str, first: int = 0, count: int | None = None) -> np.ndarray:
        """Rows ``first`` .. ``first + count`` of tensor ``name`` as float32, read (not mapped) from the file."""
        entry = self._header[name]
        dtype = str(entry["dtype"])
        if dtype not in _SAFETENSORS_DTYPES:
            raise ModelFormatError(f"{self.path}: tensor {name} has dtype {dtype}, which m3search cannot read")
        shape = self.shape(name)
        item = np.dtype(_SAFETENSORS_DTYPES[dtype])
        row = int(np.prod(shape[1:], dtype=np.int64)) if shape else 1
        rows = (shape[0] if shape else 1) - first if count is None else count
        begin = self._start + int(entry["data_offsets"][0]) + first * row * item.itemsize
        data = os.pread(self._fd, rows * row * item.itemsize, begin)
        if len(data) != rows * row * item.itemsize:
            raise ModelFormatError(f"{self.path} is truncated (tensor {name}); copy it again")
        flat = np.frombuffer(data, dtype=item)
        return _to_float32(flat, dtype).reshape((rows, *shape[1:]) if shape else ())

    def get(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a float32 array."""
        return np.array(self._read(name), dtype=np.float32)

    def rows(self, name: str, block: int) -> Iterator[np.ndarray]:
        """The rows of a 2-D tensor, ``block`` rows at a time."""
        total = self.shape(name)[0]
        for start in range(0, total, block):
            yield self._read(name, start, min(block, total - start))


class _Storage:
    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a plain tensor state dict; every other global is refused."""

    def __init__(self, handle: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(handle)
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _TORCH_STORAGES:
            return _Storage(_TORCH_STORAGES[name])
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> Any:
        kind, storage, key, _location, _numel = pid
        if kind != "storage" or not isinstance(storage, _Storage):
            raise pickle.UnpicklingError("unexpected persistent object in a weights file")
        data = self._archive.read(f"{self._prefix}data/{key}")
        return np.frombuffer(data, dtype=storage.dtype), storage.dtype is np.uint16


def _rebuild_tensor(storage: tuple[np.ndarray, bool], offset: int, size: tuple[int, ...],
                    stride: tuple[int, ...], *_: Any) -> np.ndarray:
    flat, bf16 = storage
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * itemsize for s in stride])
    return _to_float32(view, "BF16") if bf16 else np.array(view, dtype=np.float32)


def read_torch_state_dict(path: Path) -> dict[str, np.ndarray]:
    """A ``torch.save``'d state dict of tensors as float32 numpy arrays, without torch and without running code.

    Raises:
        ModelFormatError: not torch's zip format (the legacy format needs the ``export`` extra), or the pickle
            names anything but tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pickles) != 1:
                raise ModelFormatError(f"{path} holds no single data.pkl")
            prefix = pickles[0][: -len("data.pkl")]
            with archive.open(pickles[0]) as handle:
                state = _StateDictUnpickler(handle, archive, prefix).load()
    except zipfile.BadZipFile as exc:
        raise ModelFormatError(
            f"{path} is not in torch's zip format; convert it to safetensors, or install the 'export' extra "
            f"(pip install 'm3search[export]') to read it with torch") from exc
    except (pickle.UnpicklingError, ValueError, KeyError, TypeError, EOFError, OSError) as exc:
        raise ModelFormatError(f"cannot read {path} as a tensor state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise ModelFormatError(f"{path} is not a state dict of tensors")
    return {str(k): v for k, v in state.items()}


class Checkpoint:
    """The weights of a Hugging Face model directory, by their names without the architecture prefix.

    ``bert.encoder.layer.0...`` and ``encoder.layer.0...`` are both found as ``encoder.layer.0...``; old
    ``LayerNorm.gamma``/``beta`` names are found as ``weight``/``bias``. A given ``prefix`` (CLIP: ``""``, its
    names say which tower) replaces the search for the BERT-like one.
    """

    def __init__(self, directory: Path, prefix: str | None = None) -> None:
        files = sorted(directory.glob("*.safetensors"))
        files = [f for f in files if f.stem not in ("colbert_linear", "sparse_linear")]
        if not files:
            raise ModelFormatError(f"{directory} holds no model.safetensors")
        self.directory = directory
        self._files = [SafeTensors(f) for f in files]
        self._names: dict[str, tuple[SafeTensors, str]] = {}
        for file in self._files:
            for key in file.names():
                self._names[key] = (file, key)
        self.prefix = self._find_prefix() if prefix is None else prefix

    def close(self) -> None:
        for file in self._files:
            file.close()

    def _find_prefix(self) -> str:
        for key in self._names:
            if key.endswith("embeddings.word_embeddings.weight"):
                return key[: -len("embeddings.word_embeddings.weight")]
        raise ModelFormatError(f"{self.directory}: no embeddings.word_embeddings.weight: not a BERT-like model")

    def _lookup(self, name: str, *, prefixed: bool = True) -> tuple[SafeTensors, str]:
        full = self.prefix + name if prefixed else name
        candidates = [full]
        if full.endswith("LayerNorm.weight"):
            candidates.append(full[: -len("weight")] + "gamma")
        if full.endswith("LayerNorm.bias"):
            candidates.append(full[: -len("bias")] + "beta")
        for candidate in candidates:
            if candidate in self._names:
                return self._names[candidate]
        raise ModelFormatError(f"{self.directory}: the checkpoint has no tensor {full}")

    def has(self, name: str, *, prefixed: bool = True) -> bool:
        try:
            self._lookup(name, prefixed=prefixed)
        except ModelFormatError:
            return False
        return True

    def get(self, name: str, *, prefixed: bool = True) -> np.ndarray:
        file, key = self._lookup(name, prefixed=prefixed)
        return file.get(key)

    def shape(self, name: str, *, prefixed: bool = True) -> tuple[int, ...]:
        file, key = self._lookup(name, prefixed=prefixed)
        return file.shape(key)

    def rows(self, name: str, block: int = 8192) -> Iterator[np.ndarray]:
        file, key = self._lookup(name)
        return file.rows(key, block)


def read_head(directory: Path, stem: str) -> dict[str, np.ndarray]:
    """A BGE-M3 head (``STEM.safetensors`` or ``STEM.pt``) as float32 arrays."""
    safe, pickled = directory / f"{stem}.safetensors", directory / f"{stem}.pt"
    if safe.is_file():
        file = SafeTensors(safe)
        try:
            return {key: file.get(key) for key in file.names()}
        finally:
            file.close()
    if pickled.is_file():
        return read_torch_state_dict(pickled)
    raise ModelFormatError(
        f"{directory} lacks {stem}.pt (BGE-M3 needs colbert_linear.pt and sparse_linear.pt beside the model); "
        f"copy the complete BAAI/bge-m3 directory")
