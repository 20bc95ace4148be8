"""Crash-safe file writes: write a hidden sibling, then rename it over the target.

A reader never sees a half-written file, and a failed write leaves the old file (if any) untouched and no
temporary file behind. The temporary name keeps the target's suffixes (``.nii.gz``, ``.pt``…) because nibabel
and SimpleITK choose the format and compression from them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "temporary_sibling"]


def temporary_sibling(path: str | os.PathLike) -> Path:
    """A fresh hidden path in ``path``'s folder with ``path``'s suffixes (not created)."""
    path = Path(path)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f".{stem}.tmp-{uuid.uuid4().hex[:12]}{suffix}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)`` and rename the result to ``path`` (missing folders are created).

    Returns:
        ``path``. On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
