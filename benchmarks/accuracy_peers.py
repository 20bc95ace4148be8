"""Greedy and ConvexAdam rows of ``bench_accuracy.py`` (kept here: that script is at its size limit).

* ``greedy`` (``picsl-greedy``, the Python wrapper of Greedy 1.4): the affine stage
  ``-a -dof 12 -ia-image-centers -m NCC 2x2x2 -n 100x50x10``, then the deformable stage with it as the start,
  ``-m NCC 2x2x2 -n 100x100x40 -s 1.5mm 0.5mm`` (``-m NMI`` for both stages on the cross-contrast task C), as the
  engine issue states Greedy's recipe. Greedy writes the affine as a RAS matrix from fixed to moving physical
  points (``.mat``) and the warp as an ITK displacement field on the fixed grid (LPS mm); the whole transform is
  ``q = A(p + w(p))`` (the warp first, as ``greedy -r warp.nii.gz affine.mat`` reslices). The first pair checks
  that conversion against Greedy's own reslicing of the labels (``-ri LABEL 0.2vox``).
* ``convexadam`` (``convexadam``, ``convex_adam_pt`` with its defaults: MIND-SSC features, coupled convex
  optimisation on a 6-voxel grid, 80 Adam iterations on a 2-voxel grid). It has no affine stage and needs both images
  on one grid: the moving scan is resampled onto the fixed grid (by physical position, :func:`resample`) first, so on
  the pre-aligned tasks S, I and C it sees the pair as given. Its output is a voxel displacement on the fixed grid
  in our convention (channel ``k`` along array axis ``k``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from monai_vmorph.io import read_itk_displacement, resample, warp_physical

__all__ = ["make_peer_methods"]


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> str:
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine), str(path))
    return str(path)


@contextlib.contextmanager
def _quiet_stdout():
    """Greedy's C++ core logs every iteration to the process's stdout: send it to /dev/null meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _read_greedy_matrix(path: str) -> np.ndarray:
    """Greedy's ``.mat``: a 4x4 RAS matrix mapping fixed physical points to moving physical points."""
    return np.loadtxt(path, dtype=np.float64).reshape(4, 4)


def make_peer_methods(base: dict) -> dict:
    """The peer ``Method`` classes, built on the harness' base classes and helpers (``base``)."""
    Method, NotAvailable, on_fixed_grid = base["Method"], base["NotAvailable"], base["on_fixed_grid"]
    ddf_to_ras, affine_displacement_ras = base["ddf_to_ras"], base["affine_displacement_ras"]

    class Greedy(Method):
        def prepare(self) -> None:
            try:
                from picsl_greedy import Greedy3D
            except Exception as error:
                raise NotAvailable(
                    f"picsl-greedy cannot be imported ({type(error).__name__}: {error}); pip install -e .[bench]"
                ) from None
            self.greedy_class = Greedy3D
            self.checked = False
            self.note: str | None = None

        def run(self, pair) -> torch.Tensor:
            metric = "NMI" if pair.cross_contrast else "NCC 2x2x2"
            threads = f"-threads {self.settings.threads}"
            quick = self.settings.quick
            affine_iterations, iterations = ("20x10x0", "20x10x0") if quick else ("100x50x10", "100x100x40")
            with tempfile.TemporaryDirectory() as folder, _quiet_stdout():
                out = Path(folder)
                fixed = _save(pair.fixed.array, pair.fixed.affine, out / "fixed.nii.gz")
                moving = _save(pair.moving.array, pair.moving.affine, out / "moving.nii.gz")
                greedy = self.greedy_class()
                greedy.execute(
                    f"-d 3 {threads} -a -dof 12 -ia-image-centers -i {fixed} {moving} -m {metric} "
                    f"-n {affine_iterations} -o {out / 'affine.mat'}"
                )
                greedy.execute(
                    f"-d 3 {threads} -i {fixed} {moving} -it {out / 'affine.mat'} -m {metric} -n {iterations} "
                    f"-s 1.5mm 0.5mm -o {out / 'warp.nii.gz'}"
                )
                matrix = _read_greedy_matrix(str(out / "affine.mat"))
                warp, warp_affine = read_itk_displacement(str(out / "warp.nii.gz"), 3)
                ddf = on_fixed_grid(warp, warp_affine, pair)
                total = affine_displacement_ras(matrix, ddf_to_ras(ddf, pair.fixed.affine), pair)
                if not self.checked:
                    self.checked = True
                    labels = _save(pair.moving_labels, pair.moving.affine, out / "labels.nii.gz")
                    greedy.execute(
                        f"-d 3 -rf {fixed} -ri LABEL 0.2vox -rm {labels} {out / 'resliced.nii.gz'} "
                        f"-r {out / 'warp.nii.gz'} {out / 'affine.mat'}"
                    )
                    theirs = np.asarray(nib.load(str(out / "resliced.nii.gz")).dataobj)
                    shape, affine = pair.fixed.array.shape, pair.fixed.affine
                    ours = warp_physical(pair.moving_labels, pair.moving.affine, shape, affine, total, "label")
                    agree = float(np.mean(np.rint(theirs).astype(np.int64) == ours.astype(np.int64)))
                    self.note = (
                        f"greedy field check ({pair.name}): labels warped through our conversion of Greedy's "
                        f"affine + warp and by greedy -r warp affine (-ri LABEL) agree on {100 * agree:.3f} % of voxels"
                    )
            return on_fixed_grid(total, pair.fixed.affine, pair)

        def check(self, pair, ddf: torch.Tensor) -> str | None:
            note, self.note = self.note, None
            return note

    class ConvexAdam(Method):
        def prepare(self) -> None:
            try:
                from convexAdam.convex_adam_MIND import convex_adam_pt
            except Exception as error:
                raise NotAvailable(
                    f"convexadam cannot be imported ({type(error).__name__}: {error}); pip install -e .[bench]"
                ) from None
            self.register = convex_adam_pt

        def run(self, pair) -> torch.Tensor:
            shape, affine = pair.fixed.array.shape, pair.fixed.affine
            moving = resample(pair.moving.array.astype(np.float32), pair.moving.affine, shape, affine)
            options = {"selected_niter": 10} if self.settings.quick else {}
            displacement = self.register(
                torch.as_tensor(pair.fixed.array, dtype=torch.float32),
                torch.as_tensor(np.asarray(moving, dtype=np.float32)),
                device=torch.device("cpu"),
                **options,
            )  # (*S, 3) voxels of the fixed grid, channel k along array axis k
            return torch.as_tensor(np.moveaxis(np.asarray(displacement, dtype=np.float32), -1, 0)[None])

    return {"greedy": Greedy, "convexadam": ConvexAdam}
