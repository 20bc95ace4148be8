"""Resume, multi-process training, MONAI's bundle tools (export, verify) and config errors, on both bundles."""

import math
import sys

import pytest
import torch
from bundle_helpers import BUNDLES, ROOT, SIZE, cli, overrides, workflow
from ignite.engine import Events
from monai.bundle import ConfigParser

TRAIN = ["train.json"]


def _iterations_per_epoch(name, pairs, ranks=1):
    return math.ceil(pairs / ranks / BUNDLES[name][1].get("batch_size", 1))


@pytest.mark.slow
def test_training_resumes_after_an_interruption_from_the_saved_epoch(bundle, tmp_path):
    name, dataset_dir = bundle
    config = {**overrides(name, dataset_dir, tmp_path), "max_epochs": 3, "pairs_per_epoch": 2, "val_interval": 1}
    per_epoch = _iterations_per_epoch(name, 2)

    first = workflow(name, TRAIN, "train", **config)
    trainer = first.parser.get_parsed_content("train#trainer")

    @trainer.on(Events.ITERATION_STARTED)
    def _kill(engine):
        if engine.state.epoch == 2:
            raise KeyboardInterrupt  # the session ends in the middle of epoch 2

    with pytest.raises(KeyboardInterrupt):
        first.run()
    last = torch.load(tmp_path / "models" / "last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == per_epoch  # the end of epoch 1
    assert (tmp_path / "models" / "model.pt").is_file()

    second = workflow(name, TRAIN, "train", **config)
    trainer = second.parser.get_parsed_content("train#trainer")
    started = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: started.append(engine.state.epoch))
    second.run()
    assert started == [2, 3]
    assert trainer.state.iteration == 3 * per_epoch
    last = torch.load(tmp_path / "models" / "last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 3 * per_epoch
    network = second.parser.get_parsed_content("network")
    assert all(torch.equal(v, last["network"][k]) for k, v in network.state_dict().items())


@pytest.mark.slow
def test_multi_gpu_config_trains_with_two_gloo_processes(bundle, tmp_path):
    name, dataset_dir = bundle
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = cli(
        name,
        "run training",
        [*TRAIN, "multi_gpu_train.json"],
        launcher=launcher,
        **overrides(name, dataset_dir, tmp_path),
        max_epochs=2,
        pairs_per_epoch=4,
        val_interval=1,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = torch.load(tmp_path / "models" / "last.pt", weights_only=True)
    # the distributed sampler gives each rank half of the epoch's pairs
    assert last["trainer"]["iteration"] == 2 * _iterations_per_epoch(name, 4, ranks=2)
    assert not any(k.startswith("module.") for k in last["network"])
    best = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert all(k.startswith("model.") for k in best)


@pytest.mark.slow
def test_torchscript_export_matches_eager_mode_and_verify_net_in_out_passes(bundle, tmp_path):
    name, dataset_dir = bundle
    ndim = BUNDLES[name][0]
    # float32: the traced graph runs the decoder's layers as written and eager mode its low-resolution rewrite, the
    # same function whose bfloat16 roundings differ (the rewrite is compared in float64 in tests/networks)
    config = {**overrides(name, dataset_dir, tmp_path), "precision": "fp32"}
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / name / "configs" / "inference.json"))
    parser.update(config)
    network_def = parser.get_parsed_content("network_def")
    torch.manual_seed(0)
    with torch.no_grad():  # a non-trivial field, so the comparison covers the warp
        for p in network_def.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = tmp_path / "model.pt"
    torch.save(network_def.state_dict(), ckpt)
    exported = tmp_path / "model.ts"
    shape = [1, 2] + [SIZE] * ndim
    result = cli(
        name,
        "ckpt_export network_def",
        ["inference.json"],
        filepath=str(exported),
        ckpt_file=str(ckpt),
        key_in_ckpt="",
        use_trace=True,
        input_shape=shape,
        **config,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scripted = torch.jit.load(str(exported))
    network_def.eval()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager, traced = network_def(x), scripted(x)
    assert eager.shape == (1, 1 + ndim, *[SIZE] * ndim)
    assert eager[:, 1:].abs().max() > 0.05  # the field is not ~0
    torch.testing.assert_close(traced, eager, rtol=1e-5, atol=1e-5)

    verify = cli(name, "verify_net_in_out network_def", ["inference.json"], **config)
    assert verify.returncode == 0, verify.stderr[-3000:]
    assert "data shape of network is verified with no error" in verify.stdout + verify.stderr


BAD_VALUES = [
    ({"similarity": "ssim"}, "error: similarity must be one of ['ncc', 'mse'], got 'ssim'"),
    ({"smoothness_weight": -1.0}, "error: smoothness_weight must be a finite number >= 0, got -1.0"),
    ({"dataset_dir": "/no/such/folder"}, "error: dataset_dir '/no/such/folder' does not exist"),
    ({"spatial_size": [30] * 3}, "error: spatial_size must be 3 positive multiples of 16, got [30, 30, 30]"),
    ({"learning_rate": 0}, "error: learning_rate must be > 0, got 0"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("bad", "message"), BAD_VALUES, ids=[next(iter(b)) for b, _ in BAD_VALUES])
def test_bad_training_values_fail_in_one_line_without_a_traceback(bad, message, tmp_path):
    name = "voxelmorph_brain_3d"
    config = {**overrides(name, ROOT / "data" / "brain_3d", tmp_path), **bad}
    result = cli(name, "run training", TRAIN, **config)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "models").exists()  # nothing was written


@pytest.mark.slow
@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"moving": "M"}, "error: --moving was given without --fixed; pass both to register one pair"),
        ({"fixed": "M"}, "error: --fixed was given without --moving; pass both"),
        ({"moving": "M", "fixed": "/no/such.nii.gz"}, "error: --fixed image '/no/such.nii.gz' does not exist"),
    ],
    ids=["moving only", "fixed only", "missing file"],
)
def test_bad_inference_pairs_fail_in_one_line(given, message, tmp_path):
    name = "voxelmorph_brain_2d"
    image = str(ROOT / "data" / "brain_2d" / "imagesTr" / "colin27_z+0_0000.nii.gz")
    config = {"bundle_root": str(ROOT / "bundles" / name), "output_dir": str(tmp_path / "out")}
    result = cli(
        name,
        "run inferring",
        ["inference.json"],
        **config,
        **{key: image if value == "M" else value for key, value in given.items()},
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_evaluation_without_weights_fails_in_one_line(tmp_path):
    name = "voxelmorph_brain_2d"
    config = {**overrides(name, ROOT / "data" / "brain_2d", tmp_path), "ckpt_path": str(tmp_path / "none.pt")}
    result = cli(name, "run evaluating", ["train.json", "evaluate.json"], **config)
    assert result.returncode == 2
    assert f"error: ckpt_path '{tmp_path / 'none.pt'}' does not exist" in result.stderr
    assert "Traceback" not in result.stderr
