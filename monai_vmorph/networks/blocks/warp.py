"""Warping an image by a dense displacement field: the package's one coordinate convention.

Convention (used everywhere inside ``monai_vmorph``; only :mod:`monai_vmorph.io` converts to mm / LPS):

* An image has shape ``(B, C, *S)`` with ``S = (H, W)`` in 2D or ``(D, H, W)`` in 3D.
* A dense displacement field (DDF) ``u`` has shape ``(B, ndim, *S)`` in **voxel units**; channel ``k`` is
  the displacement along array axis ``k`` (axis ``k`` of ``S``).
* The transform is ``phi(x) = x + u(x)`` over array indices ``x``; warping samples the moving image there:
  ``warped(x) = moving(x + u(x))``. A zero field therefore returns the input exactly.
* Sampling uses :func:`torch.nn.functional.grid_sample` with ``align_corners=True``: array index ``i`` of an
  axis of length ``n`` sits at normalised coordinate ``-1 + 2 i / (n - 1)``, and the grid's last dimension
  lists the axes in reverse order (``x`` = last array axis first), as ``grid_sample`` expects.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_vmorph.validation import check_field, check_finite, check_spatial_tensor

__all__ = ["SpatialTransformer", "identity_grid", "linear_mode", "warp"]

_MODES = {
    "bilinear": "bilinear",
    "linear": "bilinear",
    "trilinear": "bilinear",
    "nearest": "nearest",
    "bicubic": "bicubic",
}
_PADDING_MODES = ("zeros", "border", "reflection")


def linear_mode(spatial_dims: int) -> str:
    """The :func:`torch.nn.functional.interpolate` mode for linear interpolation in ``spatial_dims`` dims."""
    return {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]


def identity_grid(
    spatial_shape: Sequence[int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The identity sampling grid for ``grid_sample(..., align_corners=True)``.

    Args:
        spatial_shape: ``S``, the spatial shape of the images to sample.
        device: device of the grid.
        dtype: dtype of the grid.

    Returns:
        Tensor of shape ``(1, *S, ndim)`` with normalised coordinates in ``[-1, 1]``, last axis reversed.
    """
    device = torch.device(device) if device is not None else torch.get_default_device()
    return _identity_grid([int(n) for n in spatial_shape], device, dtype)


