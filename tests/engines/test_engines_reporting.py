"""Progress reports, validation history, TensorBoard resume marker and warning filters (no bundle runs)."""

import csv
import json
import logging
import os
import warnings

import pytest
import torch
from ignite.engine import Engine
from monai.metrics import compute_hausdorff_distance
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from monai_vmorph.engines import (
    MetricsHistory,
    PairProgressReporter,
    TensorBoardResumeMarker,
    TrainingReporter,
    quiet_known_warnings,
    read_history,
)
from monai_vmorph.engines.reporting import format_duration
from monai_vmorph.engines.tensorboard import event_files


def _trainer(losses):
    """A trainer whose iteration ``k`` (1-based over the run) outputs ``{"loss": losses[k - 1]}``."""
    engine = Engine(lambda e, batch: {"loss": torch.tensor(losses[e.state.iteration - 1])})
    engine.amp = False
    return engine


def _ours(caplog) -> list[logging.LogRecord]:
    """Our reporter's records only: an earlier bundle run may have set ignite's engine loggers to INFO."""
    return [r for r in caplog.records if r.name == "monai_vmorph.engines.reporting"]


def test_training_reporter_lines(caplog):
    data = torch.utils.data.DataLoader(list(range(6)), batch_size=2)  # 6 pairs, 3 iterations per epoch
    losses = [1.0, 2.0, 3.0, 0.5, 0.5, 0.5]
    engine = _trainer(losses)
    reporter = TrainingReporter(val_pairs=[0] * 10, val_interval=5, cpu_max_epochs=1, cpu_hint="--max_epochs 1")
    reporter.attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_vmorph.engines.reporting"):
        engine.run(data, max_epochs=2)
    records = _ours(caplog)
    lines = [r.getMessage() for r in records]
    assert lines[0] == (
        "training on cpu (AMP off): 6 training pairs per epoch in 3 iterations of batch 2, "
        "10 validation pairs every 5 epochs, epochs 1-2"
    )
    assert lines[1].startswith("training on the CPU with the GPU defaults (2 epochs)")
    assert "the quick CPU variant adds --max_epochs 1" in lines[1]
    assert records[1].levelno == logging.WARNING
    assert lines[2].startswith("epoch 1/2: mean loss 2.0000 (3 iterations), ")  # (1 + 2 + 3) / 3
    assert "; ETA " in lines[2] and "for 1 epoch (about " in lines[2]
    assert lines[3].startswith("epoch 2/2: mean loss 0.5000 (3 iterations), ") and "ETA" not in lines[3]


def test_training_reporter_eta_and_resume():
    engine = _trainer([0.0] * 30)
    reporter = TrainingReporter(cpu_max_epochs=20)
    engine.state.max_epochs, engine.state.epoch, engine.state.epoch_length = 10, 4, 3  # resumed after epoch 4
    engine.state.dataloader = [0, 1, 2]
    reporter.started(engine)
    assert "epochs 5-10 (resumed after epoch 4)" in reporter.start_message(engine)
    assert reporter.cpu_warning(engine) is None  # 10 epochs <= cpu_max_epochs
    reporter._run_start = reporter._epoch_start = 100.0
    engine.state.epoch = 6  # two epochs of this run took 30 s: 4 left take 60 s
    assert reporter.epoch_message(engine, now=130.0).split("; ")[1].startswith("ETA 1 min 00 s for 4 epochs (about ")


