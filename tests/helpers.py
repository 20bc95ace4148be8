"""Small independent references shared by the tests (numpy, analytic fields)."""

from __future__ import annotations

import numpy as np
import torch


def index_grid(shape, dtype=torch.float64) -> torch.Tensor:
    """``(ndim, *shape)`` array indices, channel k = index along axis k."""
    return torch.stack(torch.meshgrid(*[torch.arange(n, dtype=dtype) for n in shape], indexing="ij"))


def affine_ddf(matrix, offset, shape, center=None, dtype=torch.float64) -> torch.Tensor:
    """``(1, ndim, *shape)`` field ``u(x) = (A - I)(x - c) + b`` of the affine map ``x -> A (x - c) + c + b``."""
    ndim = len(shape)
    a = torch.as_tensor(np.asarray(matrix), dtype=dtype)
    b = torch.as_tensor(np.asarray(offset), dtype=dtype)
    c = torch.zeros(ndim, dtype=dtype) if center is None else torch.as_tensor(np.asarray(center), dtype=dtype)
    x = index_grid(shape, dtype) - c.view(ndim, *([1] * ndim))
    ax = torch.einsum("kj,j...->k...", a - torch.eye(ndim, dtype=dtype), x)
    return (ax + b.view(ndim, *([1] * ndim))).unsqueeze(0)


def smooth_random_field(shape, magnitude, seed=0, dtype=torch.float64) -> torch.Tensor:
    """``(1, ndim, *shape)`` smooth random field: a few random sinusoids of at most one period per volume,
    scaled so that the largest component is ``magnitude`` voxels."""
    gen = torch.Generator().manual_seed(seed)
    ndim = len(shape)
    x = index_grid(shape, dtype) / torch.tensor([max(n - 1, 1) for n in shape], dtype=dtype).view(ndim, *([1] * ndim))
    field = torch.zeros(ndim, *shape, dtype=dtype)
    for k in range(ndim):
        for _ in range(3):
            freq = torch.rand(ndim, generator=gen, dtype=dtype) * 2 * torch.pi
            phase = torch.rand(1, generator=gen, dtype=dtype) * 2 * torch.pi
            field[k] += torch.sin(torch.einsum("j,j...->...", freq, x) + phase)
    return (field * (magnitude / field.abs().max())).unsqueeze(0)


def rotation_matrix(ndim: int, angle: float) -> np.ndarray:
    """Rotation by ``angle`` in the plane of the first two array axes."""
    r = np.eye(ndim)
    c, s = np.cos(angle), np.sin(angle)
    r[0, 0], r[0, 1], r[1, 0], r[1, 1] = c, -s, s, c
    return r


def write_nifti(path, shape=(8, 8, 8), value=0.0) -> str:
    """Write a constant float32 NIfTI (identity affine) at ``path``, creating folders; return the path string."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, np.float32), np.eye(4)), str(path))
    return str(path)