def _identity_grid(spatial_shape: list[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`identity_grid` with TorchScript's argument types."""
    ndim = len(spatial_shape)
    # reduced-precision grids are built in float32 and rounded once
    work_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    theta = torch.eye(ndim, ndim + 1, device=device, dtype=work_dtype).unsqueeze(0)
    grid = F.affine_grid(theta, [1, 1] + list(spatial_shape), align_corners=True)  # noqa: RUF005 (TorchScript: no [*a])
    return grid.to(dtype)


@functools.lru_cache(maxsize=4)
def _cached_identity(spatial_shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`identity_grid`, built once per (shape, device, dtype) and shared: internal, never written to.

    Rebuilding the grid costs an ``affine_grid`` matmul and a fresh full-size allocation on every warp (about
    20 ms of a 0.6 s 96x112x96 registration on 2 CPU cores); the few grids a run uses are kept instead.
    """
    return _identity_grid(list(spatial_shape), device, dtype)


@torch.jit.unused
def _eager_identity(spatial_shape: list[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The cached grid, except under tracing (a traced graph would store it) and under ``torch.compile`` /
    ``torch.export`` (their fake tensors would be cached and break every later eager call)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return _identity_grid(spatial_shape, device, dtype)
    return _cached_identity(tuple(spatial_shape), device, dtype)


def _identity(spatial_shape: list[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The identity grid for internal use: cached in eager mode, built afresh in TorchScript (which has no cache)."""
    if torch.jit.is_scripting():
        return _identity_grid(spatial_shape, device, dtype)
    return _eager_identity(spatial_shape, device, dtype)


def _sampling_grid(
    ddf: torch.Tensor, identity: torch.Tensor | None, image_shape: list[int] | None = None
) -> torch.Tensor:
    """Normalised sampling grid ``(B, *S, ndim)`` for ``x + ddf(x)`` (no checks).

    ``image_shape`` is the sampled image's spatial shape when it differs from the field's: then ``identity`` holds
    the field's voxels in the image's normalised coordinates (e.g. a box of the image's identity grid).
    """
    spatial_shape = list(ddf.shape[2:]) if image_shape is None else image_shape
    if identity is None:
        identity = _identity(spatial_shape, ddf.device, ddf.dtype)
    return torch.addcmul(identity, ddf.flip([1]).movedim(1, -1), _grid_units(spatial_shape, ddf))


def _grid_units(spatial_shape: list[int], like: torch.Tensor) -> torch.Tensor:
    """``(ndim,)`` normalised-coordinate length of one voxel per axis, in the grid's reversed axis order
    (``align_corners=True``: ``2 / (n - 1)``, and 2 for an axis of one voxel); ``like``'s device and dtype."""
    units: list[float] = []
    for n in spatial_shape:
        units.insert(0, 2.0 / max(n - 1, 1))
    return torch.tensor(units, dtype=like.dtype, device=like.device)


def grid_sample_3d_parallel(
    image: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros"
) -> torch.Tensor:
    """``F.grid_sample(image, grid, mode, padding_mode, align_corners=True)``, split over CPU threads in 3D.

    PyTorch's CPU kernel for 3D ``grid_sample`` (forward and backward) runs the items of a batch in parallel and each
    item on one thread, so a single registration pair uses one core whatever ``torch.get_num_threads()`` says
    (measured on 2 cores, 96x112x96: 45 ms with 1 or 2 threads). With one image and one grid, the grid is cut into
    ``get_num_threads()`` slabs along its first spatial axis (padded to equal slabs) that are sampled as a batch of
    the same (expanded, not copied) image, and the slabs are put back together: the same values, 3x faster on 2 cores
    in that measurement. Other cases (2D, batches, CUDA, one thread, small grids, TorchScript) call ``grid_sample``
    directly.

    Args:
        image: ``(B, C, *S_in)``.
        grid: ``(B, *S_out, ndim)`` normalised sampling positions (``align_corners=True``), last axis reversed.
        mode: ``grid_sample`` mode.
        padding_mode: ``grid_sample`` padding mode.

    Returns:
        ``(B, C, *S_out)``.
    """
    if torch.jit.is_scripting():
        return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    return _grid_sample_slabs(image, grid, mode, padding_mode)


@torch.jit.unused
def _grid_sample_slabs(image: torch.Tensor, grid: torch.Tensor, mode: str, padding_mode: str) -> torch.Tensor:
    parts = torch.get_num_threads()
    single_cpu_pair = grid.dim() == 5 and image.device.type == "cpu" and image.shape[0] == grid.shape[0] == 1
    if not single_cpu_pair or parts < 2 or grid.shape[1] < 4 * parts:
        return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    depth = grid.shape[1]
    slab = -(-depth // parts)
    if slab * parts != depth:
        grid = F.pad(grid, (0, 0, 0, 0, 0, 0, 0, slab * parts - depth))
    slabs = grid.reshape(parts, slab, *grid.shape[2:])
    out = F.grid_sample(
        image.expand(parts, *image.shape[1:]), slabs, mode=mode, padding_mode=padding_mode, align_corners=True
    )
    out = out.movedim(0, 1).reshape(1, image.shape[1], slab * parts, *out.shape[3:])
    return out[:, :, :depth]


def _warp(
    image: torch.Tensor,
    ddf: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
    identity: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`warp` without argument checks, for internal loops (integration) on validated tensors.

    ``identity``: the identity grid to displace (default: the image's); a box of the image's identity grid warps only
    that box, with ``ddf`` given on the box.
    """
    grid = _sampling_grid(ddf, identity, list(image.shape[2:]))
    if grid.dtype != image.dtype:
        grid = grid.to(image.dtype)
    if grid.shape[0] != image.shape[0]:
        batch = max(grid.shape[0], image.shape[0])
        grid = grid.expand([batch] + list(grid.shape[1:]))  # noqa: RUF005 (TorchScript has no [*a])
        image = image.expand([batch] + list(image.shape[1:]))  # noqa: RUF005
    return grid_sample_3d_parallel(image, grid, mode, padding_mode)


def warp(image: torch.Tensor, ddf: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros") -> torch.Tensor:
    """Sample ``image`` at ``x + ddf(x)`` (see the module docstring for the convention).

    Args:
        image: ``(B, C, *S)`` image. Floating point; integer label maps are accepted with ``mode="nearest"``
            and returned with their integer dtype.
        ddf: ``(B, ndim, *S)`` displacement in voxel units, channel ``k`` along array axis ``k``.
            A batch of 1 on either side is broadcast against the other.
        mode: ``"bilinear"`` (``"linear"``/``"trilinear"`` are aliases; linear in 2D and 3D), ``"nearest"``
            for label maps, or ``"bicubic"`` (2D only).
        padding_mode: value outside the image: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        The warped image, ``(B, C, *S)``, same dtype as ``image``.
    """
    ndim = check_spatial_tensor(image, "image")
    check_field(ddf, "ddf", spatial_shape=image.shape[2:])
    if image.shape[0] != ddf.shape[0] and 1 not in (image.shape[0], ddf.shape[0]):
        raise ValueError(
            f"image and ddf must have the same batch size (or one of them 1), got {image.shape[0]} and {ddf.shape[0]}."
        )
    grid_mode = _check_mode(mode, ndim)
    _check_padding_mode(padding_mode)
    if image.is_floating_point():
        return _warp(image, ddf, grid_mode, padding_mode)
    if grid_mode != "nearest" or image.dtype == torch.bool or image.is_complex():
        raise ValueError(
            f"image has dtype {image.dtype}; interpolating it needs a floating-point image, "
            f"or mode='nearest' for an integer label map (got mode={mode!r})."
        )
    # integers up to 2**24 are exact in float32; wider integer types go through float64
    work_dtype = torch.float64 if image.dtype in (torch.int32, torch.int64) else torch.float32
    out = _warp(image.to(work_dtype), ddf.to(work_dtype), "nearest", padding_mode)
    return out.round().to(image.dtype)


def _check_mode(mode: str, ndim: int) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}.")
    if _MODES[mode] == "bicubic" and ndim != 2:
        raise ValueError(f"mode='bicubic' is only available in 2D, got a {ndim}D image; use 'bilinear'.")
    return _MODES[mode]


def _check_padding_mode(padding_mode: str) -> None:
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {list(_PADDING_MODES)}, got {padding_mode!r}.")


class SpatialTransformer(nn.Module):
    """Warp images by dense displacement fields; a thin module around :func:`warp`.

    MONAI's :class:`monai.networks.blocks.Warp` rebuilds and caches a voxel-index grid on the module (shared
    mutable state, not safe across devices/dtypes) and defaults to ``border`` padding; this module keeps no
    state, accepts integer label maps with ``mode="nearest"``, and checks its inputs with clear errors.

    Args:
        mode: interpolation, ``"bilinear"`` (linear in 2D and 3D), ``"nearest"`` or ``"bicubic"`` (2D).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.
        check_finite: raise a ``ValueError`` when the image or field holds NaN/inf (one reduction each).
    """

    def __init__(self, mode: str = "bilinear", padding_mode: str = "zeros", check_finite: bool = True) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}.")
        _check_padding_mode(padding_mode)
        self.mode = mode
        self.padding_mode = padding_mode
        self.check_finite = check_finite

    def forward(self, image: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        """Warp ``image`` ``(B, C, *S)`` by ``ddf`` ``(B, ndim, *S)`` (voxel units); returns ``(B, C, *S)``."""
        if self.check_finite and isinstance(image, torch.Tensor) and isinstance(ddf, torch.Tensor):
            check_finite(image, "image")
            check_finite(ddf, "ddf")
        return warp(image, ddf, self.mode, self.padding_mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, padding_mode={self.padding_mode!r}"
