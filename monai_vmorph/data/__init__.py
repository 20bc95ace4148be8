"""Datalists (subjects and pairs from folders, Learn2Reg JSON, neurite-OASIS, CSV) and pair generation.

A *subject* is ``{"image": path, "label": path (optional), "name": str}``; a *pair* is ``{"moving_image",
"fixed_image", "moving_label", "fixed_label" (optional), "moving_name", "fixed_name"}`` (keys in
:mod:`monai_vmorph.data.keys`). Bad data raises :class:`DataError` with one line naming the offending path.
"""

from .datalists import NEURITE_OASIS_FILES, csv_pairs, folder_datalist, neurite_oasis_datalist
from .errors import DataError
from .headers import check_dimensionality, read_spatial_shape
from .keys import (
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
from .label_names import label_column_names, learn2reg_label_names
from .learn2reg import LEARN2REG_PAIR_SPLITS, find_learn2reg_json, learn2reg_datalist
from .pairing import PAIR_MODES, RandomPairDataset, atlas_pairs, fixed_pairs, make_pair, scan_to_scan_pairs

__all__ = [
    "DDF_TRUE",
    "FIXED_IMAGE",
    "FIXED_LABEL",
    "FIXED_NAME",
    "IMAGE",
    "LABEL",
    "LEARN2REG_PAIR_SPLITS",
    "MOVING_IMAGE",
    "MOVING_LABEL",
    "MOVING_NAME",
    "NAME",
    "NEURITE_OASIS_FILES",
    "PAIR_MODES",
    "DataError",
    "RandomPairDataset",
    "atlas_pairs",
    "check_dimensionality",
    "csv_pairs",
    "find_learn2reg_json",
    "fixed_pairs",
    "folder_datalist",
    "label_column_names",
    "learn2reg_datalist",
    "learn2reg_label_names",
    "make_pair",
    "neurite_oasis_datalist",
    "read_spatial_shape",
    "scan_to_scan_pairs",
]
