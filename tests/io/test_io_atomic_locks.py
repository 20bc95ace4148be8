"""Folder locks: one live run per folder, stale locks of killed runs taken over, nothing left after release."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monai_vmorph.io.locks import LOCK_NAME, FolderBusyError, FolderLock

ROOT = Path(__file__).resolve().parents[2]


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that locks ``folder``, prints ``locked`` and sleeps."""
    code = (
        "import sys, time\nfrom monai_vmorph.io.locks import FolderLock\n"
        f"lock = FolderLock({str(folder)!r})\nprint('locked', flush=True)\ntime.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_with_the_first_runs_lock_then_takes_over_a_stale_one(tmp_path):
    folder = tmp_path / "out"
    holder = _holder(folder)
    try:
        with pytest.raises(FolderBusyError) as busy:
            FolderLock(folder)
        message = str(busy.value)
        assert message.startswith(f"output folder {folder} is in use by another run (pid {holder.pid}, started ")
        assert message.endswith(
            f", lock {folder / LOCK_NAME}; wait for that run to finish or choose another output folder"
        )
        assert "\n" not in message
        (folder / ".last.tmp-0123456789ab.pt").write_bytes(b"killed mid-write")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (folder / LOCK_NAME).is_file()  # a kill -9 leaves the file, but the kernel dropped its lock
    with FolderLock(folder) as lock:
        assert lock.held
        assert f"pid {os.getpid()}," in (folder / LOCK_NAME).read_text()
        assert not (folder / ".last.tmp-0123456789ab.pt").exists()  # the dead run's temporary is gone
    assert list(folder.iterdir()) == []  # the lock file went with the lock (the folder was the first run's)


def test_locks_are_reentrant_in_one_process_and_keep_folders_with_results(tmp_path):
    folder = tmp_path / "a" / "b"
    first = FolderLock(folder)
    second = FolderLock(folder)  # e.g. a workflow and the checkpointer it builds
    first.release()
    assert (folder / LOCK_NAME).is_file()
    (folder / "result.txt").write_text("kept")
    second.release()
    assert sorted(p.name for p in folder.iterdir()) == ["result.txt"]
    second.release()  # releasing twice is harmless


def test_a_dropped_lock_object_releases_its_hold(tmp_path):
    FolderLock(tmp_path / "x")  # not kept: released when garbage-collected
    time.sleep(0)
    assert not (tmp_path / "x").exists()


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(Exception, match=r"^cannot create output folder .*file/sub \(.*\); choose another folder$"):
        FolderLock(tmp_path / "file" / "sub")
