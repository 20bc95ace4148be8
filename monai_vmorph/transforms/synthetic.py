"""Random smooth diffeomorphic deformations: elastic augmentation and synthetic pairs with a known field.

A random field is drawn as Gaussian noise on a coarse control grid (one point every ``control_spacing``
voxels), interpolated linearly to the image grid, smoothed with a Gaussian (MONAI's ``GaussianFilter``) so it
has no kinks, scaled so the velocity's largest component is ``max_displacement`` voxels, and integrated by
scaling and squaring (:func:`~monai_vmorph.networks.integrate_velocity`), which makes the transform a
diffeomorphism. The same code serves 2D and 3D (MONAI's ``Rand2DElasticd``/``Rand3DElasticd`` differ by
dimension and keep no field to evaluate against, hence this module).

Fields follow the package convention (:mod:`monai_vmorph.networks.blocks.warp`): ``(ndim, *S)`` voxel units,
channel ``k`` along array axis ``k``, ``warped(x) = image(x + u(x))``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.networks.layers import GaussianFilter
from monai.transforms import MapTransform, Randomizable

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
from monai_vmorph.networks.blocks.integrate import integrate_velocity
from monai_vmorph.networks.blocks.resize import field_scale_factors, resize_field
from monai_vmorph.networks.blocks.warp import linear_mode, warp

__all__ = ["RandSmoothDeformd", "RandSyntheticFixedd", "RandSyntheticPaird", "random_smooth_field"]


def random_smooth_field(
    spatial_shape: Sequence[int],
    max_displacement: float,
    control_spacing: float = 16.0,
    integration_steps: int = 7,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw a random smooth diffeomorphic displacement field.

    Args:
        spatial_shape: ``S``, 2 or 3 ints.
        max_displacement: largest velocity component in voxels (the displacement's largest component is close
            to it); ``0`` gives the zero field.
        control_spacing: voxels between random control points: larger is smoother.
        integration_steps: scaling-and-squaring steps (``0``: the smoothed velocity is used as the field).
        generator: torch random generator (CPU) for reproducible draws.

    Returns:
        ``(1, ndim, *S)`` float32 displacement field in voxel units.
    """
    shape = tuple(int(n) for n in spatial_shape)
    ndim = len(shape)
    if ndim not in (2, 3) or min(shape) < 2:
        raise ValueError(f"spatial_shape must be 2 or 3 sizes >= 2, got {tuple(spatial_shape)}.")
    if not (math.isfinite(max_displacement) and max_displacement >= 0):
        raise ValueError(f"max_displacement must be a finite number >= 0 (voxels), got {max_displacement!r}.")
    if not control_spacing >= 1:
        raise ValueError(f"control_spacing must be >= 1 voxel, got {control_spacing!r}.")
    # The field only varies on the scale of control_spacing, so it is drawn, smoothed and integrated on a grid
    # with a quarter of that spacing and then resampled (values rescaled) to the image grid: the same field
    # at a fraction of the cost (64x fewer voxels for the default spacing in 3D).
    step = max(1.0, control_spacing / 4.0)
    work = [max(2, math.ceil((n - 1) / step) + 1) for n in shape]
    coarse = [max(2, math.ceil((m - 1) / (control_spacing / step)) + 1) for m in work]
    noise = torch.randn((1, ndim, *coarse), generator=generator)
    velocity = F.interpolate(noise, size=work, mode=linear_mode(ndim), align_corners=True)
    velocity = GaussianFilter(ndim, sigma=control_spacing / step / 4.0)(velocity)
    peak = velocity.abs().max()
    if max_displacement == 0 or peak == 0:
        return torch.zeros((1, ndim, *shape))
    # voxels of the image grid -> voxels of the working grid, per axis
    to_work = torch.tensor(field_scale_factors(shape, work)).view(1, ndim, *([1] * ndim))
    velocity = velocity * (max_displacement / peak) * to_work
    return resize_field(integrate_velocity(velocity, integration_steps), shape)


