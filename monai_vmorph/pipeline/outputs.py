"""All-or-nothing output files: lock the folder and check before any work, write verified temporary files, rename
them at the end."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from monai_vmorph.errors import UserError
from monai_vmorph.io import nifti_integer_array
from monai_vmorph.io.atomic import check_nifti, fsync_folder, temporary_sibling, write_file
from monai_vmorph.io.locks import FolderLock
from monai_vmorph.pipeline.scan import NativeScan

__all__ = ["OutputSet", "nifti_like"]


def nifti_like(array: np.ndarray, like: NativeScan, dtype: np.dtype | None = None) -> nib.Nifti1Image:
    """``array`` (on ``like``'s grid, ``(*S)`` or ``(*S, C)``) as a NIfTI image placed exactly as ``like``.

    The header rule of :mod:`monai_vmorph.pipeline.scan`: qform and sform are both set to ``like.file_affine``
    (the placement we read), keeping ``like``'s codes (a code of 0 takes the other one's, or 1), so nibabel,
    SimpleITK, ANTs and Slicer place the output in the same place. A 2D scan's array keeps the form of its file
    (``(X, Y, 1)`` or ``(X, Y)``; ``(X, Y, 1)`` for a scan built in memory).

    Args:
        array: the voxels.
        like: the scan whose grid they are on.
        dtype: the stored type (a label map's ``file_dtype``: warped labels keep their file's type; every value
            must be representable, as a warped label map's are). ``None``: floats as they are, 64-bit integers in
            a 32-bit type that holds them (:func:`monai_vmorph.io.nifti_integer_array`).
    """
    array = np.asarray(array)
    if dtype is not None:
        stored = array.astype(dtype)
        if not np.array_equal(stored, array):
            raise ValueError(f"values of {array.dtype} array do not fit the output type {np.dtype(dtype)}.")
        array = stored
    else:
        array = nifti_integer_array(array)
    if like.ndim == 2:
        form = like.file_shape if like.file_shape is not None else (*array.shape[:2], 1)
        array = array.reshape((*form, *array.shape[2:]))
    affine = np.asarray(like.file_affine, dtype=np.float64)
    qcode = like.qform_code or like.sform_code or 1
    scode = like.sform_code or qcode
    image = nib.Nifti1Image(array, affine, dtype=array.dtype)  # nibabel asks for 64-bit integers to be explicit
    image.set_qform(affine, code=int(qcode))
    image.set_sform(affine, code=int(scode))
    image.header.set_xyzt_units("mm", "sec")
    return image


class OutputSet:
    """The files one command writes into one folder, committed together.

    The constructor checks, before any computation: the folder can be created and written; no other run is writing
    into it (it takes the folder's :class:`~monai_vmorph.io.locks.FolderLock`, held until the ``with`` block ends);
    no output exists unless ``overwrite``; no output is one of the command's input files (never, even with
    ``overwrite``). Each ``write_*`` call writes to a hidden temporary file in the folder, flushed and read back
    (:func:`monai_vmorph.io.atomic.write_file`; a full disk is one line); :meth:`commit` renames them all to
    their final names. Leaving the ``with`` block without ``commit`` (an error) deletes the temporary files, so
    an interrupted command leaves no partial output (and no folder it created).

    Args:
        out_dir: the output folder (created if missing).
        names: the file names the command will write.
        overwrite: replace existing outputs.
        inputs: the command's input files, which are never overwritten.
    """

    def __init__(
        self, out_dir: str | os.PathLike, names: Iterable[str], overwrite: bool = False, inputs: Iterable = ()
    ) -> None:
        self.out_dir = Path(out_dir)
        self.paths = {name: self.out_dir / name for name in names}
        protected = {Path(p).resolve() for p in inputs if p is not None}
        for path in self.paths.values():
            if path.resolve() in protected:
                raise UserError(f"output {path} is one of the inputs; choose another output path")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UserError(f"output folder {self.out_dir} is a file; give a folder for --out-dir")
        if self.out_dir.is_dir() and not os.access(self.out_dir, os.W_OK | os.X_OK):
            raise UserError(f"output folder {self.out_dir} is not writable; choose another --out-dir")
        self._lock = FolderLock(self.out_dir)
        self._pending: dict[str, Path] = {}
        if not overwrite:
            existing = [p for p in self.paths.values() if p.exists()]
            if existing:
                self._lock.release()
                raise UserError(f"{existing[0]} exists; pass --overwrite to replace it or choose another --out-dir")

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
        self._lock.release()

    def _temporary(self, name: str) -> Path:
        if name not in self.paths:
            raise KeyError(f"{name} is not one of this command's outputs {sorted(self.paths)}.")
        self._pending[name] = temporary_sibling(self.paths[name])
        return self._pending[name]

    def write_with(self, name: str, writer: Callable[[Path], Any]) -> None:
        """Write output ``name`` by calling ``writer(temporary_path)`` (flushed, checked to exist)."""
        write_file(self._temporary(name), writer, name=name)

    def write_nifti(self, name: str, array: np.ndarray, like: NativeScan, dtype: np.dtype | None = None) -> None:
        """Write ``array`` on ``like``'s grid as NIfTI placed exactly as ``like`` (:func:`nifti_like`, stored as
        ``dtype``), read back whole before it is kept."""
        image = nifti_like(array, like, dtype)
        shape = tuple(image.shape)
        tmp = self._temporary(name)
        write_file(tmp, lambda p: nib.save(image, p), lambda p: check_nifti(p, shape), name=name)

    def write_json(self, name: str, data: Any) -> None:
        self.write_with(name, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))

    def write_text(self, name: str, text: str) -> None:
        self.write_with(name, lambda p: p.write_text(text))

    def commit(self) -> dict[str, Path]:
        """Rename every written temporary file to its final name; returns ``{name: path}``."""
        for name, tmp in self._pending.items():
            os.replace(tmp, self.paths[name])
        fsync_folder(self.out_dir)
        done = {name: self.paths[name] for name in self._pending}
        self._pending = {}
        return done

    def discard(self) -> None:
        """Delete the temporary files not yet committed."""
        for tmp in self._pending.values():
            tmp.unlink(missing_ok=True)
        self._pending = {}
