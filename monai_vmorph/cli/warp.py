"""``monai-vmorph warp``: apply an ITK displacement field to an image or a label map."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from monai_vmorph.cli.errors import CLIError
from monai_vmorph.io import read_itk_displacement, resample_displacement, warp_physical
from monai_vmorph.pipeline import OutputSet, check_same_dims, read_scan

__all__ = ["run_warp"]

_SUFFIXES = (".nii", ".nii.gz")


def run_warp(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if not out.name.endswith(_SUFFIXES):
        raise CLIError(f"--out {out} must end in .nii or .nii.gz")
    reference = read_scan(args.reference, "--reference")
    moving = read_scan(args.moving, "--moving", labels=args.interp == "label", keep_integer=args.interp == "nearest")
    ndim = check_same_dims(reference, moving)
    if not Path(args.field).is_file():
        raise CLIError(f"--field {args.field} does not exist; check the path")
    displacement, field_affine = read_itk_displacement(args.field, spatial_dims=ndim)
    if displacement.shape[-1] != ndim:
        raise CLIError(
            f"--field {args.field} has {displacement.shape[-1]}-component vectors but the images are {ndim}D; "
            "give a field of the images' dimensionality"
        )
    outputs = OutputSet(
        out.parent, [out.name], overwrite=args.overwrite, inputs=[args.field, args.moving, args.reference]
    )
    shape = reference.array.shape
    same_grid = displacement.shape[:-1] == shape and np.allclose(field_affine, reference.affine, atol=1e-4)
    if not same_grid:  # ITK evaluates a field off its grid by linear interpolation, zero outside
        displacement = resample_displacement(displacement, field_affine, shape, reference.affine)
    mode = args.interp
    warped = warp_physical(moving.array, moving.affine, shape, reference.affine, displacement, mode)
    with outputs:
        dtype = moving.file_dtype if mode == "label" else None  # warped labels keep their file's type
        outputs.write_nifti(out.name, np.asarray(warped), reference, dtype)
        outputs.commit()
    if not args.quiet:
        print(f"warped {moving.path.name} with {Path(args.field).name} ({mode}) -> {out}")