class _RandFieldMixin(Randomizable):
    """Draws fields from the transform's own ``numpy`` random state (MONAI's ``set_random_state``).

    ``randomize`` tosses the transform's coin (``prob``); :meth:`_draw_field` then draws the field.
    """

    max_displacement: float
    control_spacing: float
    integration_steps: int
    prob: float = 1.0
    _do: bool = False

    def _set_field(
        self, max_displacement: float, control_spacing: float, integration_steps: int, prob: float = 1.0
    ) -> None:
        """Store (and check) the field settings and the probability of applying the transform."""
        if not 0 <= prob <= 1:
            raise ValueError(f"prob must be in [0, 1], got {prob!r}.")
        self.prob = float(prob)
        self.max_displacement = float(max_displacement)
        self.control_spacing = float(control_spacing)
        self.integration_steps = int(integration_steps)
        self._do = False

    def randomize(self, data: object = None) -> None:
        self._do = bool(self.R.rand() < self.prob)

    def _draw_field(self, spatial_shape: Sequence[int]) -> torch.Tensor:
        seed = int(self.R.randint(0, 2**31 - 1))
        generator = torch.Generator().manual_seed(seed)
        return random_smooth_field(
            spatial_shape, self.max_displacement, self.control_spacing, self.integration_steps, generator
        )


def _warp_like(x: torch.Tensor, field: torch.Tensor, mode: str) -> torch.Tensor:
    """Warp a ``(C, *S)`` (Meta)Tensor by a ``(1, ndim, *S)`` field, keeping its dtype and metadata."""
    values = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
    if values.is_floating_point():
        warped = warp(values[None], field.to(values), mode=mode)[0]
    else:
        warped = warp(values[None], field, mode="nearest")[0]
    if isinstance(x, MetaTensor):
        meta = {k: v for k, v in x.meta.items() if k != "affine"}
        return MetaTensor(warped, affine=x.affine, meta=meta)
    return warped


