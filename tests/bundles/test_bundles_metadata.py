"""Model-zoo checks of both bundles: metadata against MONAI's schema, measured eval_metrics, weight file sizes.

``data/meta_schema_20240725.json`` is MONAI's bundle metadata schema, the file the metadata's ``schema`` URL names
(MONAI-extra-test-data release 0.8.1, published verbatim at https://project-monai.github.io/schema/), kept here
because nothing may be downloaded in the tests.
"""

import json
import re
from pathlib import Path

import pytest
from bundle_helpers import BUNDLES, ROOT
from monai.bundle import verify_metadata

SCHEMA = Path(__file__).parent / "data" / "meta_schema_20240725.json"
SCHEMA_MD5 = "76e1add273836515d0bbb3bc71962474"  # of the copy; verify_metadata checks it before using the file
ZOO_FILE_LIMIT = 25 * 1024 * 1024  # the model zoo's limit for a file inside a bundle


def _metadata(name):
    return json.loads((ROOT / "bundles" / name / "configs" / "metadata.json").read_text())


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_metadata_passes_monai_schema(name, tmp_path):
    assert Path(_metadata(name)["schema"]).name == SCHEMA.name
    verify_metadata(
        meta_file=str(ROOT / "bundles" / name / "configs" / "metadata.json"), filepath=str(SCHEMA), hash_val=SCHEMA_MD5
    )


def test_schema_rejects_incomplete_metadata(tmp_path):
    meta = _metadata("voxelmorph_brain_2d")
    del meta["network_data_format"]["inputs"]["image"]["num_channels"]
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="num_channels"):
        verify_metadata(meta_file=str(path), filepath=str(SCHEMA), hash_val=SCHEMA_MD5)


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_eval_metrics_are_the_documented_measurement(name):
    """``eval_metrics.val_mean_dice`` is the shipped weights' validation Dice stated (to 3 decimals) in the docs."""
    value = _metadata(name)["eval_metrics"]["val_mean_dice"]
    assert 0.5 < value < 1
    assert f"{value:.3f}" in (ROOT / "bundles" / name / "docs" / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_weight_files_fit_the_zoo(name):
    """Every file of a bundle is within the zoo's 25 MB limit or listed in its ``large_files.yml``."""
    bundle = ROOT / "bundles" / name
    listed = set()
    if (bundle / "large_files.yml").is_file():
        listed = set(re.findall(r'path:\s*"?([^"\n]+)"?', (bundle / "large_files.yml").read_text()))
    run_outputs = {"eval", "inference"}  # ignored by git, like models/last.pt and exported *.ts
    files = [p.relative_to(bundle) for p in bundle.rglob("*") if p.is_file()]
    files = [p for p in files if not run_outputs & set(p.parts) and p.name != "last.pt" and p.suffix != ".ts"]
    large = [p.as_posix() for p in files]
    large = [p for p in large if (bundle / p).stat().st_size > ZOO_FILE_LIMIT]
    assert set(large) <= listed, f"{large} over 25 MB and not in large_files.yml"
    assert (bundle / "models" / "model.pt").is_file()
