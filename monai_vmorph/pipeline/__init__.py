"""Native-space registration: scans as they come from the scanner, registered and written back on their own grids.

The one pipeline that the command line, the bundles' inference writer and the benchmarks adapt (see the project's
design notes): native scan reader (:mod:`~monai_vmorph.pipeline.scan`) -> affine pre-alignment
(:mod:`~monai_vmorph.pipeline.affine`) -> network grid, network and refinement (:mod:`~monai_vmorph.pipeline.register`)
-> one displacement field on the fixed scan's native grid -> one all-or-nothing writer
(:mod:`~monai_vmorph.pipeline.outputs`). Layers below (``io``, ``networks``, ``losses``, ``metrics``) import nothing
from here.
"""

from monai_vmorph.pipeline.affine import AFFINE_MODES, AffineResult, affine_register
from monai_vmorph.pipeline.model import BundleModel, bundles_root, default_bundle, load_bundle_model
from monai_vmorph.pipeline.outputs import OutputSet, nifti_like
from monai_vmorph.pipeline.register import (
    PairResult,
    dice_per_label,
    inverse_native_displacement,
    landmark_tre,
    normalise_intensity,
    register_pair,
)
from monai_vmorph.pipeline.scan import NativeScan, check_same_dims, check_scan_file, read_scan
from monai_vmorph.pipeline.transforms import AFFINE_META_KEY, AffineAlignd

__all__ = [
    "AFFINE_META_KEY",
    "AFFINE_MODES",
    "AffineAlignd",
    "AffineResult",
    "BundleModel",
    "NativeScan",
    "OutputSet",
    "PairResult",
    "affine_register",
    "bundles_root",
    "check_same_dims",
    "check_scan_file",
    "default_bundle",
    "dice_per_label",
    "inverse_native_displacement",
    "landmark_tre",
    "load_bundle_model",
    "nifti_like",
    "normalise_intensity",
    "read_scan",
    "register_pair",
]
