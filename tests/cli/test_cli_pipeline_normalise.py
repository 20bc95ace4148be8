"""The command line normalises intensities exactly as the bundles' preprocessing does."""

import inspect

import numpy as np

from monai_vmorph.pipeline import normalise_intensity
from monai_vmorph.transforms import INTENSITY_PERCENTILES, registration_preprocessing


def test_cli_and_bundle_preprocessing_share_the_intensity_percentiles():
    default = inspect.signature(registration_preprocessing).parameters["percentiles"].default
    assert default == INTENSITY_PERCENTILES == (1.0, 99.0)
    array = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)  # 0..999: percentiles 1 and 99 are 9.99, 989.01
    out = normalise_intensity(array)
    lo, hi = np.percentile(array, INTENSITY_PERCENTILES)
    np.testing.assert_allclose(out, np.clip((array - lo) / (hi - lo), 0, 1), atol=1e-6)
    assert out[0, 0, 0] == 0 and out[-1, -1, -1] == 1
