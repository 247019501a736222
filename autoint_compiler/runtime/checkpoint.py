"""Checkpoints of compiled AutoInt networks (safetensors, atomic writes).

The integral network and the grad network share their parameter tensors, so a checkpoint holds one
state dict: the integral module's. Loading it restores both networks.

File layout: a plain ``.safetensors`` file (readable with ``safetensors.safe_open``) whose string
metadata carries

* ``format``          -- always ``"autoint-checkpoint"``
* ``format_version``  -- :data:`FORMAT_VERSION`
* ``spec_hash``       -- ``net.spec_hash`` (sha256 of the canonical validated spec)
* ``spec_name``       -- ``net.name``
* ``torch_version``   -- the torch that wrote it (informational)
* any ``extra`` string pairs the caller passes (step count, loss, ...).

Writes are atomic (:mod:`autoint_compiler.runtime.fileio`): the bytes go to a temporary file in the
destination directory, which is flushed, fsync'ed and then ``os.replace``'d over the destination (and
the directory is fsync'ed where the OS allows it). A crash or an exception at any point leaves either
the old file or the new one, never a truncated mix, and no stray temporary file. A symlink is written
through (its target replaced, the link kept); files get the umask's permissions.

Reads are bounded: only a regular file is read (never a FIFO or a device), and no more bytes than a
bound derived from the network.
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


def _read_raw(path: Path, limit: int, head: bool = False) -> bytes:
    try:
        return fileio.read_regular_file(path, limit, head=head)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: file not found") from None
    except fileio.UnsafeFileError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path}: cannot read it ({exc.strerror or exc})") from None


def _read(path: Path, limit: int = MAX_CHECKPOINT_BYTES) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    raw = _read_raw(path, limit)
    metadata = _metadata_from_bytes(raw, path)
    try:
        tensors = _st_load(raw)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({exc})") from exc
    return tensors, metadata


def _metadata_from_bytes(raw: bytes, path: Path) -> dict[str, str]:
    if len(raw) < 8:
        raise CheckpointError(f"checkpoint {path}: file too short to be safetensors")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(raw):
        raise CheckpointError(f"checkpoint {path}: corrupt safetensors header (length {n})")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path}: corrupt safetensors header") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if meta is None:
        return {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"checkpoint {path}: corrupt safetensors metadata (expected strings)")
    return dict(meta)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a checkpoint, without loading its tensors into a network."""
    path = Path(path)
    raw = _read_raw(path, 8, head=True)  # the header only: its length, then the JSON
    if len(raw) == 8:
        (n,) = struct.unpack("<Q", raw)
        if n <= MAX_HEADER_BYTES:
            raw = _read_raw(path, 8 + n, head=True)
    return _metadata_from_bytes(raw, path)


def read_extra_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``extra_tensors`` a checkpoint was saved with (without :data:`TRAIN_PREFIX`)."""
    path = Path(path)
    tensors, _ = _read(path)
    return {k[len(TRAIN_PREFIX) :]: v for k, v in tensors.items() if k.startswith(TRAIN_PREFIX)}


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
    if check_hash and file_hash != str(net.spec_hash):
        raise CheckpointError(
            f"checkpoint {path}: spec hash mismatch: the file was saved from spec "
            f"{metadata.get('spec_name', '?')!r} with hash {file_hash}, but the network "
            f"{getattr(net, 'name', '?')!r} has spec hash {net.spec_hash}"
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
    with torch.no_grad():
        for key, value in tensors.items():
            # copy_ keeps the parameter objects (shared with the grad network) and their device.
            own[key].copy_(value.to(dtype=own[key].dtype))
    return metadata
