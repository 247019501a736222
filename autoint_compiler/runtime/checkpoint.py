"""Checkpoints of compiled AutoInt networks (safetensors, atomic writes).

The integral network and the grad network share their parameter tensors, so a checkpoint holds one
state dict: the integral module's. Loading it restores both networks.

File layout: a plain ``.safetensors`` file (readable with ``safetensors.safe_open``) whose string
metadata carries

* ``format``          -- always ``"autoint-checkpoint"``
* ``format_version``  -- :data:`FORMAT_VERSION`
* ``spec_hash``       -- ``net.spec_hash`` (the architecture: Φ's IR and the integration variables;
  not the spec's ``name``, ``init``, ``seed``, ``dtype`` or backend, so a renamed spec loads its checkpoints)
* ``spec_name``       -- ``net.name``
* ``torch_version``   -- the torch that wrote it (informational)
* any ``extra`` string pairs the caller passes (step count, loss, ...).

Writes are atomic (:mod:`autoint_compiler.runtime.fileio`): the bytes go to a temporary file in the
destination directory, which is flushed, fsync'ed and then ``os.replace``'d over the destination (and
the directory is fsync'ed where the OS allows it). A crash or an exception at any point leaves either
the old file or the new one, never a truncated mix, and no stray temporary file. A symlink is written
through (its target replaced, the link kept); files get the umask's permissions.

Reads are bounded: only a regular file is read (never a FIFO or a device); the header is read and
checked first, then exactly the bytes it declares, which must be no more than a bound derived from
the network (a file longer or shorter than its header declares is refused before its data is read).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from . import fileio

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "read_extra_tensors",
    "atomic_write_bytes",
    "TRAIN_PREFIX",
]

FORMAT = "autoint-checkpoint"
FORMAT_VERSION = "1"
_RESERVED = ("format", "format_version", "spec_hash", "spec_name", "torch_version")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the network it is loaded into."""


def _state_tensors(net: Any) -> dict[str, torch.Tensor]:
    module = net.integral if hasattr(net, "integral") else net
    state = module.state_dict()
    # safetensors refuses tensors that share storage and non-contiguous ones: clone to own memory.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: :func:`autoint_compiler.runtime.fileio.atomic_write_bytes`
    (temp file in the same folder, fsync, rename; through a symlink; umask-respecting mode)."""
    return fileio.atomic_write_bytes(path, data)


def save_checkpoint(
    path: str | os.PathLike,
    net: Any,
    *,
    extra: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Save ``net``'s shared parameters to ``path`` (safetensors), atomically.

    ``net`` is the object returned by ``autoint_compiler.compile`` (it needs ``.integral``,
    ``.spec_hash`` and ``.name``). ``extra`` adds string metadata (values are ``str()``-ed); it may
    not override the reserved keys. ``extra_tensors`` (training state: optimizer moments, RNG
    states) are stored under the prefix :data:`TRAIN_PREFIX`; :func:`load_checkpoint` ignores them
    and :func:`read_extra_tensors` returns them. A symlink at ``path`` is written through; a
    directory, FIFO or device there is refused with :class:`CheckpointError`.
    """
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec_hash": str(net.spec_hash),
        "spec_name": str(getattr(net, "name", "")),
        "torch_version": torch.__version__,
    }
    for key, value in (extra or {}).items():
        if key in _RESERVED:
            raise ValueError(f"extra metadata may not override reserved key {key!r}")
        metadata[str(key)] = str(value)
    tensors = _state_tensors(net)
    for key, value in (extra_tensors or {}).items():
        tensors[TRAIN_PREFIX + key] = value.detach().to("cpu").contiguous().clone()
    data = _st_save(tensors, metadata=metadata)
    try:
        return atomic_write_bytes(path, data)
    except fileio.UnsafeFileError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None


#: prefix of the training-state tensors in a run checkpoint (ignored when loading the network)
TRAIN_PREFIX = "__train__/"
#: the largest checkpoint file read at all (a bound, so /dev/zero-like inputs cannot exhaust memory)
MAX_CHECKPOINT_BYTES = 64 * 2**30
#: the largest safetensors header read (safetensors itself refuses more than 100 MB)
MAX_HEADER_BYTES = 100_000_000


def _size_bound(net: Any) -> int:
    """A generous bound on a checkpoint of ``net``: float64 parameters, twice over (Adam moments),
    plus slack for headers, metadata and RNG states."""
    if net is None:
        return MAX_CHECKPOINT_BYTES
    module = net.integral if hasattr(net, "integral") else net
    n = sum(t.numel() for t in module.state_dict().values())
    return min(MAX_CHECKPOINT_BYTES, 8 * 4 * n + 64 * 2**20)


