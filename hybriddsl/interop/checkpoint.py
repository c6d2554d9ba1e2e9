"""Hugging Face model folders on disk: ``config.json`` and safetensors (or PyTorch) weights, read memory-mapped.

A folder holds ``config.json`` and either ``model.safetensors`` or ``model.safetensors.index.json`` (a
``weight_map`` from tensor name to shard file), or, as older checkpoints do, ``pytorch_model.bin`` or
``pytorch_model.bin.index.json`` with its shards. A ``.bin`` file is read with ``torch.load(weights_only=True,
mmap=True)``: torch's restricted unpickler, which builds tensors and plain containers and refuses anything else
(a pickle that would import or call code is a HybFileError, never run); the tensors are views of a private
memory map of the file. safetensors files win when a folder has both. :func:`read_config` parses and checks the config;
:class:`Checkpoint` lists the tensors (name, dtype, shape, file) from the safetensors headers without reading
any data, and hands out each tensor as a zero-copy view of a private memory map (``mmap.ACCESS_COPY``: pages
are read on first touch, writes never reach the file). A tensor that is only reshaped and renamed goes into the
model as that view (``load_state_dict(assign=True)``), so importing costs about one copy of the checkpoint;
pages of tensors that were turned into new tensors (a concatenation, a dtype cast) are handed back with
``madvise(MADV_DONTNEED)``.

Every problem is a :class:`~hybriddsl.errors.HybFileError` naming the file and the field or tensor.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hybriddsl.errors import HybFileError, Span

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"

# safetensors dtype codes -> torch dtypes (the floating ones a checkpoint may hold, and integers to reject)
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
CODES = {v: k for k, v in DTYPES.items()}


def _err(msg: str, file: str | os.PathLike) -> HybFileError:
    return HybFileError(msg, Span(0, 0, 1, str(file)))


def _decode_special(obj: dict) -> Any:
    # transformers writes non-finite floats as {"__float__": "Infinity"} (JSON has no inf/nan)
    if set(obj) == {"__float__"} and isinstance(obj["__float__"], str):
        return float(obj["__float__"].replace("Infinity", "inf"))
    return obj


def _check_numbers(v: Any, where: str, path: Path) -> None:
    """NaN anywhere in the config is a mistake (infinity is allowed: transformers writes time_step_limit so)."""
    if isinstance(v, float) and math.isnan(v):
        raise _err(f"field '{where}' is NaN", path)
    if isinstance(v, dict):
        for k, x in v.items():
            _check_numbers(x, f"{where}.{k}" if where else str(k), path)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _check_numbers(x, f"{where}[{i}]", path)


def read_json(path: Path) -> Any:
    """A JSON file, or HybFileError with the file, line and column of a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _err(f"no such file: {path}", path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise _err(f"cannot read {path}: {getattr(e, 'strerror', None) or e}", path) from None
    try:
        return json.loads(text, object_hook=_decode_special)
    except json.JSONDecodeError as e:
        raise HybFileError(f"{path} is not JSON: {e.msg}", Span(e.lineno, e.colno, 1, str(path)), text) from None


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """``folder/config.json`` (or the file itself when ``folder`` is a .json file) as a checked dict."""
    p = Path(folder)
    path = p if p.is_file() else p / CONFIG
    if not p.exists():
        raise _err(f"no such folder: {p}", p)
    if p.is_dir() and not path.is_file():
        raise _err(f"{p} has no {CONFIG}: a Hugging Face model folder holds config.json and its weights", p)
    cfg = read_json(path)
    if not isinstance(cfg, dict):
        raise _err(f"a config is a JSON object, got {type(cfg).__name__}", path)
    _check_numbers(cfg, "", path)
    return cfg


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies: file, dtype, shape and byte range of its data in the file."""

    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


def _header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of one safetensors file, from its JSON header (8-byte little-endian length, then JSON)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
            if n < 2 or 8 + n > size:
                raise _err(f"{path} is not a safetensors file (bad header length)", path)
            head = json.loads(f.read(n))
    except FileNotFoundError:
        raise _err(f"no such file: {path}", path) from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise _err(f"{path} is not a safetensors file ({type(e).__name__})", path) from None
    out = {}
    base = 8 + n
    for name, d in head.items():
        if name == "__metadata__":
            continue
        code = d.get("dtype")
        if code not in DTYPES:
            raise _err(f"tensor '{name}' has dtype {code}, which a checkpoint cannot hold here", path)
        s, e = d["data_offsets"]
        info = TensorInfo(name, path, DTYPES[code], tuple(d["shape"]), base + s, base + e)
        want = math.prod(info.shape) * torch.empty((), dtype=info.dtype).element_size()
        if e - s != want or base + e > size:
            raise _err(f"tensor '{name}' has {e - s} bytes of data, its shape needs {want}", path)
        out[name] = info
    return out


class Checkpoint:
    """The safetensors weights of a model folder, opened lazily. ``infos``: name -> :class:`TensorInfo`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.infos: dict[str, TensorInfo] = {}
        self._bin: dict[str, torch.Tensor] = {}  # tensors of .bin files (torch.load already mapped them)
        for index_name, single_name, read in ((INDEX, SINGLE, _header), (BIN_INDEX, BIN, self._bin_tensors)):
            index, single = self.folder / index_name, self.folder / single_name
            if index.is_file():
                self.index_file = index  # the file that errors about the whole set name
                self._read_index(index, read)
                break
            if single.is_file():
                self.index_file = single
                self.infos = read(single)
                break
        else:
            raise _err(
                f"{self.folder} has no {SINGLE}, {INDEX}, {BIN} or {BIN_INDEX} (the weights of a model folder)",
                self.folder,
            )
        self._maps: dict[Path, mmap.mmap] = {}

    def _read_index(self, index: Path, read) -> None:
        idx = read_json(index)
        wmap = idx.get("weight_map") if isinstance(idx, dict) else None
        if not isinstance(wmap, dict):
            raise _err(f"{index} has no 'weight_map'", index)
        files: dict[str, list[str]] = {}
        for name, fname in wmap.items():
            if not isinstance(fname, str) or not fname or Path(fname).name != fname:
                raise _err(f"{index} puts tensor '{name}' in {fname!r}, which is not a file name in the folder", index)
            files.setdefault(fname, []).append(name)
        for fname, names in files.items():
            path = self.folder / fname
            if not path.is_file():
                raise _err(f"{index} names shard '{fname}' (for tensor '{names[0]}'), which does not exist", path)
            head = read(path)
            for name in names:
                if name not in head:
                    raise _err(f"{index} puts tensor '{name}' in {fname}, which does not hold it", path)
                self.infos[name] = head[name]

    def _bin_tensors(self, path: Path) -> dict[str, TensorInfo]:
        """The tensors of one ``torch.save`` file (a flat dict name -> tensor), memory-mapped, no code run."""
        import pickle
        import zipfile

        try:
            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as e:  # the restricted unpickler refused a global or an opcode
            # torch's message leads with advice to turn the check off; keep only the line that says what it met
            lines = [x.strip() for x in str(e).splitlines() if x.strip()]
            why = next(
                (x for x in lines if "GLOBAL" in x or "Unsupported" in x), "a pickle the restricted loader refuses"
            )
            raise _err(
                f"{path} is refused: it is not plain tensors ({why}); a checkpoint's pickle may not run code", path
            ) from None
        except FileNotFoundError:
            raise _err(f"no such file: {path}", path) from None
        except (RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
            why = str(e).splitlines()[0].strip() if str(e).strip() else type(e).__name__
            if "mmap can only be used" in why:
                why = "an old, non-zip torch.save format; re-save it with a current torch.save"
            raise _err(f"{path} is not a PyTorch checkpoint torch.load can map ({why})", path) from None
        if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict) and len(sd) == 1:
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise _err(f"{path} holds a {type(sd).__name__}, not a dict of tensors", path)
        out = {}
        for name, t in sd.items():
            if not isinstance(name, str) or not isinstance(t, torch.Tensor):
                raise _err(f"{path}: entry {name!r} is a {type(t).__name__}, not a tensor", path)
            if t.dtype not in CODES:
                raise _err(f"tensor '{name}' has dtype {t.dtype}, which a checkpoint cannot hold here", path)
            self._bin[name] = t
            nbytes = t.numel() * t.element_size()
            out[name] = TensorInfo(name, path, t.dtype, tuple(t.shape), 0, nbytes)
        return out

    def _map(self, path: Path) -> mmap.mmap:
        if path not in self._maps:
            with open(path, "rb") as f:
                self._maps[path] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        return self._maps[path]

    def _view(self, file: Path, dtype: torch.dtype, start: int, end: int) -> torch.Tensor:
        import warnings

        n = (end - start) // torch.empty((), dtype=dtype).element_size()
        with warnings.catch_warnings():  # an ACCESS_COPY map is writable: no read-only warning is due anyway
            warnings.simplefilter("ignore")
            return torch.frombuffer(self._map(file), dtype=dtype, count=n, offset=start)

    def tensor(self, name: str) -> torch.Tensor:
        """A zero-copy view of the tensor (memory-mapped, copy-on-write)."""
        if name in self._bin:
            return self._bin[name]
        info = self.infos[name]
        if info.end == info.start:
            return torch.empty(info.shape, dtype=info.dtype)
        return self._view(info.file, info.dtype, info.start, info.end).view(info.shape)

    def span(self, names: tuple[str, ...] | list[str]) -> torch.Tensor | None:
        """One flat zero-copy view of tensors ``names`` when they lie back to back, in this order, in one file
        with one dtype (their concatenation along dim 0, flattened); else None."""
        if any(n in self._bin for n in names):
            return None
        infos = [self.infos[n] for n in names]
        first = infos[0]
        for a, b in zip(infos, infos[1:]):
            if b.file != first.file or b.dtype != first.dtype or b.start != a.end:
                return None
        if first.start == infos[-1].end:
            return None
        return self._view(first.file, first.dtype, first.start, infos[-1].end)

    def release(self, name: str) -> None:
        """Drop the resident pages wholly inside this tensor's bytes (after its data was copied elsewhere)."""
        info = self.infos[name]
        if not hasattr(mmap, "MADV_DONTNEED") or info.file not in self._maps:
            return
        page = mmap.PAGESIZE
        s = -(-info.start // page) * page
        e = info.end // page * page
        if e > s:
            self._maps[info.file].madvise(mmap.MADV_DONTNEED, s, e - s)

    def nbytes(self) -> int:
        return sum(i.end - i.start for i in self.infos.values())
