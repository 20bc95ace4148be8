"""What the bundles' workflows report: start line, per-epoch ETA, history CSV and TensorBoard across resumes,
inference progress, and no known MONAI warnings (tiny 2D runs)."""

import json
import shutil
import warnings

import pytest
from bundle_helpers import cli, make_tiny_dataset, overrides, workflow
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monai_vmorph.engines import read_history

NAME = "voxelmorph_brain_2d"


@pytest.fixture(scope="module")
def named_dataset(tmp_path_factory):
    """The tiny 2D dataset with label names in its JSON, as the embedded datasets have."""
    root = make_tiny_dataset(tmp_path_factory.mktemp("tiny_named_2d"), 2)
    path = root / "tiny_dataset.json"
    content = json.loads(path.read_text())
    content["labels"] = {"0": "background", "1": "CSF", "2": "GM", "3": "WM"}
    path.write_text(json.dumps(content))
    return root


def _train(common, max_epochs, capsys):
    """Run the training workflow; returns its stdout and the warnings it issued."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = workflow(
            NAME, ["train.json"], "train", max_epochs=max_epochs, pairs_per_epoch=2, val_interval=1,
            **common,
        )  # fmt: skip
        train.run()
        train.finalize()
    return capsys.readouterr().out, [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]


def _steps(log_dir):
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {tag: [e.step for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


@pytest.mark.slow
def test_training_reports_history_and_tensorboard_across_resume(named_dataset, tmp_path, capsys):
    common = overrides(NAME, named_dataset, tmp_path)
    out, caught = _train(common, 2, capsys)
    assert "training on cpu (AMP off" in out
    assert "2 training pairs per epoch in 1 iterations of batch 2, 2 validation pairs every 1 epochs, epochs 1-2" in out
    assert "epoch 1/2: mean loss " in out and "; ETA " in out and "epoch 2/2: mean loss " in out
    assert not [m for m in caught if "always_return_as_numpy" in m], caught  # the HD95 FutureWarning is filtered
    history = tmp_path / "eval" / "metrics_history.csv"
    assert [r["epoch"] for r in read_history(history)] == ["1", "2"]
    shutil.copy(tmp_path / "models" / "last.pt", tmp_path / "last_epoch2.pt")

    out, _ = _train(common, 3, capsys)  # resume to epoch 3
    assert "epochs 3-3 (resumed after epoch 2)" in out and "epoch 3/3: mean loss " in out
    rows = read_history(history)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0])[-3:] == ["dice_CSF", "dice_GM", "dice_WM"]
    for row in rows:  # the label columns are the per-label Dice whose mean is the key metric
        per_label = [float(row[c]) for c in ("dice_CSF", "dice_GM", "dice_WM")]
        assert sum(per_label) / 3 == pytest.approx(float(row["val_mean_dice"]), abs=1e-5)
    assert _steps(tmp_path / "eval") == {t: [1, 2, 3] for t in ("train_loss", *[k for k in rows[0] if k[:4] == "val_"])}

    # a run stopped after epoch 3 was logged but before its checkpoint: resumed from epoch 2, epoch 3 runs again
    shutil.copy(tmp_path / "last_epoch2.pt", tmp_path / "models" / "last.pt")
    _train(common, 3, capsys)
    assert [r["epoch"] for r in read_history(history)] == ["1", "2", "3"]
    steps = _steps(tmp_path / "eval")
    assert steps["train_loss"] == [1, 2, 3] and steps["val_mean_dice"] == [1, 2, 3]

    infer_out = tmp_path / "inference"
    infer = workflow(
        NAME, ["inference.json"], "infer", ckpt_path=str(tmp_path / "models" / "model.pt"),
        **{**common, "output_dir": str(infer_out)},
    )  # fmt: skip
    infer.run()
    out = capsys.readouterr().out
    assert "pair 1/2 registered (" in out and "s1_0000_to_s0_0000: s1_0000_to_s0_0000_ddf.nii.gz, " in out
    assert "pair 2/2 registered (" in out
    assert "registered 2 pairs in " in out
    assert f"(2 with labels); wrote 6 files to {infer_out.resolve()} (*_ddf.nii.gz, *_warped.nii.gz, " in out
    assert len(list(infer_out.glob("*.nii.gz"))) == 6

    # the command line's stderr: no HD95 FutureWarning (3 per validation before); MONAI's config notice is printed
    # by `python -m monai.bundle run` before the config's initialize can filter it
    done = cli(
        NAME, "run evaluating", ["train.json", "evaluate.json"], ckpt_path=str(tmp_path / "models" / "model.pt"),
        **{**common, "output_dir": str(tmp_path / "cli_eval")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "evaluated 2 pairs in " in done.stdout
    assert "always_return_as_numpy" not in done.stderr and "FutureWarning" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    # the notice alone, or as a UserWarning line with its source line, depending on how warnings are formatted
    notice = [line for line in lines if "parsing config_file " in line or line.strip() == "workflow = create_workflow("]
    assert lines == notice and notice
