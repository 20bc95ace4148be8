"""Atomic checkpoints, resume after an interruption, and the NaN-loss stop, on tiny ignite engines."""

import math
import os
import signal

import pytest
import torch
from ignite.engine import Engine, Events

from monai_vmorph.engines import (
    RegistrationCheckpointer,
    StopOnNonFiniteLoss,
    TrainingDivergedError,
    TrainingInterrupted,
    atomic_torch_save,
    check_checkpoint_folder,
    run_training,
)
from monai_vmorph.engines.checkpoint import checkpointer_of
from monai_vmorph.errors import UserError

DATA = list(range(4))  # four iterations per epoch


def _setup(tmp_path, metrics, nan_at=None, resume=True, crash_at=None, lr=0.1, init_weights=None):
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
    checkpointer = RegistrationCheckpointer(
        tmp_path, net, optimizer, evaluator=evaluator, resume=resume, init_weights=init_weights
    )
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


def test_fine_tuning_starts_from_init_weights_and_resumes_from_its_own_last_pt(tmp_path):
    # a bundle's model.pt: network_def keys ("model." prefix), stored in float16
    shipped = tmp_path / "shipped.pt"
    torch.save({"model.weight": torch.tensor([[1.5]]).half(), "model.bias": torch.tensor([0.25]).half()}, shipped)
    trainer, net, _, _ = _setup(tmp_path / "run", metrics=[0.3, 0.5], init_weights=shipped, lr=0.0)
    seen = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append((net.weight.item(), net.bias.item())))
    trainer.run(DATA, max_epochs=1)
    assert seen[0] == (1.5, 0.25) and net.weight.dtype == torch.float32  # lr 0: the weights stay the shipped ones

    # the same command again (a longer run): resumes its own last.pt, the init weights are not loaded over it
    torch.save({"weight": torch.tensor([[9.0]]), "bias": torch.tensor([9.0])}, shipped)
    trainer, net, _, checkpointer = _setup(tmp_path / "run", metrics=[0.3, 0.5], init_weights=shipped, lr=0.0)
    trainer.run(DATA, max_epochs=2)
    assert (net.weight.item(), net.bias.item()) == (1.5, 0.25) and checkpointer.saved_epoch == 2

    # weights of another network, a missing file, a file that is not a state dict: one line each
    for bad, match in (
        ({"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}, "does not fit this network"),
        (None, "is not a file"),
        ({"weight": [1.0]}, "state dict of tensors"),
    ):
        path = tmp_path / "bad.pt"
        path.unlink(missing_ok=True)
        if bad is not None:
            torch.save(bad, path)
        trainer, _, _, _ = _setup(tmp_path / "fresh", metrics=[0.3], init_weights=path)
        with pytest.raises(UserError, match=match) as error:
            trainer.run(DATA, max_epochs=1)
        assert "\n" not in str(error.value) and "--init_weights" in str(error.value)
        assert not (tmp_path / "fresh" / "last.pt").exists()


def test_resume_can_extend_a_finished_run_and_can_be_switched_off(tmp_path):
    trainer, _, _, _ = _setup(tmp_path, metrics=[0.3, 0.5, 0.4, 0.6])
    trainer.run(DATA, max_epochs=2)
    trainer, _, _, checkpointer = _setup(tmp_path, metrics=[0.3, 0.5, 0.4, 0.6])
    trainer.run(DATA, max_epochs=4)
    assert trainer.state.epoch == 4 and trainer.state.iteration == 16
    assert checkpointer.best_epoch == 4

    # without resuming, the earlier run's model.pt would be replaced by weights of another run: refused
    fresh, _, _, _ = _setup(tmp_path, metrics=[0.1], resume=False)
    with pytest.raises(UserError, match=r"model\.pt already exists \(resume is off\); training would overwrite"):
        fresh.run(DATA, max_epochs=1)
    (tmp_path / "model.pt").rename(tmp_path / "kept.pt")
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


def test_run_training_names_the_last_complete_checkpoint_when_interrupted(tmp_path):
    trainer, _, _, checkpointer = _setup(tmp_path, metrics=[0.3, 0.5, 0.4], crash_at=10)  # Ctrl-C in epoch 3
    assert checkpointer_of(trainer) is checkpointer
    trainer.state.max_epochs, trainer.state.epoch_length = 3, len(DATA)
    trainer.set_data(DATA)
    with pytest.raises(TrainingInterrupted) as interrupt:
        run_training(trainer)
    assert str(interrupt.value) == (
        f"interrupted at epoch 3 (last complete checkpoint {tmp_path / 'last.pt'}, epoch 2); "
        "run the same command to resume"
    )
    assert torch.load(tmp_path / "last.pt", weights_only=True)["trainer"]["iteration"] == 2 * len(DATA)


def test_a_model_pt_the_run_did_not_write_is_never_replaced(tmp_path):
    shipped = {"weight": torch.full((1, 1), 7.0)}
    torch.save(shipped, tmp_path / "model.pt")
    trainer, _, _, _ = _setup(tmp_path, metrics=[0.3])
    with pytest.raises(UserError, match=r"model\.pt already exists \(no last\.pt of the run that wrote it\)"):
        trainer.run(DATA, max_epochs=1)
    assert torch.equal(torch.load(tmp_path / "model.pt", weights_only=True)["weight"], shipped["weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no lock file, nothing else


def test_a_truncated_last_pt_is_named_in_one_line_before_training(tmp_path):
    trainer, _, _, _ = _setup(tmp_path, metrics=[0.3, 0.5])
    trainer.run(DATA, max_epochs=1)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=rf"^checkpoint {tmp_path / 'last.pt'} cannot be read \("):
        check_checkpoint_folder(tmp_path)
    trainer, _, _, _ = _setup(tmp_path, metrics=[0.3, 0.5])
    with pytest.raises(UserError, match=rf"^checkpoint {tmp_path / 'last.pt'} cannot be read \("):
        trainer.run(DATA, max_epochs=2)


def test_leftover_temporaries_of_killed_writes_are_removed_by_the_next_run(tmp_path):
    (tmp_path / ".last.tmp-0123456789ab.pt").write_bytes(b"half a checkpoint")
    (tmp_path / ".model.tmp-abcdef012345.pt").write_bytes(b"")
    (tmp_path / "notes.tmp-0123456789ab.pt").write_bytes(b"not ours: not hidden")
    trainer, _, _, _ = _setup(tmp_path, metrics=[0.3])
    trainer.run(DATA, max_epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "model.pt", "notes.tmp-0123456789ab.pt"]


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


class _SignalsInFinalizer:
    """An object whose finalizer sends this process a signal: the signal's exception is raised inside ``__del__``,
    where Python prints and drops it (what a Ctrl-C meeting a nibabel finalizer did)."""

    def __init__(self, number):
        self.number = number

    def __del__(self):
        os.kill(os.getpid(), self.number)
        for _ in range(1000):  # the handler runs between these bytecodes, inside __del__
            pass


@pytest.mark.parametrize(("number", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_whose_exception_a_finalizer_dropped_still_stops_training(number, status):
    seen = []

    def step(engine, batch):
        seen.append(engine.state.iteration)
        if engine.state.iteration == 3:
            _SignalsInFinalizer(number)  # freed at once: the interrupt is raised in __del__ and lost there
        return 0.0

    trainer = Engine(step)
    trainer.set_data(list(range(10)))
    trainer.state.max_epochs, trainer.state.epoch_length = 100, 10
    with pytest.raises(TrainingInterrupted) as interrupt:
        run_training(trainer)
    assert interrupt.value.exit_status == status
    assert seen == [1, 2, 3]  # stopped at the end of the iteration the signal came in, not 997 iterations later
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are restored
