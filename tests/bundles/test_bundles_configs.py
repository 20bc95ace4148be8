"""The model zoo's config layout: ``configs/train.json`` and ``configs/inference.json`` each run alone.

MONAI's tools, MONAI Label and MONAI Deploy read one config file (``python -m monai.bundle run --config_file
configs/inference.json``); ``evaluate.json`` and ``multi_gpu_train.json`` are overlays listed after ``train.json``.
The two complete files repeat the shared settings, so a test keeps them identical.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest
import torch
from bundle_helpers import BUNDLES, ROOT, SIZE
from monai.bundle import ConfigParser
from monai.bundle.config_item import ComponentLocator
from monai.utils import ensure_tuple

# loaded, so that the locator would also find our classes by a short name
import monai_vmorph.engines
import monai_vmorph.pipeline  # noqa: F401

CONFIGS = ["train.json", "inference.json", "evaluate.json", "multi_gpu_train.json"]

# id paths whose values intentionally differ between train.json and inference.json; everything else present in
# both files must be identical
DIFFERENT = {
    "ckpt_dir": "training writes checkpoints into its run folder (run_dir/models); inference loads models/model.pt",
    "output_dir": "training logs into run_dir/eval; inference writes the registered pairs into inference/",
    "preprocessing#alignment": "inference pre-aligns each pair affinely (key 'affine'); training pairs are not",
    "initialize": "each workflow checks its own settings, data and output folders",
    "run": "training runs the trainer, inference the evaluator that writes the results",
}


def _config(name: str, file: str) -> dict:
    return json.loads((ROOT / "bundles" / name / "configs" / file).read_text())


def _without(config: dict, path: str) -> dict:
    """``config`` without the item at id path ``path`` (``a#b``), if it is there."""
    config = copy.deepcopy(config)
    parent, _, last = path.rpartition("#")
    node = _get(config, parent) if parent else config
    if isinstance(node, dict):
        node.pop(last, None)
    return config


def _differences(train: dict, inference: dict) -> list[str]:
    """Top-level keys of both files whose values differ, apart from the ``DIFFERENT`` id paths."""
    for path in DIFFERENT:
        train, inference = _without(train, path), _without(inference, path)
    return sorted(k for k in train.keys() & inference.keys() if train[k] != inference[k])


def _get(config: dict, path: str):
    for key in path.split("#"):
        config = config.get(key) if isinstance(config, dict) else None
    return config


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_train_and_inference_share_identical_settings(name):
    train, inference = _config(name, "train.json"), _config(name, "inference.json")
    assert _differences(train, inference) == []
    for path in DIFFERENT:  # the allow-list names only real differences
        assert _get(train, path) != _get(inference, path), f"{path} no longer differs; remove it from DIFFERENT"
    shared = train.keys() & inference.keys()
    assert {"bundle_root", "dataset_dir", "spatial_size", "pixdim", "model", "network_def", "preprocessing"} <= shared


def test_the_shared_settings_check_finds_a_changed_value():
    train, inference = _config("voxelmorph_brain_3d", "train.json"), _config("voxelmorph_brain_3d", "inference.json")
    inference["spatial_size"] = [64, 64, 64]
    inference["preprocessing"]["pixdim"] = [1.0, 1.0, 1.0]
    assert _differences(train, inference) == ["preprocessing", "spatial_size"]


@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_configs_are_the_zoo_layout_and_name_our_classes_by_full_path(name):
    configs = ROOT / "bundles" / name / "configs"
    assert not (configs / "common.json").exists()
    assert {p.name for p in configs.glob("*.json")} == {*CONFIGS, "metadata.json"}
    locator = ComponentLocator()  # short names resolve in every loaded module named monai*, monai_vmorph's too
    for file in CONFIGS:
        for target in _targets(_config(name, file)):
            if "." in target:
                assert target.split(".")[0] in ("monai_vmorph", "monai", "torch"), f"{file}: {target}"
            else:  # a short name is MONAI's own component, never one of ours
                modules = ensure_tuple(locator.get_component_module_name(target))
                assert modules and all(m.startswith("monai.") for m in modules), f"{file}: {target} -> {modules}"
    assert _config(name, "train.json")["model"]["_target_"] == "monai_vmorph.networks.VoxelMorph"


def _targets(node):
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def _monai_bundle(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_inference_json_alone_runs_from_the_bundle_folder_and_from_the_repository_root(bundle, tmp_path):
    """A copy of the repository's layout (the bundle, its weights, a tiny dataset in ``data/brain_<n>d``): the
    default paths (dataset, weights, output folder) follow the config file's location, whatever the current folder.
    """
    name, dataset_dir = bundle
    ndim = BUNDLES[name][0]
    repo = tmp_path / "repo"
    bundle_dir = repo / "bundles" / name
    shutil.copytree(ROOT / "bundles" / name / "configs", bundle_dir / "configs")
    (bundle_dir / "models").mkdir()
    (bundle_dir / "models" / "model.pt").symlink_to(ROOT / "bundles" / name / "models" / "model.pt")
    shutil.copytree(dataset_dir, repo / "data" / f"brain_{ndim}d")
    size = ["--spatial_size", json.dumps([SIZE] * ndim)]
    outputs = bundle_dir / "inference"
    expected = {f"{p}_warped{s}.nii.gz" for p in ("s1_0000_to_s0_0000", "s0_0000_to_s2_0000") for s in ("", "_label")}
    expected |= {"s1_0000_to_s0_0000_ddf.nii.gz", "s0_0000_to_s2_0000_ddf.nii.gz"}
    for cwd, config in ((repo, f"bundles/{name}/configs/inference.json"), (bundle_dir, "configs/inference.json")):
        result = _monai_bundle(["run", "--config_file", config, *size], cwd)
        assert "registered 2 pairs in " in result.stdout, cwd
        assert {p.name for p in outputs.iterdir()} == expected, cwd
        warped = nib.load(outputs / "s1_0000_to_s0_0000_warped.nii.gz")
        assert warped.shape == (SIZE,) * ndim
        shutil.rmtree(outputs)
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["configs", "models"]  # nothing written elsewhere
    assert sorted(p.name for p in repo.iterdir()) == ["bundles", "data"]


@pytest.mark.slow
def test_verify_net_in_out_and_ckpt_export_with_inference_json_alone(bundle, tmp_path):
    """MONAI's tools in the bundle folder, the zoo's way; ``verify_net_in_out`` reads the metadata only from
    ``--meta_file`` (``ckpt_export`` finds ``configs/metadata.json`` of the current folder)."""
    name, _ = bundle
    ndim = BUNDLES[name][0]
    bundle_dir = ROOT / "bundles" / name
    config = ["--config_file", "configs/inference.json"]
    verify = _monai_bundle(
        ["verify_net_in_out", "network_def", *config, "--meta_file", "configs/metadata.json"], bundle_dir
    )
    assert "data shape of network is verified with no error" in verify.stdout + verify.stderr

    exported = tmp_path / "model.ts"
    shape = [1, 2] + [SIZE] * ndim
    args = ["ckpt_export", "network_def", *config, "--filepath", str(exported), "--ckpt_file", "models/model.pt"]
    _monai_bundle(args, bundle_dir)  # scripted, the zoo's default (no --use_trace, so any input shape)
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(exported), _extra_files=extra)
    assert (
        json.loads(extra["metadata.json"])["version"]
        == json.loads((bundle_dir / "configs" / "metadata.json").read_text())["version"]
    )
    assert json.loads(extra["inference.json"])["network_def"] == _config(name, "inference.json")["network_def"]
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle_dir / "models" / "model.pt", weights_only=True))
    network.eval().model.precision = "fp32"
    other = [1, 2] + [SIZE + 3] * ndim  # not the shape of any trace: scripting keeps the shape free
    for size in (shape, other):
        smooth = torch.rand(size, generator=torch.Generator().manual_seed(0))
        x = torch.cat([smooth[:, :1], torch.roll(smooth[:, :1], 2, dims=2)], dim=1)
        with torch.no_grad():
            out, eager = scripted(x), network(x)
        assert out.shape == (1, 1 + ndim, *size[2:])
        assert float((out - eager).abs().max()) <= 1e-5
    assert not list(bundle_dir.glob("models/*.ts"))
