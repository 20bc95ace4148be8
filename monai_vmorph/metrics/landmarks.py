"""Target registration error (TRE) of corresponding landmarks, in millimetres.

Points are world coordinates (NumPy ``(N, ndim)``); mapping them through a transform is the caller's (for our fields,
:func:`monai_vmorph.io.displacement_at_points`). The summary keys are the ones ``metrics.json`` and ``evaluate`` use.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TRE_STATISTICS", "landmark_distances", "tre_summary"]

#: The statistics of :func:`tre_summary`, in its order.
TRE_STATISTICS = ("mean", "std", "median", "p90", "max")


def landmark_distances(mapped: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``(N,)`` Euclidean distances between row ``n`` of ``mapped`` and row ``n`` of ``targets`` (both ``(N, ndim)``).

    Raises:
        ValueError: the arrays differ in shape or are not ``(N, ndim)`` with ``N >= 1``.
    """
    mapped, targets = np.asarray(mapped, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if mapped.shape != targets.shape or mapped.ndim != 2 or len(mapped) == 0:
        raise ValueError(
            f"landmarks must be two (N, ndim) arrays of one shape, got {mapped.shape} and {targets.shape}."
        )
    return np.linalg.norm(mapped - targets, axis=1)


def tre_summary(distances: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation (population), median, 90th percentile and maximum of ``distances`` (mm)."""
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    values = (d.mean(), d.std(), np.median(d), np.percentile(d, 90), d.max())
    return {key: float(v) for key, v in zip(TRE_STATISTICS, values, strict=True)}
