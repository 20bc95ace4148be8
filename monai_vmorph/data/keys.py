"""The dictionary keys, under their historical ``monai_vmorph.data.keys`` name (defined in :mod:`monai_vmorph.keys`,
the lowest layer, so that losses and transforms use them without importing :mod:`monai_vmorph.data`)."""

from monai_vmorph.keys import (
    DDF_TRUE,
    FIXED_IMAGE,
    FIXED_LABEL,
    FIXED_NAME,
    IMAGE,
    LABEL,
    MOVING_IMAGE,
    MOVING_LABEL,
    MOVING_NAME,
    NAME,
)

__all__ = [
    "DDF_TRUE",
    "FIXED_IMAGE",
    "FIXED_LABEL",
    "FIXED_NAME",
    "IMAGE",
    "LABEL",
    "MOVING_IMAGE",
    "MOVING_LABEL",
    "MOVING_NAME",
    "NAME",
]
