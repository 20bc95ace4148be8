"""Atomic checkpoints, resume after an interruption, and the NaN-loss stop, on tiny ignite engines."""

import math

import pytest
import torch
from ignite.engine import Engine, Events

from monai_vmorph.engines import (
    RegistrationCheckpointer,
    StopOnNonFiniteLoss,
    TrainingDivergedError,
    atomic_torch_save,
    run_training,
)

DATA = list(range(4))  # four iterations per epoch


def _setup(tmp_path, metrics, nan_at=None, resume=True, crash_at=None, lr=0.1):
    """A trainer on y = 2x with SGD, an evaluator returning ``metrics[epoch - 1]``, and the checkpointer."""
    torch.manual_seed(0)
    net = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)

    def train_step(engine, batch):
        if crash_at is not None and engine.state.iteration == crash_at:
            raise KeyboardInterrupt  # a killed run
        x = torch.tensor([[float(batch) / 4]])
        loss = ((net(x) - 2 * x) ** 2).mean()
        if nan_at is not None and engine.state.iteration >= nan_at:
            loss = loss * math.nan
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    trainer = Engine(train_step)
    evaluator = Engine(lambda engine, batch: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(engine):
        engine.state.metrics["val_mean_dice"] = metrics[trainer.state.epoch - 1]

    StopOnNonFiniteLoss().attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: evaluator.run([0]))
    checkpointer = RegistrationCheckpointer(tmp_path, net, optimizer, evaluator=evaluator, resume=resume)
    checkpointer.attach(trainer)
    return trainer, net, optimizer, checkpointer


def test_best_model_follows_the_key_metric_and_last_holds_the_resumable_state(tmp_path):
    trainer, net, _, _ = _setup(tmp_path, metrics=[0.3, 0.5, 0.4])
    weights = {}
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda engine: weights.update({engine.state.epoch: net.weight.item()})
    )
    trainer.run(DATA, max_epochs=3)
    best = torch.load(tmp_path / "model.pt", weights_only=True)
    assert best["weight"].item() == weights[2]  # epoch 2 had the best metric (0.5); epoch 3 (0.4) did not replace it
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 12  # ignite derives the epoch from iteration / epoch_length
    assert last["network"]["weight"].item() == net.weight.item() == weights[3]
    assert (last["best_metric"], last["best_epoch"]) == (0.5, 2)
    assert "momentum_buffer" in last["optimizer"]["state"][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "model.pt"]  # no temporary files left


def test_an_interrupted_run_resumes_from_the_last_complete_epoch(tmp_path):
    # reference: three uninterrupted epochs
    reference, ref_net, _, _ = _setup(tmp_path / "ref", metrics=[0.3, 0.5, 0.4])
    reference.run(DATA, max_epochs=3)

    # killed in the middle of epoch 2 (iteration 6): last.pt holds the end of epoch 1
    trainer, _, _, _ = _setup(tmp_path / "run", metrics=[0.3, 0.5, 0.4], crash_at=6)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(DATA, max_epochs=3)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["trainer"]["iteration"] == 4

    # a new process: fresh objects, same folder
    trainer, net, _, checkpointer = _setup(tmp_path / "run", metrics=[0.3, 0.5, 0.4])
    started = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: started.append(engine.state.epoch))
    trainer.run(DATA, max_epochs=3)
    assert started == [2, 3]
    assert trainer.state.iteration == 12
    # SGD with momentum: identical weights only if the network, the optimizer state and the data order resumed
    assert net.weight.item() == pytest.approx(ref_net.weight.item(), abs=1e-7)
    assert (checkpointer.best_metric, checkpointer.best_epoch) == (0.5, 2)


def test_resume_can_extend_a_finished_run_and_can_be_switched_off(tmp_path):
    trainer, _, _, _ = _setup(tmp_path, metrics=[0.3, 0.5, 0.4, 0.6])
    trainer.run(DATA, max_epochs=2)
    trainer, _, _, checkpointer = _setup(tmp_path, metrics=[0.3, 0.5, 0.4, 0.6])
    trainer.run(DATA, max_epochs=4)
    assert trainer.state.epoch == 4 and trainer.state.iteration == 16
    assert checkpointer.best_epoch == 4

    fresh, _, _, _ = _setup(tmp_path, metrics=[0.1], resume=False)
    started = []
    fresh.add_event_handler(Events.EPOCH_STARTED, lambda engine: started.append(engine.state.epoch))
    fresh.run(DATA, max_epochs=1)
    assert started == [1]


def test_a_nan_loss_stops_training_and_keeps_the_checkpoints_of_the_good_epochs(tmp_path):
    trainer, _, _, _ = _setup(tmp_path, metrics=[0.3, 0.5, 0.9], nan_at=7)  # epoch 2 diverges at iteration 7
    with pytest.raises(TrainingDivergedError, match=r"training loss is nan at epoch 2, iteration 7"):
        trainer.run(DATA, max_epochs=3)
    best = torch.load(tmp_path / "model.pt", weights_only=True)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["trainer"]["iteration"] == 4 and last["best_epoch"] == 1
    assert torch.isfinite(best["weight"]).all() and torch.equal(best["weight"], last["network"]["weight"])


def test_a_resumed_run_uses_the_configured_learning_rate_and_the_saved_momentum(tmp_path):
    trainer, _, _, _ = _setup(tmp_path, metrics=[0.3, 0.5], nan_at=5)
    with pytest.raises(TrainingDivergedError):
        trainer.run(DATA, max_epochs=2)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["optimizer"]
    trainer, net, optimizer, _ = _setup(tmp_path, metrics=[0.3, 0.5], lr=0.01)  # "lower learning_rate, run again"
    momentum = []
    trainer.add_event_handler(
        Events.STARTED, lambda engine: momentum.append(optimizer.state[net.weight]["momentum_buffer"].clone())
    )
    trainer.run(DATA, max_epochs=2)
    assert optimizer.param_groups[0]["lr"] == 0.01 and saved["param_groups"][0]["lr"] == 0.1
    assert torch.equal(momentum[0], saved["state"][0]["momentum_buffer"])


def test_nan_validation_metric_never_replaces_the_best_model(tmp_path):
    trainer, _, _, checkpointer = _setup(tmp_path, metrics=[0.3, math.nan, math.inf])
    trainer.run(DATA, max_epochs=3)
    assert (checkpointer.best_metric, checkpointer.best_epoch) == (0.3, 1)


def test_run_training_turns_divergence_into_one_line_and_exit_status_2(tmp_path, capsys):
    trainer, _, _, _ = _setup(tmp_path, metrics=[0.3, 0.5], nan_at=2)
    trainer.state.max_epochs = None
    trainer.set_data(DATA)
    with pytest.raises(SystemExit) as exit_info:
        run_training(_Runner(trainer))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: training loss is nan at epoch 1, iteration 2; the checkpoints from earlier epochs are kept — "
        "lower learning_rate (or raise smoothness_weight) and run again to resume from the last good epoch"
    ]


class _Runner:
    """What MONAI's SupervisedTrainer looks like to ``run_training``: ``run()`` with no arguments."""

    def __init__(self, engine):
        self.engine = engine

    def run(self):
        self.engine.run(DATA, max_epochs=2)


def test_atomic_save_leaves_the_old_file_when_saving_fails(tmp_path):
    path = tmp_path / "model.pt"
    atomic_torch_save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
