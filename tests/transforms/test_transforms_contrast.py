"""Contrast mapping: the conditional mean recovers a known non-monotone relation between two contrasts of one
anatomy; histogram matching equals an independent numpy quantile mapping; background stays zero."""

import numpy as np
import torch

from monai_vmorph.transforms import contrast_mapping, match_contrast, match_histogram


def _phantom(shape=(40, 44, 36)):
    """Nested ellipsoids: background 0, then tissues 1, 2, 3 from the outside in."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    labels = np.zeros(shape, dtype=np.int64)
    for value, r in ((1, 0.95), (2, 0.7), (3, 0.45)):
        labels[radius < r] = value
    return labels


def test_the_conditional_mean_recovers_a_non_monotone_contrast_change():
    labels = _phantom()
    t1 = np.array([0.0, 0.2, 0.55, 0.9])[labels]  # CSF dark, GM, WM bright
    t2 = np.array([0.0, 1.0, 0.5, 0.3])[labels]  # CSF bright, WM dark: the order of the tissues is not kept
    moving, fixed = (torch.as_tensor(a, dtype=torch.float32)[None, None] for a in (t2, t1))
    centres, values = contrast_mapping(moving, fixed, sigma=0)
    for tissue, (m_value, f_value) in enumerate(zip((1.0, 0.5, 0.3), (0.2, 0.55, 0.9), strict=True), start=1):
        nearest = int(torch.argmin((centres - m_value).abs()))
        assert abs(float(values[nearest]) - f_value) < 1e-6, tissue
    mapped = match_contrast(moving, fixed)[0, 0].numpy()
    assert np.all(mapped[labels == 0] == 0)  # background stays background
    for tissue, f_value in ((1, 0.2), (2, 0.55), (3, 0.9)):
        assert abs(np.median(mapped[labels == tissue]) - f_value) < 0.02, tissue
    assert np.corrcoef(mapped.ravel(), t1.ravel())[0, 1] > 0.99
    assert np.corrcoef(t2.ravel(), t1.ravel())[0, 1] < 0.6


def test_histogram_matching_equals_numpy_quantile_interpolation():
    rng = np.random.default_rng(0)
    values, reference = rng.gamma(2.0, size=5000), rng.normal(3.0, 0.5, size=8000)
    q = np.linspace(0, 1, 1024)
    expected = np.interp(values, np.quantile(values, q), np.quantile(reference, q))
    got = match_histogram(torch.as_tensor(values), torch.as_tensor(reference)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.quantile(got, [0.1, 0.5, 0.9]), np.quantile(reference, [0.1, 0.5, 0.9]), atol=0.02)


def test_an_image_with_too_little_signal_is_returned_unmapped():
    moving = torch.zeros(1, 1, 8, 8, 8)
    moving[0, 0, 4, 4, 4] = 1.0
    assert match_contrast(moving, torch.rand(1, 1, 8, 8, 8)) is moving
