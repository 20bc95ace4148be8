"""Verified, crash-safe file writes: write a hidden sibling, check it, then rename it over the target.

Every file the package writes goes through :func:`write_file`: the data are flushed and ``fsync``-ed, then checked
(at least its size; a NIfTI file is read back whole, see :func:`check_nifti`), and only then renamed into place
(:func:`atomic_write`, or :class:`FileSet` for files that are published together). The check matters because some
writers do not report failures: SimpleITK's ``WriteImage`` prints ``** ERROR: NWAD: wrote only 0 of ... bytes``
on a full disk and returns normally, leaving a truncated file. A failed write raises :class:`OutputWriteError`,
one line such as ``"no space left on device writing ddf.nii.gz in /out; free space or choose another folder"``,
and leaves nothing behind: no temporary file and the old target (if any) untouched.

Temporary names keep the target's suffixes (``.nii.gz``, ``.pt``…) because nibabel and SimpleITK choose the format
from them: ``ddf.nii.gz`` is written as ``.ddf.tmp-<12 hex>.nii.gz``. A process killed mid-write leaves such a
file; :func:`remove_temporaries` deletes them (the folder's owner calls it under its
:class:`~monai_vmorph.io.locks.FolderLock`, so no live write is touched).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import re
import resource
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_vmorph.errors import UserError

__all__ = [
    "FileSet",
    "OutputWriteError",
    "atomic_write",
    "atomic_write_bytes",
    "captured_stderr",
    "check_nifti",
    "fsync_folder",
    "remove_temporaries",
    "temporary_sibling",
    "write_file",
    "write_nifti",
]

_TEMPORARY = re.compile(r"^\..+\.tmp-[0-9a-f]{12}(\.[^/]*)?$")
_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit exceeded (ulimit -f)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EIO: "input/output error",
}


class OutputWriteError(UserError):
    """A file could not be written completely (disk full, size limit, permissions…); nothing was left behind.

    ``reason`` holds the cause in a few words, e.g. ``"no space left on device"``.
    """

    reason: str = "the write failed"


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh hidden path in ``path``'s folder with ``path``'s suffixes (not created)."""
    path = Path(path)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f".{stem}.tmp-{uuid.uuid4().hex[:12]}{suffix}")


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of killed writes (``.<name>.tmp-<12 hex><suffixes>``) directly in ``folder``.

    Call it only while holding the folder's :class:`~monai_vmorph.io.locks.FolderLock`.

    Returns:
        The removed paths.
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if _TEMPORARY.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (no-op where folders cannot be opened or synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(error: OSError | None, path: Path, captured: str = "") -> str:
    """What went wrong, in a few words: from the error number, SimpleITK's message, the size limit or free space."""
    if error is not None and error.errno in _REASONS:
        return _REASONS[error.errno]
    if "No space left" in captured:
        return _REASONS[errno.ENOSPC]
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    if limit != resource.RLIM_INFINITY and size >= limit:
        return _REASONS[errno.EFBIG]
    try:
        stats = os.statvfs(path.parent)
        if stats.f_bavail * stats.f_frsize < 1 << 20:
            return _REASONS[errno.ENOSPC]
    except OSError:
        pass
    if error is not None:
        return error.strerror or str(error)
    return "the written file is incomplete"


def _failure(name: str, folder: Path, reason: str) -> OutputWriteError:
    error = OutputWriteError(f"{reason} writing {name} in {folder}; free some space or choose another output folder")
    error.reason = reason
    return error


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (C libraries' messages, e.g. ITK's) into a list that holds one string at exit.

    Nothing is captured (the list holds ``""``) where no temporary file can be made.
    """
    out: list[str] = []
    try:
        buffer = tempfile.TemporaryFile()
    except OSError:
        yield out
        out.append("")
        return
    with buffer:
        saved = os.dup(2)
        try:
            os.dup2(buffer.fileno(), 2)
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            out.append(buffer.read().decode(errors="replace"))


def write_file(
    path: str | os.PathLike,
    write: Callable[[Path], object],
    verify: Callable[[Path], None] | None = None,
    name: str | None = None,
) -> Path:
    """Call ``write(path)``, then ``fsync`` the file and check it; on failure delete it and raise one line.

    Args:
        path: the file to write (typically a :func:`temporary_sibling`).
        write: writes the file at the path it is given.
        verify: raises ``ValueError`` / ``OSError`` if the written file is incomplete (default: it must exist).
        name: the file name used in messages (default ``path``'s).

    Raises:
        OutputWriteError: the write or the check failed (disk full, file size limit, permissions…).
    """
    path = Path(path)
    name = name or path.name
    try:
        with captured_stderr() as captured:
            write(path)
    except OSError as error:
        path.unlink(missing_ok=True)
        raise _failure(name, path.parent, _reason(error, path)) from None
    except OutputWriteError as error:  # a verified writer writing our temporary file: name the real file
        path.unlink(missing_ok=True)
        raise _failure(name, path.parent, getattr(error, "reason", str(error))) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if verify is not None:
            verify(path)
    except (OSError, ValueError, EOFError) as error:
        reason = _reason(error if isinstance(error, OSError) else None, path, captured[0])
        path.unlink(missing_ok=True)
        raise _failure(name, path.parent, reason) from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if captured[0]:  # a successful write's messages (warnings) are passed on
        os.write(2, captured[0].encode())
    return path


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], object], verify: Callable[[Path], None] | None = None
) -> Path:
    """Write ``path`` through a verified temporary sibling (:func:`write_file`) renamed over it; missing folders are
    created.

    Returns:
        ``path``. On any error the temporary file is removed and ``path`` is left as it was.

    Raises:
        OutputWriteError: the write or its check failed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _failure(path.name, path.parent, _reason(error, path.parent)) from None
    tmp = temporary_sibling(path)
    try:
        write_file(tmp, write, verify, name=path.name)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; the file's size is checked before it is renamed into place."""

    def check(p: Path) -> None:
        if p.stat().st_size != len(data):
            raise ValueError(f"{p} holds {p.stat().st_size} of {len(data)} bytes")

    return atomic_write(path, lambda p: p.write_bytes(data), check)


def check_nifti(path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> None:
    """Read a NIfTI file back: its header, and all of its data (a ``.gz`` file is decompressed whole, which checks
    its CRC and length).

    Args:
        path: the ``.nii`` / ``.nii.gz`` file.
        shape: the expected image shape, if known.

    Raises:
        ValueError: the header is unreadable, the shape differs, or the file holds fewer bytes than its header needs.
        EOFError: a ``.gz`` file ends before its end-of-stream marker.
    """
    path = Path(path)
    try:
        image = nib.load(str(path))
        header = image.header
        offset = getattr(image.dataobj, "offset", None)
        offset = int(header["vox_offset"]) if offset is None else int(offset)
        needed = offset + int(np.prod(image.shape)) * header.get_data_dtype().itemsize
    except Exception as error:  # nibabel raises several types for unreadable files
        raise ValueError(f"{path} has no readable NIfTI header ({error})") from None
    if shape is not None and tuple(image.shape) != tuple(shape):
        raise ValueError(f"{path} has shape {image.shape}, expected {tuple(shape)}")
    if path.name.lower().endswith(".gz"):
        size = 0
        try:
            with gzip.open(path, "rb") as stream:
                while chunk := stream.read(1 << 22):
                    size += len(chunk)
        except gzip.BadGzipFile as error:
            raise ValueError(f"{path} is corrupt ({error})") from None
    else:
        size = path.stat().st_size
    if size < needed:
        raise ValueError(f"{path} holds {size} of {needed} bytes")


def _save_nifti(image: nib.Nifti1Image, path: Path) -> None:
    nib.save(image, str(path))


def write_nifti(path: str | os.PathLike, image: nib.Nifti1Image, atomic: bool = True) -> Path:
    """Save a nibabel image and read it back (:func:`check_nifti`) before it is published.

    Args:
        path: the ``.nii`` / ``.nii.gz`` file.
        image: the image to save.
        atomic: write a temporary sibling and rename it over ``path``; ``False`` writes ``path`` itself (for files
            that are already temporary, e.g. in a :class:`FileSet`).

    Raises:
        OutputWriteError: the write failed or the file read back is incomplete.
    """
    shape = tuple(image.shape)
    write = atomic_write if atomic else write_file
    return write(path, lambda p: _save_nifti(image, p), lambda p: check_nifti(p, shape))


class FileSet:
    """Files published together: each is written and verified under a temporary name, then all are renamed.

    Use it as a context manager: leaving the block without :meth:`commit` (an error, Ctrl-C) deletes every
    temporary file, so a failure leaves none of the set's files, half-written or not::

        with FileSet() as files:
            files.add(out / "a.nii.gz", lambda p: ..., verify)
            files.add_nifti(out / "b.nii.gz", image)
            files.commit()
    """

    def __init__(self) -> None:
        self._pending: dict[Path, Path] = {}

    def __enter__(self) -> FileSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def add(
        self, path: str | os.PathLike, write: Callable[[Path], object], verify: Callable[[Path], None] | None = None
    ) -> Path:
        """Write (:func:`write_file`) the file that :meth:`commit` publishes as ``path``; returns its temporary."""
        path = Path(path)
        tmp = temporary_sibling(path)
        self._pending[path] = tmp
        write_file(tmp, write, verify, name=path.name)
        return tmp

    def add_nifti(self, path: str | os.PathLike, image: nib.Nifti1Image) -> Path:
        """Save ``image`` for ``path``, read back whole (:func:`check_nifti`)."""
        shape = tuple(image.shape)
        return self.add(path, lambda p: _save_nifti(image, p), lambda p: check_nifti(p, shape))

    def commit(self) -> list[Path]:
        """Rename every temporary file to its final name (then sync the folders); returns the final paths."""
        for path, tmp in self._pending.items():
            os.replace(tmp, path)
        done = list(self._pending)
        for folder in {p.parent for p in done}:
            fsync_folder(folder)
        self._pending = {}
        return done

    def discard(self) -> None:
        """Delete the temporary files not yet committed."""
        for tmp in self._pending.values():
            tmp.unlink(missing_ok=True)
        self._pending = {}
