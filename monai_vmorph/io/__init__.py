"""Native scan space <-> network grid, and ITK displacement fields (conventions: :mod:`monai_vmorph.io.spaces`).

The only part of ``monai_vmorph`` that deals with millimetres, world (RAS / LPS) coordinates and file formats of
transforms and landmarks; everything else works in network voxels (:mod:`monai_vmorph.networks.blocks.warp`).
"""

from .itk_fields import affine_to_itk, itk_to_affine, read_itk_displacement, write_itk_displacement
from .itk_transforms import read_itk_affine, write_itk_affine
from .landmarks import landmark_format, read_landmarks, voxel_landmarks
from .nifti import PLACEMENT_TOLERANCE_MM, HeaderRuleNibabelReader, nifti_integer_array, nifti_placement
from .spaces import (
    MAX_LABELS,
    affine_2d,
    displacement_at_points,
    native_displacement,
    network_grid,
    resample,
    resample_displacement,
    warp_physical,
)

__all__ = [
    "MAX_LABELS",
    "PLACEMENT_TOLERANCE_MM",
    "HeaderRuleNibabelReader",
    "affine_2d",
    "affine_to_itk",
    "displacement_at_points",
    "itk_to_affine",
    "landmark_format",
    "native_displacement",
    "network_grid",
    "nifti_integer_array",
    "nifti_placement",
    "read_itk_affine",
    "read_itk_displacement",
    "read_landmarks",
    "resample",
    "resample_displacement",
    "voxel_landmarks",
    "warp_physical",
    "write_itk_affine",
    "write_itk_displacement",
]
