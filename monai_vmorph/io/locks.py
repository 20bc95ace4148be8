"""One run per output folder: an exclusive lock held for a whole run.

:class:`FolderLock` takes ``fcntl.flock`` on ``<folder>/.monai-vmorph.lock``, which holds the owner's pid, start
time and command. The kernel drops the lock when its process ends, however it ends (``kill -9`` included), so a
lock left by a dead process is stale by construction and the next run takes it over; that run then deletes the
temporary files of the dead run's killed writes (:func:`monai_vmorph.io.atomic.remove_temporaries`). A second live
run fails at once with one line naming the first run's lock. Releasing deletes the lock file, and the folder too
when the lock created it and it is still empty (a failed run leaves no empty output folder).

Locks are per process and re-entrant: a process that already holds a folder's lock (e.g. a training workflow and
its evaluation in one test session) takes it again without blocking itself; it is released with the last holder.
"""

from __future__ import annotations

import atexit
import datetime
import errno
import fcntl
import os
import sys
import weakref
from pathlib import Path

from monai_vmorph.errors import UserError

from .atomic import remove_temporaries

__all__ = ["LOCK_NAME", "FolderBusyError", "FolderLock", "lock_folder"]

LOCK_NAME = ".monai-vmorph.lock"


class FolderBusyError(UserError):
    """Another live process holds the folder's lock."""


class _Held:
    """One process's flock on one folder: the open lock file and how many :class:`FolderLock` objects share it."""

    def __init__(self, fd: int, path: Path, created: list[Path]) -> None:
        self.fd, self.path, self.created, self.count, self.pid = fd, path, created, 0, os.getpid()


_HELD: dict[Path, _Held] = {}


def _describe_owner(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f" ({text.splitlines()[0][:200]})" if text else ""


def _open_locked(path: Path) -> int:
    """Open ``path`` and take its flock without waiting, retrying when the file was replaced meanwhile."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderBusyError(
                    f"output folder {path.parent} is in use by another run{_describe_owner(path)}, lock {path}; "
                    "wait for that run to finish or choose another output folder"
                ) from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:  # the previous owner deleted it between our open and flock
            same = False
        if same:
            return fd
        os.close(fd)


def _release(held: _Held) -> None:
    if held.pid != os.getpid():  # a forked child (data loader worker) never releases its parent's lock
        return
    try:
        held.path.unlink(missing_ok=True)
    finally:
        os.close(held.fd)
    for folder in reversed(held.created):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


class FolderLock:
    """An exclusive, re-entrant (per process) lock on a folder, held until :meth:`release` or process exit.

    Args:
        folder: the folder; it and missing parents are created (and removed again on release if still empty).

    Raises:
        FolderBusyError: another live process holds the lock; the message names its lock file and owner.
        UserError: the folder cannot be created or the lock file cannot be written.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(os.path.abspath(folder))
        self._held: _Held | None = None
        self.acquire()

    def acquire(self) -> FolderLock:
        if self._held is not None:
            return self
        held = _HELD.get(self.folder)
        if held is None:
            created = [p for p in (self.folder, *self.folder.parents) if not p.exists()][::-1]
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                fd = _open_locked(self.folder / LOCK_NAME)
            except FolderBusyError:
                raise
            except OSError as error:
                raise UserError(
                    f"cannot create output folder {self.folder} ({error.strerror or error}); choose another folder"
                ) from None
            held = _HELD[self.folder] = _Held(fd, self.folder / LOCK_NAME, created)
            started = datetime.datetime.now().isoformat(timespec="seconds")
            info = f"pid {os.getpid()}, started {started}: {' '.join(sys.argv)[:300]}\n"
            try:
                os.ftruncate(fd, 0)
                os.write(fd, info.encode())
            except OSError:
                pass  # the owner's description is optional (e.g. a full disk)
            remove_temporaries(self.folder)
        held.count += 1
        self._held = held
        self._finalizer = weakref.finalize(self, FolderLock._drop, self.folder, held)
        return self

    @staticmethod
    def _drop(folder: Path, held: _Held) -> None:
        held.count -= 1
        if held.count <= 0 and _HELD.get(folder) is held:
            del _HELD[folder]
            _release(held)

    def release(self) -> None:
        """Release this hold; the lock file (and a folder the lock created, if empty) goes with the last one."""
        if self._held is not None:
            self._held = None
            self._finalizer()

    @property
    def held(self) -> bool:
        return self._held is not None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_folder(folder: str | os.PathLike) -> FolderLock:
    """:class:`FolderLock` of ``folder`` (created if missing), held until released or the process ends."""
    return FolderLock(folder)


@atexit.register
def _release_all() -> None:
    for folder, held in list(_HELD.items()):
        del _HELD[folder]
        _release(held)
