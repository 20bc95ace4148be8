"""Task A of ``bench_accuracy.py``: scans that are not pre-aligned (a random affine plus a mild warp).

* **Pairs.** Each embedded 3D brain (image and labels) is moved by a random affine about its foreground's centre
  of mass (rotations up to 12 degrees about each axis, shifts up to 15 mm per axis, scales 0.92-1.08, shears up
  to 0.03) composed with a mild smooth warp (:func:`monai_vmorph.transforms.synthetic.random_smooth_field`,
  largest velocity component 1.5 voxels = 3 mm, control points every 16 voxels) and resampled **on its own grid**
  (linear for the image, ``"label"`` mode for the labels), so the moving scan is misaligned with the fixed one
  and parts of it may leave the field of view. **Fixed = the original subject, moving = the transformed copy.**
  The random state of subject ``i``, pair ``k`` is ``seed + 1000 i + k`` (printed with the table).
* **Methods** (besides ``identity`` and ``ours``, which see the pair as it is):

  - ``affine-only``: our affine stage alone, :func:`monai_vmorph.pipeline.affine.affine_register` with its
    defaults (mode ``"affine"``, mutual information), its matrix turned into a field with
    :func:`monai_vmorph.pipeline.affine.affine_displacement`.
  - ``sitk-affine-demons``: the classical SimpleITK pipeline: ``CenteredTransformInitializer(MOMENTS)`` affine,
    Mattes mutual information (50 bins, 25 % random samples, seeded), regular-step gradient descent (200
    iterations per level, scales from physical shift), 3 levels (shrink 4, 2, 1; smoothing 2, 1, 0 voxels); the
    moving scan resampled with it, then ``sitk-demons``' diffeomorphic demons on the result; the field is the
    composition ``q = T_affine(p + w(p))``.
  - ``ants-syn`` runs ``ants.registration(type_of_transform="SyN")`` on this task (ANTs' own affine stage, then
    SyN); the composition ``q = T_affine(p + w(p))`` of ``0GenericAffine.mat`` and ``1Warp.nii.gz`` is checked on
    the first pair against ``ants.apply_transforms``.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
import torch

from monai_vmorph.io import warp_physical
from monai_vmorph.pipeline import NativeScan, read_scan
from monai_vmorph.pipeline.affine import affine_displacement, affine_register
from monai_vmorph.transforms.synthetic import random_smooth_field

__all__ = [
    "TASK_A_SPEC",
    "affine_displacement_ras",
    "ants_matrix_to_ras",
    "itk_matrix_to_ras",
    "make_methods",
    "random_affine",
    "task_a_pairs",
]

TASK_A_SPEC = "rotations <= 12 deg, shifts <= 15 mm, scales 0.92-1.08, shears <= 0.03, warp <= 3 mm velocity"
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def random_affine(rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
    """A ``4x4`` world (RAS mm) affine about ``centre``: Task A's rotation, shift, scale and shear ranges."""
    angles = np.deg2rad(rng.uniform(-12, 12, 3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = math.cos(angle), math.sin(angle)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rotation = rotation @ r
    shear = np.eye(3)
    shear[np.triu_indices(3, 1)] = rng.uniform(-0.03, 0.03, 3)
    linear = rotation @ np.diag(rng.uniform(0.92, 1.08, 3)) @ shear
    out = np.eye(4)
    out[:3, :3] = linear
    out[:3, 3] = centre + rng.uniform(-15, 15, 3) - linear @ centre
    return out


def task_a_pairs(subjects: list[dict], per_subject: int, seed: int, pair_type: type) -> list:
    """Task A: every subject moved by ``per_subject`` random affines + mild warps, on its own grid.

    ``moving(p) = original(G(p))`` with ``G(p) = B (p + w(p))``: ``B`` a random affine (:func:`random_affine`) and
    ``w`` a smooth diffeomorphic warp in mm; ``pair_type`` is ``bench_accuracy.Pair``.
    """
    pairs = []
    for i, subject in enumerate(subjects):
        scan = read_scan(subject["image"], "image")
        labels = read_scan(subject["label"], "label", labels=True).array
        shape, affine = scan.array.shape, scan.affine
        index = np.argwhere(scan.array > 0.05)
        centre = index.mean(axis=0) @ affine[:3, :3].T + affine[:3, 3]
        for k in range(per_subject):
            state = seed + 1000 * i + k
            matrix = random_affine(np.random.default_rng(state), centre)
            warp = random_smooth_field(shape, 1.5, 16.0, 7, torch.Generator().manual_seed(state))[0]
            warp_mm = np.moveaxis(warp.double().numpy(), 0, -1) @ affine[:3, :3].T
            index_grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
            world = index_grid @ affine[:3, :3].T + affine[:3, 3]
            moved = (world + warp_mm) @ matrix[:3, :3].T + matrix[:3, 3]
            displacement = moved - world
            image = warp_physical(scan.array, affine, shape, affine, displacement, "linear").astype(np.float32)
            moving_labels = warp_physical(labels, affine, shape, affine, displacement, "label")
            moving = NativeScan(scan.path, image, affine, scan.file_affine)
            name = f"{subject['name'].removesuffix('_0000')} #{k} (seed {state})"
            pairs.append(pair_type(name, scan, moving, labels, moving_labels, aligned=False))
    return pairs


def affine_displacement_ras(matrix: np.ndarray, warp_ras: np.ndarray | None, pair) -> np.ndarray:
    """RAS mm displacement on the fixed grid of ``q = matrix (p + w(p))`` (``w = warp_ras``, or none)."""
    shape, affine = pair.fixed.array.shape, pair.fixed.affine
    out = affine_displacement(matrix, shape, affine)
    if warp_ras is not None:
        out = out + warp_ras @ matrix[:3, :3].T
    return out


def itk_matrix_to_ras(transform: sitk.Transform) -> np.ndarray:
    """The ``4x4`` RAS matrix of an affine SimpleITK/ITK transform (fixed point -> moving point), from 4 points."""
    corners = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in corners])
    lps = np.eye(4)
    lps[:3, 3] = mapped[0]
    lps[:3, :3] = (mapped[1:] - mapped[0]).T
    return _LPS @ lps @ _LPS


