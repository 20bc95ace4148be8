import pytest
from bundle_helpers import BUNDLES, make_tiny_dataset


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def bundle(request, tmp_path_factory):
    """(bundle name, its tiny dataset folder), once per bundle and test module."""
    ndim = BUNDLES[request.param][0]
    return request.param, make_tiny_dataset(tmp_path_factory.mktemp(f"tiny_l2r_{ndim}d"), ndim)
