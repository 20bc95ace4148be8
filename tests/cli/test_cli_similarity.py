"""``register --similarity``: the choice and the network-or-affine decision are recorded in ``metrics.json``;
an explicit MIND-SSC deformable stage runs; an unknown name is refused before any work."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BRAIN_2D = ROOT / "data" / "brain_2d" / "imagesTr"


def _register(cli, out, fixed, moving, weights, *extra):
    code, _, err = cli("register", "--fixed", fixed, "--moving", moving, "--out-dir", out, "--weights", weights, *extra)
    assert code == 0, err
    return json.loads((out / "metrics.json").read_text())


def test_auto_maps_an_inverted_slice_and_mind_refines(cli, weights_2d, tmp_path):
    fixed, moving = BRAIN_2D / "colin27_z+0_0000.nii.gz", BRAIN_2D / "icbm09a_z+10_0000.nii.gz"
    image = nib.load(moving)
    array = np.asarray(image.dataobj, dtype=np.float32)
    inverted = tmp_path / "inverted.nii.gz"
    nib.save(
        nib.Nifti1Image(np.where(array > 0.05 * array.max(), array.max() * 1.05 - array, 0), image.affine), inverted
    )

    same = _register(cli, tmp_path / "same", fixed, moving, weights_2d, "--fast")
    assert same["similarity"]["similarity"] == "ncc" and not same["similarity"]["contrast_mapped"]
    assert same["initialisation"] in ("network", "affine")
    assert (same["initialisation"] == "network") == (same["similarity_network"] < same["similarity_affine"])

    mapped = _register(cli, tmp_path / "inv", fixed, inverted, weights_2d, "--fast")["similarity"]
    assert mapped["requested"] == "auto" and mapped["contrast_mapped"] and mapped["correlation"] < 0.5

    mind = _register(cli, tmp_path / "mind", fixed, inverted, weights_2d, "--similarity", "mind")
    assert mind["similarity"]["similarity"] == mind["similarity"]["requested"] == "mind"
    assert not mind["similarity"]["contrast_mapped"]
    levels = mind["deformable"]["levels"]
    assert all(level["final_similarity"] < level["initial_similarity"] for level in levels)


def test_an_unknown_similarity_is_one_line_exit_2(cli, tmp_path):
    fixed = BRAIN_2D / "colin27_z+0_0000.nii.gz"
    code, _, err = cli(
        "register", "--fixed", fixed, "--moving", fixed, "--out-dir", tmp_path / "o", "--similarity", "mi"
    )
    assert code == 2 and "--similarity" in err and "invalid choice" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
