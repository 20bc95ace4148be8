"""MONAI dictionary transforms for registration pairs: preprocessing, joint augmentation, synthetic pairs; the
mapping of one image's contrast to another's."""

from monai_vmorph.transforms.augmentation import pair_augmentation
from monai_vmorph.transforms.contrast import contrast_mapping, match_contrast, match_histogram
from monai_vmorph.transforms.preprocessing import INTENSITY_PERCENTILES, EnsureSpatialDimsd, registration_preprocessing
from monai_vmorph.transforms.synthetic import (
    RandSmoothDeformd,
    RandSyntheticFixedd,
    RandSyntheticPaird,
    random_smooth_field,
)

__all__ = [
    "INTENSITY_PERCENTILES",
    "EnsureSpatialDimsd",
    "RandSmoothDeformd",
    "RandSyntheticFixedd",
    "RandSyntheticPaird",
    "contrast_mapping",
    "match_contrast",
    "match_histogram",
    "pair_augmentation",
    "random_smooth_field",
    "registration_preprocessing",
]
