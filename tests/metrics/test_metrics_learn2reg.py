"""Learn2Reg's metric definitions: hand-derived cases and independent SciPy references."""

import itertools

import numpy as np
import pytest
from helpers import smooth_random_field
from monai.metrics.utils import get_code_to_measure_table
from scipy.ndimage import correlate, gaussian_filter, map_coordinates
from scipy.spatial import cKDTree

from monai_vmorph.metrics import (
    learn2reg_dice,
    learn2reg_hd95,
    learn2reg_sdlogj,
    learn2reg_warp_labels,
    robust_hausdorff,
    surface_distances,
)


def _cube(shape, start, size):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def test_shifted_cube_dice_and_hd95_by_hand():
    """An 8-voxel cube and the same cube one voxel further along axis 0: Dice 7/8; surface distances are 0 or 1
    and the faces at distance 1 (the two faces across the shift, 1/6 of the area each way) exceed 5 %: HD95 = 1."""
    fixed = _cube((16, 16, 16), (4, 4, 4), 8).astype(np.int16)
    warped = _cube((16, 16, 16), (5, 4, 4), 8).astype(np.int16)
    mean, per_label = learn2reg_dice(fixed, fixed, warped, [1])
    assert per_label == [pytest.approx(7 / 8)] and mean == pytest.approx(7 / 8)
    mean, per_label = learn2reg_hd95(fixed, fixed, warped, [1])
    assert per_label == [1.0] and mean == 1.0
    assert learn2reg_hd95(fixed, fixed, fixed, [1])[1] == [0.0]


def test_surface_distances_of_a_cube_inside_a_larger_one_by_hand():
    """A 4-cube centred in an 8-cube, 2 voxels in from every face: each surface element of the inner cube is 2 from
    the outer surface; the outer cube's are 2 (faces) up to 2 sqrt 3 (its 8 corners, to the inner corners)."""
    outer = _cube((16, 16, 16), (4, 4, 4), 8)
    inner = _cube((16, 16, 16), (6, 6, 6), 4)
    d_ab, w_a, d_ba, w_b = surface_distances(outer, inner)
    np.testing.assert_allclose(d_ba, 2.0)
    assert d_ab.min() == pytest.approx(2.0) and d_ab.max() == pytest.approx(2 * np.sqrt(3))
    assert np.count_nonzero(np.isclose(d_ab, 2 * np.sqrt(3))) == 8
    assert np.all(np.diff(d_ab) >= 0) and np.all(w_a > 0) and np.all(w_b > 0)
    # the surface areas: a cube's marching-cubes surface is smaller than its 6 n^2 voxel faces (chamfered edges)
    assert 0.9 * 6 * 8**2 < w_a.sum() < 6 * 8**2 and 0.8 * 6 * 4**2 < w_b.sum() < 6 * 4**2


def _reference_surface(mask, table):
    """Border blocks by enumerating every 2x2x2 block of the zero-padded mask (loops), with their areas."""
    padded = np.pad(mask, 1)
    points, areas = [], []
    for corner in itertools.product(*(range(n - 1) for n in padded.shape)):
        block = padded[tuple(slice(c, c + 2) for c in corner)].ravel()  # C order: (0,0,0) first
        code = int(sum(int(v) << (7 - k) for k, v in enumerate(block)))
        if 0 < code < 255:
            points.append(corner)
            areas.append(table[code])
    return np.array(points, float), np.array(areas)


def _reference_hd95(a, b):
    table = get_code_to_measure_table((1.0, 1.0, 1.0))[0].numpy().astype(float)
    pa, wa = _reference_surface(a, table)
    pb, wb = _reference_surface(b, table)
    directed = []
    for p, w, q in ((pa, wa, pb), (pb, wb, pa)):
        d = cKDTree(q).query(p)[0]
        order = np.lexsort((w, d))
        d, w = d[order], w[order]
        fraction = np.cumsum(w) / w.sum()
        directed.append(d[np.argmax(fraction >= 0.95)])
    return max(directed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_a_brute_force_kdtree_reference(seed):
    """Blobs on a 14x12x10 grid (one touches the border): the surface blocks enumerated one by one and the
    nearest distances from SciPy's k-d tree give the same area-weighted 95th percentile."""
    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.random((14, 12, 10)), 1.5) > 0.5
    b = gaussian_filter(rng.random((14, 12, 10)), 1.5) > 0.5
    assert a.any() and b.any()
    assert robust_hausdorff(*surface_distances(a, b)) == pytest.approx(_reference_hd95(a, b), abs=1e-12)


