"""Small path helpers shared by the datalists and the pairing (private)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_KNOWN_SUFFIXES = (".nii.gz", ".nii", ".mgz", ".mha", ".mhd", ".nrrd", ".nhdr", ".npz", ".npy")


def strip_suffix(file_name: str) -> str:
    """``"x_0000.nii.gz" -> "x_0000"``: the file name without its (possibly double) image extension."""
    lower = file_name.lower()
    for suffix in _KNOWN_SUFFIXES:
        if lower.endswith(suffix) and len(file_name) > len(suffix):
            return file_name[: -len(suffix)]
    return Path(file_name).stem


def name_from_path(path: str | os.PathLike) -> str:
    """A subject name derived from an image path: its file name without extension."""
    return strip_suffix(Path(path).name)


def abspath(path: str | os.PathLike) -> str:
    """An absolute, normalised path string (symlinks are kept, not resolved)."""
    return os.path.abspath(os.fspath(path))


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` as an absolute :class:`Path`, raising :class:`DataError` unless it is a folder."""
    p = Path(abspath(path))
    if not p.is_dir():
        state = "is not a folder" if p.exists() else "does not exist"
        raise DataError(f"{what} {p} {state}; pass the folder that holds the files.")
    return p


def require_file(path: str | os.PathLike, what: str, source: str | os.PathLike | None = None) -> str:
    """Return ``path`` as an absolute string, raising :class:`DataError` unless it is an existing file."""
    p = abspath(path)
    if not os.path.isfile(p):
        state = "is not a file" if os.path.exists(p) else "does not exist"
        where = f" (listed in {source})" if source is not None else ""
        raise DataError(f"{what} {p}{where} {state}; fix the path or add the missing file.")
    return p