def ants_matrix_to_ras(parameters: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """The ``4x4`` RAS matrix of an ANTs ``AffineTransform`` (12 parameters: matrix row-major then translation;
    fixed parameters: the centre ``c``), i.e. of ``T(x) = A (x - c) + t + c`` in LPS."""
    a = np.asarray(parameters[:9], dtype=np.float64).reshape(3, 3)
    t, c = np.asarray(parameters[9:12], dtype=np.float64), np.asarray(centre, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, :3] = a
    lps[:3, 3] = t + c - a @ c
    return _LPS @ lps @ _LPS


def make_methods(base: dict) -> dict:
    """Task A's method classes built on ``bench_accuracy``'s ``Method`` / ``SitkDemons`` (passed in ``base``)."""
    method, demons, on_fixed_grid = base["Method"], base["SitkDemons"], base["on_fixed_grid"]

    class AffineOnly(method):
        """Our affine stage alone (defaults), as a field on the fixed grid."""

        def run(self, pair) -> torch.Tensor:
            result = affine_register(pair.fixed.array, pair.fixed.affine, pair.moving.array, pair.moving.affine)
            return on_fixed_grid(affine_displacement_ras(result.matrix, None, pair), pair.fixed.affine, pair)

    class SitkAffineDemons(demons):
        """SimpleITK moments-initialised Mattes-MI affine (3 levels), then ``sitk-demons`` on the aligned scan."""

        def run(self, pair) -> torch.Tensor:
            fixed, moving = self.images(pair)
            initial = sitk.CenteredTransformInitializer(
                fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
            )
            reg = sitk.ImageRegistrationMethod()
            reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
            reg.SetMetricSamplingStrategy(reg.RANDOM)
            reg.SetMetricSamplingPercentage(0.25, 1)
            reg.SetInterpolator(sitk.sitkLinear)
            iterations = 20 if self.settings.quick else 200
            reg.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, iterations, 0.5)
            reg.SetOptimizerScalesFromPhysicalShift()
            reg.SetShrinkFactorsPerLevel([4, 2, 1])
            reg.SetSmoothingSigmasPerLevel([2, 1, 0])
            reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
            reg.SetInitialTransform(initial, inPlace=False)
            transform = reg.Execute(fixed, moving)
            aligned = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0)
            warp = self.field(fixed, aligned)
            displacement = affine_displacement_ras(itk_matrix_to_ras(transform), warp, pair)
            return on_fixed_grid(displacement, pair.fixed.affine, pair)

    return {"affine-only": AffineOnly, "sitk-affine-demons": SitkAffineDemons}