@pytest.mark.parametrize("seconds, text", [(4.25, "4.2 s"), (42, "42 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def _validation(epoch, dice_details, extra=0.5):
    """An evaluator state after a validation at ``epoch`` with per-image, per-label Dice ``dice_details``."""
    engine = Engine(lambda e, b: None)
    engine.state.epoch = epoch
    details = torch.tensor(dice_details)
    engine.state.metrics = {"val_mean_dice": float(details.nanmean()), "val_folding": extra, "name": "text"}
    engine.state.metric_details = {"val_mean_dice": details}
    return engine


def test_metrics_history_rows_names_and_resume(tmp_path):
    (tmp_path / "d_dataset.json").write_text(json.dumps({"labels": {"1": "CSF", "2": "GM", "3": "WM"}}))
    history = MetricsHistory(tmp_path / "eval", labels=[1, 2, 3], dataset=tmp_path)
    history(_validation(5, [[0.5, 0.6, 0.7], [0.7, float("nan"), 0.9]]))
    history(_validation(10, [[0.6, 0.6, 0.6], [0.8, 0.8, 0.8]]))
    rows = read_history(tmp_path / "eval" / "metrics_history.csv")
    assert list(rows[0]) == ["epoch", "val_folding", "val_mean_dice", "dice_CSF", "dice_GM", "dice_WM"]
    assert [int(r["epoch"]) for r in rows] == [5, 10]
    assert [float(rows[0][c]) for c in ("dice_CSF", "dice_GM", "dice_WM")] == pytest.approx([0.6, 0.6, 0.8])
    assert float(rows[1]["val_mean_dice"]) == pytest.approx(0.7)
    before = (tmp_path / "eval" / "metrics_history.csv").read_text()
    # a resumed run that validated epoch 10 again (crash between validation and checkpoint): still one row each
    MetricsHistory(tmp_path / "eval", labels=[1, 2, 3], dataset=tmp_path)(_validation(10, [[1.0, 1.0, 1.0]]))
    MetricsHistory(tmp_path / "eval", labels=[1, 2, 3], dataset=tmp_path)(_validation(15, [[0.9, 0.9, 0.9]]))
    rows = read_history(tmp_path / "eval" / "metrics_history.csv")
    assert [(int(r["epoch"]), float(r["dice_CSF"])) for r in rows] == [(5, 0.6), (10, 1.0), (15, 0.9)]
    assert (tmp_path / "eval" / "metrics_history.csv").read_text().startswith(before.splitlines()[0] + "\n5,")
    # a fresh run in the same folder starts a new history
    MetricsHistory(tmp_path / "eval", labels=[1, 2, 3])(_validation(1, [[0.1, 0.2, 0.3]]))
    rows = list(csv.reader(open(tmp_path / "eval" / "metrics_history.csv")))
    assert rows == [
        ["epoch", "val_folding", "val_mean_dice", "dice_1", "dice_2", "dice_3"],
        ["1", "0.5", "0.2", "0.1", "0.2", "0.3"],
    ]


def test_metrics_history_appends(tmp_path):
    history = MetricsHistory(tmp_path, labels=[1])
    history(_validation(1, [[0.5]]))
    path = tmp_path / "metrics_history.csv"
    inode = path.stat().st_ino
    history(_validation(2, [[0.25]]))
    assert path.stat().st_ino == inode  # appended in place, not replaced
    assert path.read_text() == "epoch,val_folding,val_mean_dice,dice_1\n1,0.5,0.5,0.5\n2,0.5,0.25,0.25\n"


def _scalars(log_dir):
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_resume_marker_drops_stale_steps(tmp_path):
    # first run: iterations 1..6 and validations at epochs 1, 2 (3 iterations per epoch), interrupted in epoch 3
    # after logging iterations 7, 8; the checkpoint holds the end of epoch 2 (iteration 6)
    with SummaryWriter(tmp_path) as val, SummaryWriter(tmp_path) as train:
        for i in range(1, 9):
            train.add_scalar("loss", float(i), i)
        for e in range(1, 3):
            val.add_scalar("dice", e / 10, e)
    # the earlier run's files carry an earlier time in their names, as a real earlier run's do (within one second the
    # names would be ordered by a per-process counter, as text: "...9" sorts after "...10")
    for path in event_files(tmp_path):
        parts = path.name.split(".")
        parts[3] = str(int(parts[3]) - 60)
        path.rename(path.with_name(".".join(parts)))
    marker = TensorBoardResumeMarker(tmp_path)  # created before this run's writers, as in train.json
    with SummaryWriter(tmp_path) as val, SummaryWriter(tmp_path) as train:
        engine = Engine(lambda e, b: None)
        engine.state.iteration = 6
        marker(engine)
        for i in range(7, 13):
            train.add_scalar("loss", 100.0 + i, i)
        for e in range(3, 5):
            val.add_scalar("dice", 1 + e / 10, e)
    scalars = _scalars(tmp_path)
    assert scalars["loss"] == [(i, float(i)) for i in range(1, 7)] + [(i, 100.0 + i) for i in range(7, 13)]
    assert [step for step, _ in scalars["dice"]] == [1, 2, 3, 4]
    assert [value for _, value in scalars["dice"]] == pytest.approx([0.1, 0.2, 1.3, 1.4])
    assert marker.marker is not None and marker.marker.name.endswith(".resumed-at-7")


def test_tensorboard_resume_marker_without_old_logs(tmp_path):
    marker = TensorBoardResumeMarker(tmp_path / "new")
    engine = Engine(lambda e, b: None)
    marker.attach(engine)
    engine.run([0], max_epochs=1)
    assert marker.marker is None and not (tmp_path / "new").exists()


def test_pair_progress_reporter(tmp_path, caplog):
    batches = [
        {"moving_name": ["a"], "fixed_name": ["b"], "moving_label": torch.zeros(1)},
        {"moving_name": ["c"], "fixed_name": ["b"]},
    ]

    def step(engine, batch):
        stem = f"{batch['moving_name'][0]}_to_{batch['fixed_name'][0]}"
        for kind in ("warped", "ddf") + (("warped_label",) if "moving_label" in batch else ()):
            (tmp_path / f"{stem}_{kind}.nii.gz").write_bytes(b"x")

    (tmp_path / "old.txt").write_text("from an earlier run")
    os.utime(tmp_path / "old.txt", (0, 0))
    engine = Engine(step)
    engine.state.metrics = {}
    PairProgressReporter(tmp_path, action="registered").attach(engine)
    with caplog.at_level(logging.INFO, logger="monai_vmorph.engines.reporting"):
        engine.run(batches, max_epochs=1)
    lines = [r.getMessage() for r in _ours(caplog)]
    assert lines[0].startswith("pair 1/2 registered (") and lines[0].endswith(
        "a_to_b: a_to_b_ddf.nii.gz, a_to_b_warped.nii.gz, a_to_b_warped_label.nii.gz"
    )
    assert lines[1].endswith("c_to_b: c_to_b_ddf.nii.gz, c_to_b_warped.nii.gz")
    assert lines[2].startswith("registered 2 pairs in ")
    assert lines[2].endswith(
        f"(1 with labels); wrote 5 files to {tmp_path.resolve()} (*_ddf.nii.gz, *_warped.nii.gz, *_warped_label.nii.gz)"
    )


def _hd95_warnings():
    a = torch.zeros(1, 1, 8, 8)
    a[..., 2:5, 2:5] = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_warnings()
        compute_hausdorff_distance(a, torch.roll(a, 1, 2), percentile=95)
        notice = "parsing config_file ['x.json']: any `\"_target_\"` value in it is resolved to an importable"
        warnings.warn(notice, UserWarning, stacklevel=1)
        warnings.warn("parsing config_file: something else", UserWarning, stacklevel=1)
        warnings.warn("monai.metrics.utils get_mask_edges:always_return_as_numpy: other", FutureWarning, stacklevel=1)
    return [(w.category, str(w.message)) for w in caught if w.category is not DeprecationWarning]


def test_quiet_known_warnings_is_narrow():
    assert _hd95_warnings() == [
        (UserWarning, "parsing config_file: something else"),
        (FutureWarning, "monai.metrics.utils get_mask_edges:always_return_as_numpy: other"),
    ]


def test_hd95_warning_is_what_is_filtered():
    a = torch.zeros(1, 1, 8, 8)
    a[..., 2:5, 2:5] = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compute_hausdorff_distance(a, torch.roll(a, 1, 2), percentile=95)
    future = [w for w in caught if w.category is FutureWarning]
    assert future and str(future[0].message).startswith(
        "monai.metrics.utils get_mask_edges:always_return_as_numpy: Argument `always_return_as_numpy`"
    )
