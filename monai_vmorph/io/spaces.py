"""Native scan space <-> network grid: the one place that maps between physical space and array grids.

Conventions (the rest of :mod:`monai_vmorph.io` refers to this docstring):

* **Grid.** A grid is ``(shape, affine)``. ``shape`` is the spatial shape ``S`` in nibabel order (array axis ``a``
  is ITK index axis ``a``; SimpleITK's ``GetArrayFromImage`` reverses it). ``affine`` is the homogeneous
  ``(ndim + 1, ndim + 1)`` matrix that maps a voxel index to **RAS+ world millimetres** (x to the Right, y
  Anterior, z Superior), i.e. nibabel's ``img.affine``.
* **2D grids use 3x3 affines** over the (R, A) plane. A 2D slice stored as an ``(X, Y, 1)`` NIfTI has its 4x4
  affine reduced by dropping the third row and column, exactly as
  :class:`monai_vmorph.transforms.EnsureSpatialDimsd` does (:func:`affine_2d`). A 4x4 affine given with a 2D
  shape is an error, so the number of spatial dims is never ambiguous.
* **Images** are ``S`` or channel-first ``(C, *S)`` arrays, NumPy or torch; every function returns the type it got
  (tensors on their device).
* **Physical displacement fields** on a grid have shape ``(*S, ndim)``: the vector at voxel ``x`` is
  ``T(p) - p`` in RAS millimetres, where ``p = affine @ x`` is the voxel's world point and ``T`` the transform.
  Warping *pulls back*: ``warped(x) = moving(T(p))``, as ITK's ``DisplacementFieldTransform`` and VoxelMorph do.
* **Network DDFs** are ``(ndim, *S_net)`` (or ``(1, ndim, *S_net)``) in voxel units of the network grid, channel
  ``k`` along array axis ``k`` (:mod:`monai_vmorph.networks.blocks.warp`).
* **ITK / SimpleITK** use LPS: ``world_LPS = diag(-1, -1, 1) world_RAS`` (``diag(-1, -1)`` in 2D). An ITK image's
  origin is the LPS point of voxel 0 and ``direction @ diag(spacing)`` the LPS linear part of the affine; the
  conversions live in :mod:`monai_vmorph.io.itk_fields`.
* **Sampling rule (ITK's).** A point with continuous index ``c`` (``inv(affine) @ p``) is *inside* a grid of
  ``n`` voxels along an axis when ``-0.5 <= c < n - 0.5`` (the voxels' cells). Inside, values are interpolated
  (linear, or nearest) with indices clamped to ``[0, n - 1]``, so the border voxel's value extends half a voxel;
  outside, the value is ``padding_value`` (zero displacement for fields). This is what ``sitk.Resample`` and
  ``DisplacementFieldTransform`` do, so results agree to float precision; nearest-neighbour differs only on
  exact ties (torch rounds half to even, ITK half up).
* **Network grid** (:func:`network_grid`): axis-aligned RAS, voxel size ``pixdim``, ``spatial_size`` voxels,
  centred on the centre of the fixed image's field of view.

Computations run in float64 in slabs of at most ``2**20`` output voxels, so memory stays bounded for full-size scans.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import io_orientation

__all__ = [
    "MAX_LABELS",
    "affine_2d",
    "displacement_at_points",
    "native_displacement",
    "network_grid",
    "resample",
    "resample_displacement",
    "warp_physical",
]

_CHUNK = 2**20  # output voxels per grid_sample call
MAX_LABELS = 1000  # more distinct values than this in "label" mode is an intensity image, not a label map
_MODES = ("linear", "nearest")
_WARP_MODES = ("linear", "nearest", "label")


# --------------------------------------------------------------------------------------------------- checks
def _as_affine(affine: object, ndim: int, name: str) -> np.ndarray:
    """``affine`` as a float64 ``(ndim + 1, ndim + 1)`` NumPy array, checked."""
    a = affine.detach().cpu().numpy() if isinstance(affine, torch.Tensor) else np.asarray(affine)
    a = a.astype(np.float64)
    if a.shape != (ndim + 1, ndim + 1):
        hint = " (2D grids use 3x3 affines; see monai_vmorph.io.affine_2d)" if ndim == 2 and a.shape == (4, 4) else ""
        raise ValueError(
            f"{name} must be a {ndim + 1}x{ndim + 1} affine for a {ndim}D grid, got shape {a.shape}{hint}."
        )
    if not np.all(np.isfinite(a)) or abs(np.linalg.det(a[:ndim, :ndim])) < 1e-12:
        raise ValueError(f"{name} must be a finite, invertible affine, got {a.tolist()}.")
    return a


def _as_shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except TypeError as err:
        raise ValueError(f"{name} must be a sequence of 2 or 3 positive ints, got {shape!r}.") from err
    if len(out) not in (2, 3) or any(s < 1 for s in out) or any(float(s) != o for s, o in zip(shape, out, strict=True)):
        raise ValueError(f"{name} must be a sequence of 2 or 3 positive ints, got {shape!r}.")
    return out


def _to_tensor(x: object, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.as_tensor() if hasattr(x, "as_tensor") else x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{name} must be a NumPy array or a torch.Tensor, got {type(x).__name__}.")


def _split_channels(image: torch.Tensor, ndim: int, name: str) -> tuple[torch.Tensor, bool]:
    """``(C, *S)`` view of ``image`` (``S`` or ``(C, *S)``) and whether a channel axis was added."""
    if image.dim() == ndim:
        return image.unsqueeze(0), True
    if image.dim() == ndim + 1:
        return image, False
    raise ValueError(
        f"{name} must have shape S or (C, *S) with {ndim} spatial dims (its affine is "
        f"{ndim + 1}x{ndim + 1}), got shape {tuple(image.shape)}."
    )


def _check_field(field: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    if tuple(field.shape) != (*shape, len(shape)):
        raise ValueError(
            f"{name} must have shape {(*shape, len(shape))} (the reference grid's shape + (ndim,)), "
            f"got {tuple(field.shape)}."
        )
    if not field.is_floating_point() or not bool(torch.isfinite(field).all()):
        raise ValueError(f"{name} must be a finite floating-point field (RAS millimetres).")
    return field


def affine_2d(affine: object) -> np.ndarray:
    """Reduce the 4x4 affine of a 2D slice stored as ``(X, Y, 1)`` to the 3x3 affine of the (R, A) plane.

    Drops the third row and column, as :class:`monai_vmorph.transforms.EnsureSpatialDimsd` does; exact when the
    slice lies in an axial plane (no coupling between the first two axes and z), which is how 2D images are stored.

    Args:
        affine: ``(4, 4)`` affine (a ``(3, 3)`` one is returned unchanged).

    Returns:
        ``(3, 3)`` float64 affine.
    """
    a = np.asarray(affine, dtype=np.float64)
    if a.shape == (3, 3):
        return a.copy()
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4 (or already 3x3), got shape {a.shape}.")
    return a[np.ix_([0, 1, 3], [0, 1, 3])]


# --------------------------------------------------------------------------------------------------- network grid
def network_grid(
    fixed_shape: Sequence[int],
    fixed_affine: object,
    pixdim: Sequence[float] | float | None,
    spatial_size: Sequence[int],
) -> tuple[tuple[int, ...], np.ndarray]:
    """The grid the network runs on for a fixed image.

    Axis-aligned RAS (array axis ``k`` along world axis ``k``, increasing), voxel size ``pixdim``, ``spatial_size``
    voxels, centred on the centre of the fixed image's field of view (the world point of its continuous index
    ``(n - 1) / 2``, the centre of its bounding box). This is the space of the bundle preprocessing
    (Orientation RAS -> Spacing -> ResizeWithPadOrCrop) up to a sub-voxel centring choice (MONAI pads/crops by
    whole voxels from the corner-aligned Spacing grid). For an **oblique** fixed image MONAI keeps the rotation,
    while this grid has none: the network sees the scan resampled onto world axes. Images must therefore be put
    on this grid with :func:`resample`, and results brought back with :func:`native_displacement`.

    Args:
        fixed_shape: spatial shape of the fixed image (2 or 3 ints).
        fixed_affine: its ``(ndim + 1, ndim + 1)`` RAS affine.
        pixdim: voxel size in mm, one value or one per RAS axis; ``None`` keeps the fixed image's voxel sizes,
            reordered to RAS (the array axis closest to each world axis, as MONAI's Orientation reorders them).
        spatial_size: voxels per axis of the network grid.

    Returns:
        ``(shape, affine)``: the network's spatial shape and its ``(ndim + 1, ndim + 1)`` affine.
    """
    shape = _as_shape(fixed_shape, "fixed_shape")
    ndim = len(shape)
    affine = _as_affine(fixed_affine, ndim, "fixed_affine")
    size = _as_shape(spatial_size, "spatial_size")
    if len(size) != ndim:
        raise ValueError(f"spatial_size must have {ndim} entries for a {ndim}D image, got {spatial_size!r}.")
    if pixdim is None:
        ornt = io_orientation(affine)  # row a: (world axis of array axis a, flip)
        norms = np.linalg.norm(affine[:ndim, :ndim], axis=0)
        spacing = np.empty(ndim)
        spacing[ornt[:, 0].astype(int)] = norms
    else:
        values = np.asarray(pixdim, dtype=np.float64)
        if values.ndim > 1 or values.size not in (1, ndim):
            raise ValueError(f"pixdim must be one value or {ndim} values, got {pixdim!r}.")
        spacing = np.broadcast_to(values.reshape(-1), (ndim,)).copy()
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ValueError(f"pixdim must hold positive voxel sizes in mm, got {pixdim!r}.")
    centre = affine[:ndim, :ndim] @ ((np.array(shape) - 1) / 2) + affine[:ndim, ndim]
    out = np.eye(ndim + 1)
    out[:ndim, :ndim] = np.diag(spacing)
    out[:ndim, ndim] = centre - spacing * (np.array(size) - 1) / 2
    return size, out


# --------------------------------------------------------------------------------------------------- sampling core
def _slabs(shape: tuple[int, ...]) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges along axis 0 with at most ``_CHUNK`` voxels each (at least one slice)."""
    per_slice = int(np.prod(shape[1:]))
    step = max(1, _CHUNK // per_slice)
    for start in range(0, shape[0], step):
        yield start, min(start + step, shape[0])


def _source_indices(
    src_affine: np.ndarray,
    out_shape: tuple[int, ...],
    out_affine: np.ndarray,
    displacement: torch.Tensor | None,
    device: torch.device,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Per slab of output voxels (:func:`_slabs`): ``(start, stop, c)`` with ``c`` the ``(N, ndim)`` float64
    continuous source index of the slab's voxels ``x``, i.e. of the world point ``out_affine @ x + displacement(x)``."""
    ndim = len(out_shape)
    # continuous source index = R @ x + s (+ inv(A_src)[:n, :n] @ d)
    inv_src = np.linalg.inv(src_affine)
    rel = inv_src @ out_affine
    r = torch.as_tensor(rel[:ndim, :ndim].T, dtype=torch.float64, device=device)
    s = torch.as_tensor(rel[:ndim, ndim], dtype=torch.float64, device=device)
    m_inv = torch.as_tensor(inv_src[:ndim, :ndim].T, dtype=torch.float64, device=device)
    axes = [torch.arange(k, dtype=torch.float64, device=device) for k in out_shape[1:]]
    for start, stop in _slabs(out_shape):
        first = torch.arange(start, stop, dtype=torch.float64, device=device)
        x = torch.stack(torch.meshgrid(first, *axes, indexing="ij"), dim=-1).reshape(-1, ndim)
        c = x @ r + s
        if displacement is not None:
            c = c + displacement[start:stop].reshape(-1, ndim).to(torch.float64) @ m_inv
        yield start, stop, c


def _inside(c: torch.Tensor, src_shape: Sequence[int]) -> torch.Tensor:
    """``(N,)`` mask of the continuous indices ``c`` ``(N, ndim)`` inside the source grid (ITK's rule)."""
    n = torch.tensor(list(src_shape), dtype=torch.float64, device=c.device)
    return ((c >= -0.5) & (c < n - 0.5)).all(dim=1)


def _sample(
    volume: torch.Tensor,
    src_affine: np.ndarray,
    out_shape: tuple[int, ...],
    out_affine: np.ndarray,
    displacement: torch.Tensor | None,
    mode: str,
    padding_value: float,
) -> torch.Tensor:
    """Sample ``volume`` ``(C, *S_src)`` (float64) at ``out_affine @ x + displacement(x)`` for every voxel ``x``.

    Returns the ``(C, *out_shape)`` float64 values, ``padding_value`` outside (the sampling rule in the module
    docstring).
    """
    values = torch.empty((volume.shape[0], *out_shape), dtype=torch.float64, device=volume.device)
    for start, stop, c in _source_indices(src_affine, out_shape, out_affine, displacement, volume.device):
        v = _sample_at(volume, c, mode, padding_value)
        values[:, start:stop] = v.reshape(volume.shape[0], stop - start, *out_shape[1:])
    return values


def _sample_at(volume: torch.Tensor, c: torch.Tensor, mode: str, padding_value: float) -> torch.Tensor:
    """``(C, N)`` values of ``volume`` ``(C, *S_src)`` (float64) at the continuous indices ``c`` ``(N, ndim)``,
    ``padding_value`` outside (the sampling rule in the module docstring)."""
    ndim = c.shape[1]
    n = torch.tensor(list(volume.shape[1:]), dtype=torch.float64, device=volume.device)
    scale = torch.where(n > 1, 2.0 / (n - 1).clamp(min=1), torch.zeros_like(n))
    offset = torch.where(n > 1, -torch.ones_like(n), torch.zeros_like(n))
    grid = (c * scale + offset).flip(-1).reshape(1, *([1] * (ndim - 1)), -1, ndim)
    v = F.grid_sample(volume.unsqueeze(0), grid, mode=mode, padding_mode="border", align_corners=True)
    v = v.reshape(volume.shape[0], -1)
    return torch.where(_inside(c, volume.shape[1:]), v, torch.full_like(v, padding_value))


def _output(values: torch.Tensor, like: torch.Tensor, squeeze: bool, was_numpy: bool, dtype: torch.dtype):
    out = values.squeeze(0) if squeeze else values
    if not dtype.is_floating_point:
        out = out.round()
    out = out.to(dtype)
    return out.cpu().numpy() if was_numpy else out.to(like.device)


def _resample_any(
    image: object,
    affine: object,
    out_shape: Sequence[int],
    out_affine: object,
    displacement: object | None,
    mode: str,
    padding_value: float,
    modes: tuple[str, ...],
):
    shape = _as_shape(out_shape, "out_shape")
    ndim = len(shape)
    src_affine = _as_affine(affine, ndim, "affine")
    dst_affine = _as_affine(out_affine, ndim, "out_affine")
    if mode not in modes:
        raise ValueError(f"mode must be one of {list(modes)}, got {mode!r}.")
    was_numpy = isinstance(image, np.ndarray)
    tensor = _to_tensor(image, "image")
    if tensor.is_complex() or tensor.numel() == 0:
        raise ValueError(
            f"image must be a non-empty real array, got dtype {tensor.dtype}, shape {tuple(tensor.shape)}."
        )
    volume, squeeze = _split_channels(tensor, ndim, "image")
    field = None
    if displacement is not None:
        field = _check_field(_to_tensor(displacement, "displacement_ras").to(tensor.device), shape, "displacement_ras")
    floating = tensor.is_floating_point()
    if mode == "label":
        return _warp_labels(volume, src_affine, shape, dst_affine, field, padding_value, squeeze, was_numpy)
    dtype = tensor.dtype if (floating or mode == "nearest") else torch.float32
    grid_mode = "bilinear" if mode == "linear" else "nearest"
    values = _sample(volume.to(torch.float64), src_affine, shape, dst_affine, field, grid_mode, padding_value)
    return _output(values, tensor, squeeze, was_numpy, dtype)


def _warp_labels(
    volume: torch.Tensor,
    src_affine: np.ndarray,
    shape: tuple[int, ...],
    dst_affine: np.ndarray,
    field: torch.Tensor | None,
    padding_value: float,
    squeeze: bool,
    was_numpy: bool,
):
    """``label`` mode: the value whose indicator, linearly interpolated, is largest (ties: the smaller value).

    The interpolated indicator of a value is the sum of the linear weights of the ``2**ndim`` neighbouring voxels
    that hold it, so each point needs only its neighbours' values and weights: the cost does not grow with the
    number of labels (35 in OASIS), unlike interpolating one indicator image per label.
    """
    ndim = len(shape)
    device = volume.device
    src_shape = volume.shape[1:]
    n = torch.tensor(list(src_shape), dtype=torch.float64, device=device)
    strides = torch.tensor([int(np.prod(src_shape[k + 1 :])) for k in range(ndim)], device=device)
    # flat offsets of the 2**ndim neighbours from the lower corner, in np.ndindex order (axis 0 slowest); an axis of
    # one voxel has no upper neighbour
    corners = torch.tensor(list(np.ndindex(*[2] * ndim)), device=device)
    offsets = (corners * strides * (n > 1).long()).sum(-1)
    per_slice = int(np.prod(shape[1:]))
    channels = []
    for channel in volume:
        # int64 for the sort: PyTorch's CPU unique has no kernel for uint16/uint32/uint64 (every value up to 2**63)
        source = channel.to(torch.int64) if not channel.is_floating_point() else channel
        labels, codes = torch.unique(source, return_inverse=True)  # codes follow the sorted values
        if labels.numel() > MAX_LABELS:
            raise ValueError(
                f"mode='label' expects a label map, got {labels.numel()} distinct values (more than {MAX_LABELS}); "
                "use mode='linear' for intensity images."
            )
        codes = codes.reshape(-1)
        out = torch.empty(int(np.prod(shape)), dtype=source.dtype, device=device)
        for start, stop, c in _source_indices(src_affine, shape, dst_affine, field, device):
            clamped = torch.minimum(c.clamp(min=0), n - 1)  # border voxels extend half a voxel (ITK's rule)
            low = torch.minimum(clamped.floor(), (n - 2).clamp(min=0))
            frac = (clamped - low).float()  # in [0, 1]; 0 on axes of one voxel
            neighbour = codes[(low.long() * strides).sum(-1, keepdim=True) + offsets]  # (N, 2**ndim) label codes
            weight = torch.ones_like(frac[:, :1])
            for k in range(ndim):  # linear weights of the neighbours, built axis by axis in the same order
                pair = torch.stack([1 - frac[:, k], frac[:, k]], dim=-1)
                weight = (weight[:, :, None] * pair[:, None, :]).reshape(len(c), -1)
            score = torch.zeros_like(weight)  # interpolated indicator of each neighbour's label
            for j in range(neighbour.shape[1]):
                score.addcmul_(weight[:, j : j + 1], (neighbour == neighbour[:, j : j + 1]).to(weight.dtype))
            best = score.max(dim=1, keepdim=True).values
            chosen = torch.where(score == best, neighbour, labels.numel()).min(dim=1).values
            value = labels[chosen]
            out[start * per_slice : stop * per_slice] = torch.where(
                _inside(c, src_shape), value, torch.full_like(value, padding_value)
            )
        channels.append(out.reshape(shape).to(channel.dtype))
    out = torch.stack(channels)
    out = out.squeeze(0) if squeeze else out
    return out.cpu().numpy() if was_numpy else out


# --------------------------------------------------------------------------------------------------- public maths
def resample(
    image: np.ndarray | torch.Tensor,
    affine: object,
    out_shape: Sequence[int],
    out_affine: object,
    mode: str = "linear",
    padding_value: float = 0.0,
) -> np.ndarray | torch.Tensor:
    """Resample an image onto another grid by physical position (conventions: :mod:`monai_vmorph.io.spaces`).

    ``out[x] = image`` at continuous index ``inv(affine) @ out_affine @ x``, linear or nearest, with ITK's
    inside/outside rule (module docstring); points outside the image get ``padding_value``.

    Args:
        image: ``S`` or ``(C, *S)`` array/tensor on the grid ``affine``.
        affine: ``(ndim + 1, ndim + 1)`` RAS affine of ``image``.
        out_shape: spatial shape of the output grid (fixes ``ndim``).
        out_affine: ``(ndim + 1, ndim + 1)`` RAS affine of the output grid.
        mode: ``"linear"`` or ``"nearest"``.
        padding_value: value of output voxels outside the image.

    Returns:
        ``out_shape`` or ``(C, *out_shape)``, the type of ``image``. Floating images keep their dtype; integer
        images keep it with ``"nearest"`` (labels) and become float32 with ``"linear"``.
    """
    return _resample_any(image, affine, out_shape, out_affine, None, mode, padding_value, _MODES)


def warp_physical(
    moving: np.ndarray | torch.Tensor,
    moving_affine: object,
    ref_shape: Sequence[int],
    ref_affine: object,
    displacement_ras: np.ndarray | torch.Tensor,
    mode: str = "linear",
    padding_value: float = 0.0,
) -> np.ndarray | torch.Tensor:
    """Warp a moving image onto a reference grid by a physical displacement field.

    ``warped[x] = moving`` at world point ``p(x) + d(x)`` with ``p(x) = ref_affine @ x``, i.e. at continuous
    moving index ``inv(moving_affine) @ (p(x) + d(x))`` (conventions: :mod:`monai_vmorph.io.spaces`). With the
    field of an ITK ``DisplacementFieldTransform`` on the reference grid this equals ``sitk.Resample``. A field
    on another grid is first brought here with :func:`monai_vmorph.io.resample_displacement`.

    Args:
        moving: ``S_mov`` or ``(C, *S_mov)`` array/tensor.
        moving_affine: its ``(ndim + 1, ndim + 1)`` RAS affine.
        ref_shape: spatial shape ``S`` of the reference (output) grid.
        ref_affine: its ``(ndim + 1, ndim + 1)`` RAS affine.
        displacement_ras: ``(*S, ndim)`` displacement in RAS mm at the reference voxels (finite).
        mode: ``"linear"``, ``"nearest"``, or ``"label"``: each value present is one-hot encoded, warped linearly,
            and the argmax kept (smoother than nearest; keeps the dtype and the label values).
        padding_value: value where the displaced point falls outside the moving image.

    Returns:
        ``S`` or ``(C, *S)``, the type of ``moving``; dtype as :func:`resample` (kept in ``"label"`` mode).
    """
    if displacement_ras is None:
        raise ValueError("displacement_ras must be a (*ref_shape, ndim) field; use resample() for no displacement.")
    return _resample_any(
        moving, moving_affine, ref_shape, ref_affine, displacement_ras, mode, padding_value, _WARP_MODES
    )


def resample_displacement(
    displacement_ras: np.ndarray | torch.Tensor,
    affine: object,
    ref_shape: Sequence[int],
    ref_affine: object,
) -> np.ndarray | torch.Tensor:
    """Evaluate a physical displacement field at the voxels of another grid, as ITK's DisplacementFieldTransform.

    Linear interpolation at each reference voxel's world point, **zero displacement outside the field's domain**
    (ITK's rule, module docstring). The vectors are physical (RAS mm), so they are not rotated.

    Args:
        displacement_ras: ``(*S_field, ndim)`` field in RAS mm on the grid ``affine``.
        affine: ``(ndim + 1, ndim + 1)`` RAS affine of the field's grid.
        ref_shape: target spatial shape ``S``.
        ref_affine: target ``(ndim + 1, ndim + 1)`` RAS affine.

    Returns:
        ``(*S, ndim)`` field in RAS mm, the type and floating dtype of ``displacement_ras``.
    """
    field = _to_tensor(displacement_ras, "displacement_ras")
    ndim = len(_as_shape(ref_shape, "ref_shape"))
    if field.dim() != ndim + 1 or field.shape[-1] != ndim or not field.is_floating_point():
        raise ValueError(
            f"displacement_ras must be a floating (*S, {ndim}) field for a {ndim}D grid, got shape "
            f"{tuple(field.shape)}, dtype {field.dtype}."
        )
    channels = field.movedim(-1, 0)
    out = resample(channels, affine, ref_shape, ref_affine, "linear", 0.0).movedim(0, -1).contiguous()
    return out.cpu().numpy() if isinstance(displacement_ras, np.ndarray) else out


def displacement_at_points(
    displacement_ras: np.ndarray | torch.Tensor, affine: object, points: np.ndarray
) -> np.ndarray:
    """A physical displacement field evaluated at world points, as ITK's ``DisplacementFieldTransform`` does.

    Linear interpolation at each point's continuous index, zero displacement outside the field's domain (the
    sampling rule in the module docstring), so ``points + displacement_at_points(...)`` is the transform of the
    points (e.g. landmarks mapped through the field that :func:`native_displacement` wrote).

    Args:
        displacement_ras: ``(*S, ndim)`` field in RAS mm on the grid ``affine``.
        affine: ``(ndim + 1, ndim + 1)`` RAS affine of the field's grid.
        points: ``(N, ndim)`` world points (RAS mm).

    Returns:
        ``(N, ndim)`` float64 displacements (RAS mm).
    """
    field = _to_tensor(displacement_ras, "displacement_ras").to(torch.float64)
    ndim = field.dim() - 1
    grid_affine = _as_affine(affine, ndim, "affine")
    points = np.asarray(points, dtype=np.float64).reshape(-1, ndim)
    c = torch.as_tensor((np.c_[points, np.ones(len(points))] @ np.linalg.inv(grid_affine).T)[:, :ndim])
    return _sample_at(field.movedim(-1, 0).cpu(), c, "bilinear", 0.0).T.numpy()


def native_displacement(
    ddf_net: np.ndarray | torch.Tensor,
    net_affine: object,
    fixed_shape: Sequence[int],
    fixed_affine: object,
    moving_net_affine: object | None = None,
) -> np.ndarray:
    """The physical displacement, at every native fixed voxel, of the transform a network produced on its grid.

    For a native voxel with world point ``p``: ``q = inv(net_affine) @ p`` (continuous network index),
    ``T(p) = net_affine @ (q + u(q))`` with ``u`` the network DDF linearly interpolated at ``q``, and the result is
    ``T(p) - p = net_affine[:n, :n] @ u(q)``. ``u`` is zero outside the network grid (ITK's inside rule, module
    docstring), so voxels the network did not see are not moved. Warping the native moving image with
    :func:`warp_physical` by this field reproduces the network's warp, without resampling twice.

    When the moving image reached the network on a grid of its own (``moving_net_affine`` ``M``, as in a pipeline
    that resamples and pads/crops each image separately, like the bundles' preprocessing), the network matched
    *voxels*: fixed voxel ``q`` to moving voxel ``q + u(q)``. Then ``T(p) = M @ (q + u(q))``, and outside the network
    grid (``u = 0``) ``T`` is the affine map ``M @ inv(net_affine)`` between the two grids. With
    ``M = net_affine`` this is the formula above.

    Args:
        ddf_net: ``(ndim, *S_net)`` or ``(1, ndim, *S_net)`` DDF in network voxels, channel ``k`` along axis ``k``.
        net_affine: ``(ndim + 1, ndim + 1)`` RAS affine of the network grid (:func:`network_grid`).
        fixed_shape: native spatial shape of the fixed image.
        fixed_affine: its ``(ndim + 1, ndim + 1)`` RAS affine.
        moving_net_affine: ``(ndim + 1, ndim + 1)`` RAS affine of the moving image's grid as the network saw it;
            ``None`` means ``net_affine`` (both images on one grid, as :func:`network_grid` puts them).

    Returns:
        ``(*fixed_shape, ndim)`` NumPy displacement in RAS mm; float32 for float32/16 DDFs, else float64.
    """
    shape = _as_shape(fixed_shape, "fixed_shape")
    ndim = len(shape)
    ddf = _to_tensor(ddf_net, "ddf_net").detach()
    if ddf.dim() == ndim + 2 and ddf.shape[0] == 1:
        ddf = ddf[0]
    if ddf.dim() != ndim + 1 or ddf.shape[0] != ndim or not ddf.is_floating_point():
        raise ValueError(
            f"ddf_net must be a floating ({ndim}, *S_net) or (1, {ndim}, *S_net) field for a {ndim}D fixed image, "
            f"got shape {tuple(ddf.shape)}, dtype {ddf.dtype}."
        )
    if not bool(torch.isfinite(ddf).all()):
        raise ValueError("ddf_net must be finite, got NaN/inf values.")
    net = _as_affine(net_affine, ndim, "net_affine")
    fixed = _as_affine(fixed_affine, ndim, "fixed_affine")
    moving = net if moving_net_affine is None else _as_affine(moving_net_affine, ndim, "moving_net_affine")
    u = _sample(ddf.to(torch.float64), net, shape, fixed, None, "bilinear", 0.0)
    linear = torch.as_tensor(moving[:ndim, :ndim], dtype=torch.float64, device=u.device)
    out = torch.einsum("ij,j...->...i", linear, u)
    if not np.array_equal(moving, net):
        # T(p) - p = M[:n, :n] u(q) + (M inv(N) - I) p, with p = F x: an affine field G x + g over native voxels x
        g = (moving @ np.linalg.inv(net) @ fixed - fixed)[:ndim]
        g = torch.as_tensor(g, dtype=torch.float64, device=out.device)
        for axis, size in enumerate(shape):
            view = [1] * ndim
            view[axis] = size
            out += torch.arange(size, dtype=torch.float64, device=out.device).reshape(*view, 1) * g[:, axis]
        out += g[:, ndim]
    dtype = np.float64 if ddf.dtype == torch.float64 else np.float32
    return out.cpu().numpy().astype(dtype, copy=False)