# --------------------------------------------------------------------------------------------- affine stage alone
def _label_dice(pair, matrix: np.ndarray) -> float:
    from monai_vmorph.metrics import label_dice

    shape, affine = pair.fixed.array.shape, pair.fixed.affine
    warped = warp_physical(
        pair.moving_labels, affine, shape, affine, affine_displacement(matrix, shape, affine), "label"
    )
    dice = label_dice(torch.as_tensor(warped)[None, None], torch.as_tensor(pair.fixed_labels)[None, None], (1, 2, 3))
    return float(np.nanmean(dice[0].numpy()))


def affine_stage_table(subjects: list[dict], seed: int, threads: int) -> list[str]:
    """Markdown rows: the affine stage on Task A's pairs per similarity (Dice, wall and CPU seconds), and on the same
    pairs resampled to a 1 mm 160x192x224 grid (seconds)."""
    import time
    from dataclasses import dataclass

    @dataclass
    class _Pair:
        name: str
        fixed: NativeScan
        moving: NativeScan
        fixed_labels: np.ndarray
        moving_labels: np.ndarray
        ddf_true: object = None
        aligned: bool = True

    torch.set_num_threads(threads)
    pairs = task_a_pairs(subjects, 1, seed, _Pair)
    rows = ["| similarity | grid | Dice mean | s/pair (wall) | CPU s/pair |", "|---|---|---:|---:|---:|"]
    fine_shape = (160, 192, 224)
    for similarity in ("mi", "ncc"):
        for grid in ("2 mm 96x112x96", "1 mm 160x192x224"):
            dice, wall, cpu = [], [], []
            for pair in pairs:
                fixed, moving = pair.fixed, pair.moving
                if grid.startswith("1 mm"):
                    fine = np.eye(4)
                    fine[:3, 3] = fixed.affine[:3, :3] @ ((np.array(fixed.array.shape) - 1) / 2) + fixed.affine[:3, 3]
                    fine[:3, 3] -= (np.array(fine_shape) - 1) / 2
                    fixed = NativeScan(fixed.path, _resample(fixed, fine_shape, fine), fine, fine)
                    moving = NativeScan(moving.path, _resample(moving, fine_shape, fine), fine, fine)
                start, start_cpu = time.perf_counter(), time.process_time()
                result = affine_register(fixed.array, fixed.affine, moving.array, moving.affine, similarity=similarity)
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
                dice.append(_label_dice(pair, result.matrix))
            rows.append(f"| {similarity} | {grid} | {np.mean(dice):.3f} | {np.mean(wall):.2f} | {np.mean(cpu):.2f} |")
            print(rows[-1], flush=True)
    return rows


def _resample(scan: NativeScan, shape: tuple, affine: np.ndarray) -> np.ndarray:
    from monai_vmorph.io import resample

    return resample(scan.array, scan.affine, shape, affine).astype(np.float32)


if __name__ == "__main__":
    import argparse
    from pathlib import Path

    from monai_vmorph.data import learn2reg_datalist

    parser = argparse.ArgumentParser(description="The affine stage alone on Task A's pairs (2 mm and 1 mm grids).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    data = learn2reg_datalist(Path(__file__).resolve().parents[1] / "data" / "brain_3d")
    print("# command: python benchmarks/accuracy_task_a.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()))
    print("\n".join(affine_stage_table(data["training"], args.seed, args.threads)))