def test_labels_absent_from_fixed_or_moving_are_nan_and_lost_labels_inf():
    fixed = np.zeros((12, 12, 12), np.int32)
    fixed[2:6, 2:6, 2:6] = 1
    fixed[7:10, 7:10, 7:10] = 2
    moving = fixed.copy()
    moving[moving == 2] = 0
    moving[0:2, 0:2, 0:2] = 3
    warped = np.where(fixed == 1, 0, fixed)  # label 1 lost by the warp, label 2 kept
    mean, dice = learn2reg_dice(fixed, moving, warped, [1, 2, 3])
    assert dice[0] == 0.0 and np.isnan(dice[1]) and np.isnan(dice[2]) and mean == 0.0
    mean, hd = learn2reg_hd95(fixed, moving, warped, [1, 2, 3])
    assert hd[0] == np.inf and np.isnan(hd[1]) and np.isnan(hd[2]) and mean == np.inf


def test_warp_labels_is_nearest_neighbour_pull_back_with_zero_outside():
    """disp = (1.4, -0.6, 0) everywhere: fixed voxel x takes moving[round(x + disp)] = moving[x + (1, -1, 0)] where
    x + disp lies in [0, n - 1] on every axis (SciPy's order-0 "constant" mode has no half-voxel border), else 0:
    rows x0 <= 2 (3.4 <= 4, 4.4 is outside) and columns x1 >= 1 (-0.6 is outside)."""
    moving = np.arange(5 * 6 * 4, dtype=np.int32).reshape(5, 6, 4)
    disp = np.zeros((5, 6, 4, 3), np.float16)
    disp[..., 0], disp[..., 1] = 1.4, -0.6
    warped = learn2reg_warp_labels(moving, disp)
    expected = np.zeros_like(moving)
    expected[:3, 1:, :] = moving[1:4, :5, :]
    np.testing.assert_array_equal(warped, expected)
    assert warped.dtype == moving.dtype


def test_sdlogj_matches_learn2reg_formula_with_scipy():
    """Learn2Reg: central differences with scipy.ndimage.correlate (zero outside), crop 2, log(det + 3), std."""
    disp = smooth_random_field((20, 18, 16), 3.0, seed=4)[0].numpy().transpose(1, 2, 3, 0)
    kernel = np.array([-0.5, 0.0, 0.5])
    grad = np.empty((3, 3, *disp.shape[:3]))  # grad[k, j] = d u_k / d x_j
    for j in range(3):
        shape = [1, 1, 1]
        shape[j] = 3
        for k in range(3):
            grad[k, j] = correlate(disp[..., k], kernel.reshape(shape), mode="constant", cval=0.0)
    jac = grad + np.eye(3).reshape(3, 3, 1, 1, 1)
    det = np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))[2:-2, 2:-2, 2:-2]
    expected = np.log(np.clip(det + 3, 1e-9, 1e9)).std()
    assert learn2reg_sdlogj(disp) == pytest.approx(expected, rel=1e-10)
    assert learn2reg_sdlogj(disp.astype(np.float16)) == pytest.approx(expected, rel=1e-2)


def test_dice_of_a_warp_equals_scipy_map_coordinates_counting():
    rng = np.random.default_rng(5)
    fixed = np.digitize(gaussian_filter(rng.random((16, 14, 12)), 2), [0.48, 0.5, 0.52])
    moving = np.digitize(gaussian_filter(rng.random((18, 16, 12)), 2), [0.48, 0.5, 0.52])
    disp = (2.0 * smooth_random_field((16, 14, 12), 1.0, seed=6)[0].numpy().transpose(1, 2, 3, 0)).astype(np.float16)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in fixed.shape), indexing="ij"))
    warped = map_coordinates(moving, grid + disp.astype(np.float32).transpose(3, 0, 1, 2), order=0)
    np.testing.assert_array_equal(learn2reg_warp_labels(moving, disp), warped)
    expected = [
        2 * ((fixed == k) & (warped == k)).sum() / ((fixed == k).sum() + (warped == k).sum()) for k in (1, 2, 3)
    ]
    mean, dice = learn2reg_dice(fixed, moving, warped, [1, 2, 3])
    np.testing.assert_allclose(dice, expected, rtol=1e-12)
    assert mean == pytest.approx(np.mean(expected))
