"""Header-only checks of a datalist: every image readable, one volume each, all 2D or all 3D.

Only the headers are read (nibabel proxies; SimpleITK ``ReadImageInformation`` for formats nibabel does not
know, e.g. ``.mha``/``.nrrd``), so checking a whole dataset costs a few milliseconds per file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ._paths import abspath
from .errors import DataError
from .keys import FIXED_IMAGE, FIXED_LABEL, IMAGE, LABEL, MOVING_IMAGE, MOVING_LABEL

__all__ = ["check_dimensionality", "read_spatial_shape"]

_IMAGE_LABEL_KEYS = ((IMAGE, LABEL), (MOVING_IMAGE, MOVING_LABEL), (FIXED_IMAGE, FIXED_LABEL))
_NIBABEL_ONLY = (".nii", ".nii.gz", ".mgz", ".mgh", ".hdr", ".img")


def read_spatial_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The spatial shape of an image from its header: 2 entries for 2D, 3 for 3D.

    A 3D file with a single slice (``(X, Y, 1)``) counts as 2D; trailing singleton dimensions beyond the third
    (``(X, Y, Z, 1)``) are ignored.

    Raises:
        DataError: the file is unreadable, not an image, holds several volumes/channels, or is not 2D/3D.
    """
    p = abspath(path)
    shape, components = _header_shape(p)
    extra = shape[3:]
    if math.prod(extra) * components > 1:
        raise DataError(
            f"image {p} holds {math.prod(extra) * components} volumes/channels (shape {shape}); "
            "registration needs one 2D/3D volume per file, so split it or pick one volume."
        )
    spatial = tuple(shape[:3])
    if len(spatial) == 3 and spatial[2] == 1:
        spatial = spatial[:2]
    if len(spatial) < 2 or any(s < 1 for s in spatial):
        raise DataError(f"image {p} has shape {shape}, not a 2D or 3D image; check the file.")
    return spatial


def check_dimensionality(items: Iterable[Mapping | str | os.PathLike]) -> int:
    """Check that all images of a datalist are readable single volumes of one dimensionality.

    Args:
        items: subjects (``image``/``label`` keys), pairs (``moving_image``, ``fixed_image``, ``moving_label``,
            ``fixed_label``), or plain paths. Other keys are ignored.

    Returns:
        The number of spatial dimensions shared by all the images (2 or 3).

    Raises:
        ValueError: ``items`` is empty or holds no path.
        DataError: a file is unreadable or not an image, holds several volumes, the list mixes 2D and 3D images,
            or an image and its label have different spatial shapes.
    """
    items = list(items)
    shapes: dict[str, tuple[int, ...]] = {}

    def shape_of(path: str | os.PathLike) -> tuple[int, ...]:
        key = abspath(path)
        if key not in shapes:
            shapes[key] = read_spatial_shape(key)
        return shapes[key]

    for item in items:
        if isinstance(item, Mapping):
            for image_key, label_key in _IMAGE_LABEL_KEYS:
                image = shape_of(item[image_key]) if item.get(image_key) else None
                label = shape_of(item[label_key]) if item.get(label_key) else None
                if image is not None and label is not None and image != label:
                    raise DataError(
                        f"label {abspath(item[label_key])} has spatial shape {label} but its image "
                        f"{abspath(item[image_key])} has {image}; they must share one grid (resample the label)."
                    )
        else:
            shape_of(item)
    if not shapes:
        raise ValueError(f"items must hold at least one image path, got {len(items)} item(s) without any.")
    by_ndim: dict[int, list[str]] = {}
    for path, shape in shapes.items():
        by_ndim.setdefault(len(shape), []).append(path)
    if len(by_ndim) > 1:
        p2, p3 = by_ndim[2][0], by_ndim[3][0]
        raise DataError(
            f"the datalist mixes 2D and 3D images: {p2} is 2D (shape {shapes[p2]}, {len(by_ndim[2])} such file(s)) "
            f"but {p3} is 3D (shape {shapes[p3]}, {len(by_ndim[3])} such file(s)); use one dimensionality per run "
            "(a 3D file with a single slice counts as 2D)."
        )
    return next(iter(by_ndim))


def _header_shape(path: str) -> tuple[tuple[int, ...], int]:
    """``(shape, number of components per voxel)`` read from the header only."""
    if not os.path.isfile(path):
        raise DataError(f"image {path} does not exist; fix the path or add the missing file.")
    import nibabel as nib

    try:
        img = nib.load(path)
        return tuple(int(s) for s in img.shape), 1
    except Exception as nib_error:
        if Path(path).name.lower().endswith(_NIBABEL_ONLY):
            raise DataError(f"image {path} is unreadable ({_short(nib_error)}); re-create or re-download it.") from None
        error = nib_error
    try:  # formats nibabel does not read (.mha, .nrrd, .nhdr, ...): ITK header only
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        reader.ReadImageInformation()
        return tuple(int(s) for s in reader.GetSize()), int(reader.GetNumberOfComponents())
    except Exception:
        raise DataError(
            f"image {path} is unreadable or not a NIfTI/ITK image ({_short(error)}); convert it to .nii.gz."
        ) from None


def _short(error: BaseException) -> str:
    """A one-line, bounded description of an exception."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 120 else text[:117] + "..."
