"""Safe file writes and reads shared by checkpoints, run directories and generated modules.

:func:`atomic_write_bytes` / :func:`atomic_write_text`:

* the bytes go to a temporary file ``.<name>.<random>.tmp`` in the destination's own directory, which
  is flushed and ``fsync``'ed, then ``os.replace``'d over the destination, and the directory is
  ``fsync``'ed: a crash at any point leaves the old file or the new one, never a mix; an exception
  removes the temporary file. Only ``SIGKILL``/power loss can leave one behind: the writer holds an
  exclusive ``flock`` on its temporary file until the rename, so the **next write of the same file**
  (and :func:`remove_stale_temps`) deletes the temporary files of that name whose lock is free --
  their writer is dead -- and never one whose writer is still at work;
* a destination that is a **symlink** is written *through*: the link's target is replaced and the
  link itself stays (a dangling link creates its target);
* a destination that exists and is not a regular file (a directory, FIFO, device node, socket) is
  refused with :class:`UnsafeFileError`; nothing is written;
* the new file's permissions are those of an ordinary ``open(path, "w")``: ``0o666`` masked by the
  process umask (``mkstemp``'s ``0o600`` is not kept), or the replaced file's own mode.

:func:`read_regular_file` reads a file that must be a regular file no larger than a bound: never
blocks on a FIFO, never reads ``/dev/zero`` until memory runs out; :func:`open_regular` gives the
same checks to a reader that reads a declared number of bytes piece by piece (checkpoints).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; stale temp files are then kept
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "UnsafeFileError",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_regular_file",
    "open_regular",
    "RegularFile",
    "remove_stale_temps",
    "current_umask",
    "TEMP_SUFFIX",
]

TEMP_SUFFIX = ".tmp"


class UnsafeFileError(OSError):
    """A destination or source that is not a regular file (directory, FIFO, device), or too large."""


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # fallback: not thread-safe for the instant it is changed
    os.umask(old)
    return old


def _resolve_target(path: Path) -> Path:
    """The file to replace: ``path``, or the final target of a symlink chain."""
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if target.is_symlink():  # a loop: realpath gives up on it
            raise UnsafeFileError(f"{path}: symlink loop")
        return target
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, mkdir: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring). Returns ``path``."""
    path = Path(path)
    target = _resolve_target(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        mode = 0o666 & ~current_umask()
    else:
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise UnsafeFileError(f"{path}: refusing to replace it: {kind}")
        mode = stat.S_IMODE(st.st_mode)
    directory = target.parent if str(target.parent) else Path(".")
    if mkdir and target == path:  # a symlink's target folder is never created on its behalf
        directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(directory, target.name)  # a killed writer's leftovers of this very file
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=directory)
    try:
        if fcntl is not None:  # held until the rename: a cleaner never takes a live writer's file
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # pragma: no cover - a filesystem without flock (some NFS mounts)
                pass
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(directory)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded (UTF-8 by default)."""
    return atomic_write_bytes(path, text.encode(encoding))


def remove_stale_temps(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete temporary files a killed writer left in ``directory``: those of the file ``name``
    (``.<name>.<random>.tmp``), or, with ``name`` ending in ``*``, of every file whose name starts
    with the rest (``"step-*"``); ``None``: every ``.*.tmp``. Returns what was removed. A temporary
    file whose writer is alive (it holds the file's ``flock``) is left alone, so this is safe beside
    other writers (except in the instant between a writer's ``mkstemp`` and its ``flock``)."""
    directory = Path(directory)
    if name is None:
        prefix = "."
    elif name.endswith("*"):
        prefix = "." + name[:-1]
    else:
        prefix = f".{name}."
    removed = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return removed
    for p in entries:
        if p.name.startswith(prefix) and p.name.endswith(TEMP_SUFFIX) and p.is_file() and not p.is_symlink():
            if _writer_alive(p):
                continue
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:  # pragma: no cover - raced with another cleaner
                pass
    return removed


def _writer_alive(path: Path) -> bool:
    """Whether a writer holds ``path``'s ``flock`` (see :func:`atomic_write_bytes`)."""
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the lock we may have taken
    return False


def read_regular_file(path: str | os.PathLike, max_bytes: int, *, head: bool = False) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_bytes`` bytes
    (``head=True``: its first ``max_bytes`` bytes, whatever its size).

    Raises ``FileNotFoundError`` or :class:`UnsafeFileError` (directory, FIFO, device, socket, too
    large). The file is opened non-blocking (a FIFO cannot block the open) and checked with
    ``fstat`` on the open descriptor, so a swap between check and read is caught too.
    """
    with open_regular(path) as f:
        if f.size > max_bytes and not head:
            raise UnsafeFileError(f"{f.path}: {f.size} bytes, larger than the limit of {max_bytes} bytes")
        if head:
            return f.read(max_bytes)
        data = f.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise UnsafeFileError(f"{f.path}: grew beyond the limit of {max_bytes} bytes while read")
        return data


class RegularFile:
    """An open regular file (see :func:`open_regular`): its ``size`` and a bounded ``read``."""

    def __init__(self, path: Path, fd: int, size: int):
        self.path, self.fd, self.size = path, fd, size

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes, or fewer where the file ends (never more)."""
        chunks, total = [], 0
        while total < n:
            chunk = os.read(self.fd, min(1 << 24, n - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)


@contextlib.contextmanager
def open_regular(path: str | os.PathLike) -> Iterator[RegularFile]:
    """Open ``path`` for reading if it is a regular file (the checks of :func:`read_regular_file`:
    non-blocking open, ``fstat`` on the descriptor); nothing is read until the caller asks, so a
    reader can read a header and then exactly the bytes it declares."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise UnsafeFileError(f"{path}: is a directory, not a file") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeFileError(f"{path}: is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFileError(f"{path}: not a regular file (a FIFO, device or socket)")
        yield RegularFile(path, fd, st.st_size)
    finally:
        os.close(fd)