#: bytes per element of the safetensors dtypes
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


def _header(
    f: fileio.RegularFile, path: Path, limit: int, whole: bool = True
) -> tuple[bytes, dict[str, Any], dict[str, str], int]:
    """Read and check the header of an open safetensors file: ``(head, tensors, metadata, data_bytes)``,
    ``head`` its bytes (length prefix included), ``tensors`` name -> entry, ``data_bytes`` what the entries declare.
    Refuses (:class:`CheckpointError`) a header that is not a JSON object of well-formed entries, a
    declared size over ``limit``, and a file whose size is not what its header declares (truncated,
    or padded): nothing past the header is read before that. ``whole=False`` checks the header alone
    (the file's size is not compared with it)."""
    if whole and f.size > limit:
        raise CheckpointError(f"checkpoint {path}: {f.size} bytes, larger than the limit of {limit} bytes")
    head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(f"checkpoint {path}: file too short to be safetensors ({len(head)} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n > min(MAX_HEADER_BYTES, limit) or n < 2:
        raise CheckpointError(f"checkpoint {path}: corrupt safetensors header (length {n})")
    if whole and 8 + n > f.size:
        raise CheckpointError(f"checkpoint {path}: truncated ({f.size} bytes, its header alone declares {8 + n})")
    text = f.read(n)
    try:
        header = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path}: corrupt safetensors header (not JSON)") from exc
    if not isinstance(header, dict):
        kind = type(header).__name__.replace("NoneType", "null")
        raise CheckpointError(f"checkpoint {path}: corrupt safetensors header (a JSON {kind}, expected an object)")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"checkpoint {path}: corrupt safetensors metadata (expected strings)")
    spans = []
    for name, entry in header.items():
        ok = isinstance(entry, dict) and entry.get("dtype") in _DTYPE_BYTES
        shape, offsets = (entry.get("shape"), entry.get("data_offsets")) if ok else (None, None)
        ok = ok and isinstance(shape, list) and all(type(d) is int and 0 <= d < 2**48 for d in shape)
        ok = ok and isinstance(offsets, list) and len(offsets) == 2
        ok = ok and all(type(o) is int and 0 <= o < 2**62 for o in offsets) and offsets[0] <= offsets[1]
        if ok:
            numel = 1
            for d in shape:
                numel *= d
            ok = offsets[1] - offsets[0] == numel * _DTYPE_BYTES[entry["dtype"]]
        if not ok:
            raise CheckpointError(f"checkpoint {path}: corrupt safetensors header (tensor {name[:60]!r})")
        spans.append(offsets)
    data = max((b for _, b in spans), default=0)
    if not whole:
        return head + text, header, dict(meta), data
    if 8 + n + data > limit:
        raise CheckpointError(
            f"checkpoint {path}: declares {8 + n + data} bytes, more than a checkpoint of this network can "
            f"hold (at most {limit})"
        )
    if f.size < 8 + n + data:
        raise CheckpointError(f"checkpoint {path}: truncated ({f.size} bytes, its header declares {8 + n + data})")
    if f.size > 8 + n + data:
        raise CheckpointError(
            f"checkpoint {path}: {f.size - 8 - n - data} bytes after the data its header declares (corrupt)"
        )
    return head + text, header, dict(meta), data


class _Guard:
    """Turns the OS errors of opening and reading ``path`` into one-line :class:`CheckpointError`s."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is None or issubclass(kind, CheckpointError):
            return False
        if issubclass(kind, FileNotFoundError):
            raise CheckpointError(f"checkpoint {self.path}: file not found") from None
        if issubclass(kind, fileio.UnsafeFileError):
            raise CheckpointError(f"checkpoint {exc}") from None
        if issubclass(kind, OSError):
            raise CheckpointError(f"checkpoint {self.path}: cannot read it ({exc.strerror or exc})") from None
        return False


def _read(path: Path, limit: int = MAX_CHECKPOINT_BYTES) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of ``path``, reading no more than its header declares, and that no more
    than ``limit`` bytes (see :func:`_header`)."""
    with _Guard(path), fileio.open_regular(path) as f:
        head, _, metadata, data = _header(f, path, limit)
        body = f.read(data)
    if len(body) != data:
        raise CheckpointError(f"checkpoint {path}: truncated while read")
    try:
        tensors = _st_load(head + body)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({exc})") from exc
    return tensors, metadata


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a checkpoint, without loading its tensors: only the header is read, and
    checked (a JSON object of well-formed tensor entries, else :class:`CheckpointError`)."""
    path = Path(path)
    with _Guard(path), fileio.open_regular(path) as f:
        return _header(f, path, MAX_CHECKPOINT_BYTES, whole=False)[2]


def checkpoint_problem(path: str | os.PathLike, limit: int = MAX_CHECKPOINT_BYTES) -> str | None:
    """Why ``path`` does not read back as a checkpoint (its header, or its size against what the header
    declares), or ``None`` if it may. Reads only the header."""
    path = Path(path)
    try:
        with _Guard(path), fileio.open_regular(path) as f:
            _header(f, path, limit)
    except CheckpointError as exc:
        return str(exc)
    return None


def read_extra_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``extra_tensors`` a checkpoint was saved with (without :data:`TRAIN_PREFIX`)."""
    path = Path(path)
    tensors, _ = _read(path)
    return {k[len(TRAIN_PREFIX) :]: v for k, v in tensors.items() if k.startswith(TRAIN_PREFIX)}


