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

Writes are atomic: the bytes go to a temporary file in the destination directory, which is flushed,
fsync'ed and then ``os.replace``'d over the destination (and the directory is fsync'ed where the OS
allows it). A crash or an exception at any point leaves either the old file or the new one, never a
truncated mix, and no stray temporary file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same dir, fsync, ``os.replace``)."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return path


def save_checkpoint(path: str | os.PathLike, net: Any, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Save ``net``'s shared parameters to ``path`` (safetensors), atomically.

    ``net`` is the object returned by ``autoint_compiler.compile`` (it needs ``.integral``,
    ``.spec_hash`` and ``.name``). ``extra`` adds string metadata (values are ``str()``-ed); it may
    not override the reserved keys.
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
    data = _st_save(_state_tensors(net), metadata=metadata)
    return atomic_write_bytes(path, data)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: file not found") from None
    try:
        tensors = _st_load(raw)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: not a readable safetensors file ({exc})") from exc
    metadata = _metadata_from_bytes(raw, path)
    return tensors, metadata


def _metadata_from_bytes(raw: bytes, path: Path) -> dict[str, str]:
    import json
    import struct

    if len(raw) < 8:
        raise CheckpointError(f"checkpoint {path}: file too short to be safetensors")
    (n,) = struct.unpack("<Q", raw[:8])
    try:
        header = json.loads(raw[8 : 8 + n])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: corrupt safetensors header") from exc
    return dict(header.get("__metadata__") or {})


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a checkpoint, without loading its tensors into a network."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: file not found") from None
    return _metadata_from_bytes(raw, path)


def load_checkpoint(path: str | os.PathLike, net: Any, *, check_hash: bool = True) -> dict[str, str]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``net`` (in place).

    Raises :class:`CheckpointError` when the file is missing or unreadable, was not written by
    this module, has an unsupported format version, was saved from a network whose spec hash
    differs from ``net.spec_hash`` (unless ``check_hash=False``), or whose tensors do not match the
    network's parameters (names or shapes). Returns the checkpoint's metadata.
    """
    path = Path(path)
    tensors, metadata = _read(path)
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
    with torch.no_grad():
        for key, value in tensors.items():
            # copy_ keeps the parameter objects (shared with the grad network) and their device.
            own[key].copy_(value.to(dtype=own[key].dtype))
    return metadata
