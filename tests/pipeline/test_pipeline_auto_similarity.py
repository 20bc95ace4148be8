"""``--similarity auto`` on the pairs a user brings: one contrast (T1 brains, CT heads) keeps local NCC on the
images as they are; an inverted or T2-like contrast is mapped to the fixed contrast; a pair that no mapping explains
gets MIND-SSC. The network is used only where it improves the similarity: both outcomes are exercised."""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation, gaussian_filter

from monai_vmorph.losses import RegistrationLoss
from monai_vmorph.networks import VoxelMorph
from monai_vmorph.pipeline import load_bundle_model, read_scan
from monai_vmorph.pipeline.auto_similarity import choose_similarity
from monai_vmorph.pipeline.register import network_or_affine, register_pair
from monai_vmorph.pipeline.scan import NativeScan

BRAIN_3D = Path(__file__).resolve().parents[2] / "data" / "brain_3d"


def _labels(name):
    return read_scan(BRAIN_3D / "labelsTr" / f"{name}_0000.nii.gz", "labels", labels=True)


def _from_labels(name, values, skull=None, seed=0):
    """An image of subject ``name`` with intensity ``values[label]`` (blurred, noisy), optionally a skull ring."""
    labels = _labels(name)
    image = np.asarray(values, dtype=np.float64)[labels.array]
    if skull is not None:
        brain = labels.array > 0
        ring = binary_dilation(brain, iterations=3) & ~brain
        image[ring] = skull
    image = gaussian_filter(image, 0.8) + 0.01 * np.random.default_rng(seed).standard_normal(image.shape)
    return NativeScan.from_array(image.astype(np.float32), labels.affine)


@pytest.fixture(scope="module")
def bundle():
    return load_bundle_model(3, torch.device("cpu"))


def _fast(fixed, moving, bundle, similarity="auto"):
    return register_pair(fixed, moving, bundle, preset="fast", similarity=similarity).metrics


@pytest.mark.slow
def test_auto_keeps_ncc_on_one_contrast_and_maps_a_t2_like_or_inverted_contrast(bundle):
    fixed = read_scan(BRAIN_3D / "imagesTr" / "icbm09a_0000.nii.gz", "fixed")
    t1 = read_scan(BRAIN_3D / "imagesTr" / "colin27_0000.nii.gz", "moving")
    same = _fast(fixed, t1, bundle)["similarity"]
    assert same["similarity"] == "ncc" and not same["contrast_mapped"] and same["correlation"] > 0.8

    t2_like = _from_labels("colin27", [0.0, 1.0, 0.55, 0.3])  # CSF bright, WM dark
    inverted = NativeScan.from_array(np.where(t1.array > 0.05, 1.05 - t1.array, 0).astype(np.float32), t1.affine)
    for moving in (t2_like, inverted):
        metrics = _fast(fixed, moving, bundle)
        choice = metrics["similarity"]
        assert choice["similarity"] == "ncc" and choice["contrast_mapped"], choice
        assert choice["correlation"] < 0.5 < 0.7 < choice["correlation_mapped"]
        assert metrics["initialisation"] == "network"  # on the mapped pair the T1 network helps


@pytest.mark.slow
def test_auto_keeps_ncc_on_a_ct_pair(bundle):
    hounsfield = [-1000.0, 15.0, 40.0, 25.0]  # air, CSF, grey and white matter; bone 1000 in a skull ring
    fixed, moving = (_from_labels(n, hounsfield, skull=1000.0, seed=i) for i, n in enumerate(("icbm09c", "colin27")))
    choice = _fast(fixed, moving, bundle)["similarity"]
    assert choice["similarity"] == "ncc" and not choice["contrast_mapped"], choice


def test_a_pair_no_mapping_explains_gets_mind_and_explicit_requests_are_kept():
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 24, 24, 24, generator=generator), 5, 1, 2)
    moving = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    fixed = torch.rand(1, 1, 24, 24, 24, generator=generator)  # unrelated noise: no function of moving explains it
    choice, image = choose_similarity(moving, fixed)
    assert choice.similarity == "mind" and not choice.contrast_mapped and image is moving
    assert choice.correlation_mapped < 0.5
    for name in ("ncc", "mind"):
        choice, image = choose_similarity(moving, 1 - moving, name)
        assert choice.similarity == name and image is moving and choice.requested == name
    with pytest.raises(ValueError, match="similarity must be one of"):
        choose_similarity(moving, fixed, "mi")


class _ConstantField(torch.nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        field = torch.zeros(x.shape[0], 3, *x.shape[2:], dtype=x.dtype)
        field[:, 0] = self.value
        return field


@pytest.mark.parametrize(("shift", "expected"), [(3.0, "network"), (-3.0, "affine")])
def test_the_network_is_used_only_where_it_improves_the_similarity(shift, expected):
    """A 'network' that shifts by +3 voxels registers a pair moved by -3 voxels; one shifting the wrong way does not."""
    generator = torch.Generator().manual_seed(1)
    fixed = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 32, 32, 32, generator=generator), 7, 1, 3)
    moving = torch.roll(fixed, shifts=3, dims=2)  # moving(x) = fixed(x - 3): warped(x) = moving(x + 3) = fixed(x)
    model = VoxelMorph(3, backbone=_ConstantField(shift), integration_steps=0, int_downsize=1, pad_divisor=1).eval()
    with torch.no_grad():
        result = model(moving, fixed)
    chosen, record = network_or_affine(moving, fixed, result, RegistrationLoss("ncc"))
    assert record["initialisation"] == expected
    better = record["similarity_network"] < record["similarity_affine"]
    assert better == (expected == "network")
    assert (chosen is result) == (expected == "network")
    if expected == "affine":
        torch.testing.assert_close(chosen.ddf, torch.zeros_like(chosen.ddf))
        torch.testing.assert_close(chosen.warped, moving, atol=1e-5, rtol=0)
