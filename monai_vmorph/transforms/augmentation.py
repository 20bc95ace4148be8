"""Random augmentation of registration pairs: each image moves together with its own label map.

The moving image and label share one random affine (MONAI ``RandAffined``, which draws one set of parameters
per call for all its keys) and one random smooth deformation (:class:`RandSmoothDeformd`); the fixed image and
label get independent draws of their own. Images are interpolated linearly, labels with nearest neighbour.
"""

from __future__ import annotations

import math

from monai.transforms import Compose, RandAffined

from monai_vmorph.keys import FIXED_IMAGE, FIXED_LABEL, MOVING_IMAGE, MOVING_LABEL
from monai_vmorph.transforms.synthetic import RandSmoothDeformd

__all__ = ["pair_augmentation"]


def pair_augmentation(
    spatial_dims: int = 3,
    prob: float = 0.5,
    rotate_degrees: float = 10.0,
    scale: float = 0.1,
    translate: float = 4.0,
    max_displacement: float = 3.0,
    control_spacing: float = 16.0,
    groups: tuple[tuple[str, str], ...] = ((MOVING_IMAGE, MOVING_LABEL), (FIXED_IMAGE, FIXED_LABEL)),
) -> Compose:
    """Joint random affine + smooth elastic augmentation, drawn independently per (image, label) group.

    Args:
        spatial_dims: 2 or 3.
        prob: probability of each of the affine and the elastic step, per group.
        rotate_degrees: rotations drawn uniformly in ``[-rotate_degrees, rotate_degrees]`` about every axis
            (about the in-plane axis in 2D).
        scale: relative scaling drawn in ``[-scale, scale]`` per axis.
        translate: translation in voxels drawn in ``[-translate, translate]`` per axis.
        max_displacement: largest elastic velocity component in voxels (``0`` turns the elastic step off).
        control_spacing: voxels between the elastic field's random control points.
        groups: ``(image_key, label_key)`` pairs; each group shares one draw (label keys may be missing).

    Returns:
        A MONAI ``Compose``; call ``set_random_state(seed)`` on it for reproducible draws.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    if not 0 <= prob <= 1:
        raise ValueError(f"prob must be in [0, 1], got {prob!r}.")
    rotations = 1 if spatial_dims == 2 else 3
    angle = math.radians(rotate_degrees)
    chain: list = []
    for image_key, label_key in groups:
        keys = [image_key, label_key]
        chain.append(
            RandAffined(
                keys,
                prob=prob,
                rotate_range=[angle] * rotations,
                scale_range=[scale] * spatial_dims,
                translate_range=[translate] * spatial_dims,
                mode=["bilinear", "nearest"],
                padding_mode="zeros",
                allow_missing_keys=True,
            )
        )
        if max_displacement > 0:
            chain.append(
                RandSmoothDeformd(
                    keys,
                    mode=["bilinear", "nearest"],
                    prob=prob,
                    max_displacement=max_displacement,
                    control_spacing=control_spacing,
                    allow_missing_keys=True,
                )
            )
    return Compose(chain)