def accepted_hashes(net: Any) -> set[str]:
    """The spec hashes a checkpoint of ``net`` may carry: ``net.spec_hash`` and, for files written
    before the hash left out the network's name, the older form (``Program.legacy_hash``)."""
    out = {str(net.spec_hash)}
    legacy = getattr(getattr(net, "program", None), "legacy_hash", None)
    if legacy:
        out.add(str(legacy))
    return out


def load_checkpoint(
    path: str | os.PathLike, net: Any, *, check_hash: bool = True, max_bytes: int | None = None
) -> dict[str, str]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``net`` (in place).

    Raises :class:`CheckpointError` when the file is missing, unreadable, not a regular file (a
    FIFO, a device such as ``/dev/zero``) or larger than a bound derived from the network, was not
    written by this module, has an unsupported format version, was saved from a network whose spec
    hash differs from ``net.spec_hash`` (unless ``check_hash=False``), or whose tensors do not match
    the network's parameters (names, shapes, or a non-floating dtype: int, bool and complex tensors
    are refused). Nothing is loaded unless everything fits. ``max_bytes`` replaces the size bound
    (a run checkpoint with its training state is larger). Returns the checkpoint's metadata.
    """
    path = Path(path)
    tensors, metadata = _read(path, _size_bound(net) if max_bytes is None else int(max_bytes))
    model = check_fits(path, tensors, metadata, net, check_hash=check_hash)
    copy_into(net, model)
    return metadata


def check_fits(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str], net: Any, *, check_hash: bool = True
) -> dict[str, torch.Tensor]:
    """The checks of :func:`load_checkpoint` on tensors already read: returns the network's tensors
    (those without :data:`TRAIN_PREFIX`), or raises :class:`CheckpointError`."""
    tensors = {k: v for k, v in tensors.items() if not k.startswith(TRAIN_PREFIX)}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not an autoint checkpoint (format={metadata.get('format')!r})")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {version!r} is not supported "
            f"(this autoint_compiler reads version {FORMAT_VERSION!r})"
        )
    file_hash = metadata.get("spec_hash", "")
    if check_hash and file_hash not in accepted_hashes(net):
        raise CheckpointError(
            f"checkpoint {path}: spec hash mismatch: the file was saved from spec "
            f"{metadata.get('spec_name', '?')!r} with hash {file_hash}, but the network "
            f"{getattr(net, 'name', '?')!r} has spec hash {net.spec_hash} (a different architecture; "
            "load_checkpoint(..., check_hash=False) loads it anyway if the tensors fit)"
        )
    module = net.integral if hasattr(net, "integral") else net
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path}: tensors do not match the network "
            f"(missing: {missing[:5]}, unexpected: {unexpected[:5]})"
        )
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"checkpoint {path}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"the network expects {tuple(own[key].shape)}"
            )
        if not value.is_floating_point():
            raise CheckpointError(
                f"checkpoint {path}: tensor {key!r} has dtype {str(value.dtype).replace('torch.', '')}, "
                f"expected a floating-point tensor"
            )
    return tensors


def copy_into(net: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy checked tensors (:func:`check_fits`) into ``net``'s state, in place."""
    module = net.integral if hasattr(net, "integral") else net
    own = module.state_dict()
    with torch.no_grad():
        for key, value in tensors.items():
            # copy_ keeps the parameter objects (shared with the grad network) and their device.
            own[key].copy_(value.to(dtype=own[key].dtype))