class RandSmoothDeformd(MapTransform, _RandFieldMixin):
    """Random smooth diffeomorphic (elastic) deformation applied identically to every key.

    Use it on an image and its label map together: images are interpolated with ``"bilinear"``, labels with
    ``"nearest"`` (``mode`` gives one mode per key). Shapes of all keys must match.

    Args:
        keys: keys of ``(C, *S)`` tensors to deform with one shared field.
        mode: interpolation per key (or one for all): ``"bilinear"`` or ``"nearest"``.
        prob: probability of deforming a sample.
        max_displacement: largest velocity component in voxels.
        control_spacing: voxels between random control points.
        integration_steps: scaling-and-squaring steps.
        allow_missing_keys: skip keys absent from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mode: str | Sequence[str] = "bilinear",
        prob: float = 0.5,
        max_displacement: float = 3.0,
        control_spacing: float = 16.0,
        integration_steps: int = 7,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        modes = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)
        if len(modes) != len(self.keys):
            raise ValueError(f"mode must be one value or one per key ({len(self.keys)}), got {mode!r}.")
        self.modes = dict(zip(self.keys, modes, strict=True))
        self._set_field(max_displacement, control_spacing, integration_steps, prob)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        present = list(self.key_iterator(d))
        if not self._do or not present:
            return d
        shapes = {tuple(d[k].shape[1:]) for k in present}
        if len(shapes) != 1:
            raise ValueError(
                f"RandSmoothDeformd needs keys {present} on one grid, got spatial shapes {sorted(shapes)}."
            )
        field = self._draw_field(shapes.pop())
        for key in present:
            d[key] = _warp_like(d[key], field, self.modes[key])
        return d


class RandSyntheticPaird(MapTransform, _RandFieldMixin):
    """Turn one scan into a registration pair with a known ground-truth field.

    The input subject's image becomes the moving image; the fixed image is the same image warped by a random
    smooth diffeomorphic field ``u``: ``fixed(x) = moving(x + u(x))``. So ``u`` is exactly the field a perfect
    registration of moving to fixed predicts, stored under ``ddf_true`` as ``(ndim, *S)`` voxel units, and
    endpoint errors can be measured (:func:`monai_vmorph.metrics.endpoint_error`). A label map, when present,
    is warped the same way with nearest-neighbour interpolation.

    Output keys: ``moving_image``, ``fixed_image``, ``moving_label``/``fixed_label`` (if a label was given),
    ``moving_name``/``fixed_name`` (from ``name``) and ``ddf_true``; the input keys are removed. Metadata
    (affine) of the input is kept on both images.

    Args:
        image_key: key of the ``(C, *S)`` input image.
        label_key: key of the ``(1, *S)`` label map (optional in the data).
        max_displacement: largest velocity component in voxels.
        control_spacing: voxels between random control points.
        integration_steps: scaling-and-squaring steps.
    """

    def __init__(
        self,
        image_key: str = IMAGE,
        label_key: str = LABEL,
        max_displacement: float = 4.0,
        control_spacing: float = 16.0,
        integration_steps: int = 7,
    ) -> None:
        MapTransform.__init__(self, [image_key, label_key], allow_missing_keys=True)
        self.image_key, self.label_key = image_key, label_key
        self._set_field(max_displacement, control_spacing, integration_steps)

    def randomize(self, data: object = None) -> None:  # the field is drawn in __call__
        return None

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, object]:
        d = dict(data)
        if self.image_key not in d:
            raise ValueError(f"RandSyntheticPaird needs the key {self.image_key!r}, got keys {sorted(map(str, d))}.")
        image = d.pop(self.image_key)
        label = d.pop(self.label_key, None)
        field = self._draw_field(image.shape[1:])
        name = str(d.pop(NAME, "synthetic"))
        d[MOVING_IMAGE], d[FIXED_IMAGE] = image, _warp_like(image, field, "bilinear")
        if label is not None:
            d[MOVING_LABEL], d[FIXED_LABEL] = label, _warp_like(label, field, "nearest")
        d[MOVING_NAME], d[FIXED_NAME] = name, f"{name}_deformed"
        d[DDF_TRUE] = field[0]
        return d


class RandSyntheticFixedd(MapTransform, _RandFieldMixin):
    """With probability ``prob``, replace a pair's fixed side by a random smooth deformation of its moving side.

    Training on such pairs teaches a network to undo deformations of a known size between two scans of the same
    anatomy (the task of :class:`RandSyntheticPaird`), while the other pairs stay as drawn (e.g. scan-to-scan).
    Use it after loading and resampling (both sides on one grid) and after any per-side augmentation, so the fixed
    image is exactly the (augmented) moving image warped: ``fixed(x) = moving(x + u(x))``. The fixed label is the
    moving label warped by the same field (nearest neighbour), so label losses stay exact. Names are kept
    (``fixed_name`` becomes ``<moving_name>_deformed``). The field is not stored, so that every batch item has the
    same keys whether it was replaced or not.

    Args:
        prob: probability of replacing the fixed side of a pair.
        max_displacement: largest velocity component in voxels.
        control_spacing: voxels between random control points.
        integration_steps: scaling-and-squaring steps.
    """

    def __init__(
        self,
        prob: float = 0.5,
        max_displacement: float = 4.0,
        control_spacing: float = 16.0,
        integration_steps: int = 7,
    ) -> None:
        MapTransform.__init__(self, [MOVING_IMAGE, MOVING_LABEL], allow_missing_keys=True)
        self._set_field(max_displacement, control_spacing, integration_steps, prob)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, object]:
        d = dict(data)
        if MOVING_IMAGE not in d or FIXED_IMAGE not in d:
            raise ValueError(
                f"RandSyntheticFixedd needs the keys {MOVING_IMAGE!r} and {FIXED_IMAGE!r}, got {sorted(map(str, d))}."
            )
        self.randomize()
        if not self._do:
            return d
        moving = d[MOVING_IMAGE]
        field = self._draw_field(moving.shape[1:])
        d[FIXED_IMAGE] = _warp_like(moving, field, "bilinear")
        if d.get(MOVING_LABEL) is not None and FIXED_LABEL in d:
            d[FIXED_LABEL] = _warp_like(d[MOVING_LABEL], field, "nearest")
        if MOVING_NAME in d:
            d[FIXED_NAME] = f"{d[MOVING_NAME]}_deformed"
        return d
