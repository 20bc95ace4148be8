"""Dictionary keys shared by the datalists, pairing, transforms and engines.

A *subject* (one scan) is ``{IMAGE: path, LABEL: path (optional), NAME: str}``.
A *pair* is ``{MOVING_IMAGE, FIXED_IMAGE, MOVING_LABEL (optional), FIXED_LABEL (optional), MOVING_NAME, FIXED_NAME}``
(datalists of pairs may add ``MOVING_LANDMARKS``/``FIXED_LANDMARKS``: landmark files, :mod:`monai_vmorph.io.landmarks`)
holding absolute path strings before loading and ``(C, *S)`` tensors after the transforms.
``DDF_TRUE`` is the ground-truth field of synthetic pairs, ``(ndim, *S)`` in voxel units, with
``fixed(x) = moving(x + ddf_true(x))``.
"""

from __future__ import annotations

__all__ = [
    "DDF_TRUE",
    "FIXED_IMAGE",
    "FIXED_LABEL",
    "FIXED_LANDMARKS",
    "FIXED_NAME",
    "IMAGE",
    "LABEL",
    "MOVING_IMAGE",
    "MOVING_LABEL",
    "MOVING_LANDMARKS",
    "MOVING_NAME",
    "NAME",
]

IMAGE = "image"
LABEL = "label"
NAME = "name"
MOVING_IMAGE = "moving_image"
FIXED_IMAGE = "fixed_image"
MOVING_LABEL = "moving_label"
FIXED_LABEL = "fixed_label"
MOVING_NAME = "moving_name"
FIXED_NAME = "fixed_name"
MOVING_LANDMARKS = "moving_landmarks"
FIXED_LANDMARKS = "fixed_landmarks"
DDF_TRUE = "ddf_true"
