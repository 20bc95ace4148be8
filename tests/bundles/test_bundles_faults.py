"""Bundle runs under faults and mistakes: one ``error:`` line (exit 2) and nothing written, full disks, two runs into
one folder, Ctrl-C then resume, and training that leaves the shipped weights and ``git status`` alone.

Every run is ``python -m monai.bundle run ...`` in a subprocess, as the bundle docs tell users to run it.
"""

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_helpers import BUNDLES, ROOT, SIZE, cli, overrides

from monai_vmorph.io.locks import LOCK_NAME

TRAIN = ["train.json"]
INFER = ["inference.json"]
NAME_2D = "voxelmorph_brain_2d"
SHORT = {"max_epochs": 1, "pairs_per_epoch": 2, "val_interval": 1}


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content (empty if the folder does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(result) -> str:
    """The run's only ``error:`` line, after checking the exit status and that no traceback was printed."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert not [line for line in result.stdout.splitlines() if " - ERROR - " in line], result.stdout[-2000:]
    return errors[0]


def _dataset_variant(dataset_dir: Path, tmp_path: Path, change) -> Path:
    """A copy of the tiny dataset whose JSON ``change(content, root)`` edited."""
    root = tmp_path / "dataset"
    shutil.copytree(dataset_dir, root)
    path = root / "tiny_dataset.json"
    content = json.loads(path.read_text())
    change(content, root)
    path.write_text(json.dumps(content))
    return root


def _unlabelled(content, root):
    content["training"][2].pop("label")
    (root / "labelsTr" / "s2_0000.nii.gz").unlink()


def _missing_label(content, root):
    content["training"][1]["label"] = "./labelsTr/gone_0000.nii.gz"


def _outside(content, root):
    content["training"][0]["image"] = "../elsewhere/s0_0000.nii.gz"
    (root.parent / "elsewhere").mkdir()
    shutil.copy(root / "imagesTr" / "s0_0000.nii.gz", root.parent / "elsewhere")


def _truncated_last(out: Path):
    (out / "models").mkdir(parents=True)
    (out / "models" / "last.pt").write_bytes(b"PK\x03\x04 the first bytes of a killed write")


def _foreign_model(out: Path):
    (out / "models").mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, out / "models" / "model.pt")


# (id, extra settings, dataset change, prepare the output folder, expected start of the error line)
TRAINING_MISTAKES = [
    ("typo", {"learning_rat": 0.1}, None, None, "error: --learning_rat is not a setting of this bundle run"),
    ("empty dataset folder", {"dataset_dir": "EMPTY"}, None, None, "is not a Learn2Reg dataset: it holds no"),
    ("path outside", {}, _outside, None, "error: training[0].image = '../elsewhere/s0_0000.nii.gz' in Learn2Reg"),
    ("missing label", {}, _missing_label, None, "error: file "),
    ("dice without labels", {"dice_weight": 1}, _unlabelled, None, "error: dice_weight 1 needs a label map for"),
    ("duplicate labels", {"labels": [1, 2, 2]}, None, None, "error: labels lists a value twice: [1, 2, 2]"),
    ("truncated last.pt", {}, None, _truncated_last, "error: checkpoint "),
    ("foreign model.pt", {}, None, _foreign_model, "error: "),
]


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "change", "prepare", "expected"), [m[1:] for m in TRAINING_MISTAKES],
                         ids=[m[0] for m in TRAINING_MISTAKES])  # fmt: skip
def test_training_mistakes_exit_2_with_one_error_line_and_write_nothing(
    bundle, tmp_path, extra, change, prepare, expected
):
    name, dataset_dir = bundle
    if name != NAME_2D and extra.get("dice_weight") is None and "learning_rat" not in extra:
        pytest.skip("the 3D bundle shares these code paths; its own configs are covered by the typo and dice cases")
    if change is not None:
        dataset_dir = _dataset_variant(dataset_dir, tmp_path, change)
    out = tmp_path / "out"
    if prepare is not None:
        prepare(out)
    if extra.get("dataset_dir") == "EMPTY":
        (tmp_path / "empty").mkdir()
        extra = {**extra, "dataset_dir": str(tmp_path / "empty")}
    before = _files(out)
    result = cli(name, "run training", TRAIN, **{**overrides(name, dataset_dir, out), **SHORT, **extra})
    line = _one_error_line(result)
    assert expected in line
    if prepare is _truncated_last:
        assert line.startswith(f"error: checkpoint {out / 'models' / 'last.pt'} cannot be read (")
    if prepare is _foreign_model:
        assert line.startswith(f"error: {out / 'models' / 'model.pt'} already exists (no last.pt of the run that")
    if extra.get("learning_rat"):
        assert line.endswith("did you mean learning_rate?")
    assert _files(out) == before  # nothing written, no folder created, no lock left


@pytest.mark.slow
def test_inference_into_a_folder_with_earlier_results_or_with_a_non_label_map_writes_nothing(bundle, tmp_path):
    name, dataset_dir = bundle
    out = tmp_path / "inference"
    out.mkdir()
    (out / "s0_0000_to_s2_0000_ddf.nii.gz").write_bytes(b"an earlier run's field")
    config = {"bundle_root": str(ROOT / "bundles" / name), "dataset_dir": str(dataset_dir)}
    config.update({"spatial_size": [SIZE] * BUNDLES[name][0], "output_dir": str(out)})
    line = _one_error_line(cli(name, "run inferring", INFER, **config))
    assert line == (
        f"error: {out / 's0_0000_to_s2_0000_ddf.nii.gz'} exists (results of an earlier run); pass --overwrite true to "
        "replace them or choose another --output_dir"
    )
    assert _files(out) == {"s0_0000_to_s2_0000_ddf.nii.gz": b"an earlier run's field"}

    # a "label map" with 1500 values is an image: refused before any registration
    ndim = BUNDLES[name][0]
    shape = (40, 40) if ndim == 2 else (12, 12, 12)
    values = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape) % 1500
    variant = _dataset_variant(dataset_dir, tmp_path, lambda content, root: None)
    nib.save(nib.Nifti1Image(values, np.diag([2.0, 2.0, 2.0, 1.0])), variant / "labelsTr" / "s1_0000.nii.gz")
    fresh = tmp_path / "fresh"
    line = _one_error_line(cli(name, "run inferring", INFER, **{**config, "dataset_dir": str(variant),
                                                               "output_dir": str(fresh)}))  # fmt: skip
    assert line == (
        f"error: label map {variant / 'labelsTr' / 's1_0000.nii.gz'} holds 1500 distinct values, more than 1000; "
        "it is not a label map (give the segmentation, not an image)"
    )
    assert not fresh.exists()


def _limit_file_size(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _run_limited(name, command, files, limit, **config):
    """``cli`` with the subprocess's files limited to ``limit`` bytes (``ulimit -f``)."""
    configs = ROOT / "bundles" / name / "configs"
    args = [sys.executable, "-m", "monai.bundle", *command.split(), "--meta_file", str(configs / "metadata.json")]
    args += ["--logging_file", str(configs / "logging.conf"), "--config_file", str([str(configs / f) for f in files])]
    for key, value in config.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=600, cwd=ROOT, preexec_fn=_limit_file_size(limit)
    )


@pytest.mark.slow
def test_inference_on_a_full_disk_is_one_line_and_leaves_no_output(bundle, tmp_path):
    """The shipped weights register the tiny pairs; every written file is cut at 2 kB (the pair's compressed field
    and images are larger): exit 2, one line naming the file, and no output folder."""
    name, dataset_dir = bundle
    out = tmp_path / "inference"
    config = {"bundle_root": str(ROOT / "bundles" / name), "dataset_dir": str(dataset_dir)}
    config.update({"spatial_size": [SIZE] * BUNDLES[name][0], "output_dir": str(out)})
    line = _one_error_line(_run_limited(name, "run inferring", INFER, 2_000, **config))
    assert re.fullmatch(
        rf"error: file size limit exceeded \(ulimit -f\) writing s1_0000_to_s0_0000_\w+\.nii\.gz in {out}; "
        r"free some space or choose another output folder",
        line,
    ), line
    assert not out.exists()


@pytest.mark.slow
def test_checkpoints_on_a_full_disk_are_one_line_and_leave_no_partial_file(tmp_path, bundle):
    name, dataset_dir = bundle
    if name != NAME_2D:
        pytest.skip("checkpoint writing does not depend on the bundle")
    out = tmp_path / "out"
    result = _run_limited(name, "run training", TRAIN, 100_000, **overrides(name, dataset_dir, out), **SHORT)
    line = _one_error_line(result)
    assert re.fullmatch(
        rf"error: file size limit exceeded \(ulimit -f\) writing (model|last)\.pt in {out / 'models'}; .*", line
    ), line
    assert not (out / "models").exists() or list((out / "models").iterdir()) == []


@pytest.mark.slow
def test_two_inference_runs_into_one_folder_exactly_one_succeeds(bundle, tmp_path):
    name, dataset_dir = bundle
    if name != NAME_2D:
        pytest.skip("the folder lock does not depend on the bundle")
    out = tmp_path / "inference"
    configs = ROOT / "bundles" / name / "configs"
    args = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--meta_file", str(configs / "metadata.json")]
    args += ["--config_file", str([str(configs / f) for f in INFER]), "--bundle_root", str(ROOT / "bundles" / name)]
    args += ["--dataset_dir", str(dataset_dir), "--spatial_size", "[32,32]", "--output_dir", str(out)]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)]
    time.sleep(0.5)
    runs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT))
    results = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    assert sorted(code for code, _, _ in results) == [0, 2], [err[-1500:] for _, _, err in results]
    loser = next(err for code, _, err in results if code == 2)
    errors = [line for line in loser.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and (
        "is in use by another run (pid " in errors[0] or "exists (results of an earlier run)" in errors[0]
    ), errors
    stems = ["s1_0000_to_s0_0000", "s0_0000_to_s2_0000"]
    expected = sorted(f"{s}_{k}.nii.gz" for s in stems for k in ("warped", "ddf", "warped_label"))
    assert sorted(p.name for p in out.iterdir()) == expected  # no lock file, no temporary file
    for path in out.iterdir():
        assert np.isfinite(np.asarray(nib.load(path).dataobj)).all()


_INTERRUPTED = re.compile(
    r"(?:interrupted|terminated \(SIGTERM\)) at epoch (\d+) \(last complete checkpoint (.+), epoch (\d+)\); "
    r"run the same command to resume"
)


def _wait_for_line(run: subprocess.Popen, pattern: str) -> str:
    """Read ``run``'s stdout line by line until one contains ``pattern`` (the process reports it); the line."""
    for line in run.stdout:
        if pattern in line:
            return line
    raise AssertionError(f"the run ended (exit {run.wait()}) without printing {pattern!r}")


@pytest.mark.slow
def test_ctrl_c_during_training_is_one_line_and_the_same_command_resumes(bundle, tmp_path):
    """Ctrl-C (SIGINT, 2D bundle) or a scheduler's SIGTERM (3D bundle): one line, exit 130 / 143, and resume.

    No race with the training's own end: the run asks for far more epochs than it can train before the signal, which
    is sent once the process has reported a checkpoint (the file) or a resumption (its log line). The resumed run is
    interrupted the same way; a run with ``max_epochs`` raised just past its checkpoint then finishes it.
    """
    name, dataset_dir = bundle
    stop, status, word = (
        (signal.SIGINT, 130, "interrupted") if name == NAME_2D else (signal.SIGTERM, 143, "terminated (SIGTERM)")
    )
    out = tmp_path / "out"
    epochs = 100_000  # hours of training: the signal always comes first
    config = {**overrides(name, dataset_dir, out), "max_epochs": epochs, "pairs_per_epoch": 2, "val_interval": 5}
    configs = ROOT / "bundles" / name / "configs"
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", str(configs / "metadata.json")]
    args += ["--logging_file", str(configs / "logging.conf"), "--config_file", str([str(configs / f) for f in TRAIN])]
    for key, value in config.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    per_epoch = -(-2 // BUNDLES[name][1].get("batch_size", 1))  # 2 pairs per epoch in batches of the bundle's size
    last = out / "models" / "last.pt"

    def interrupted(run: subprocess.Popen, stderr_file: Path) -> int:
        """Signal ``run``, check its one-line report and exit status; the checkpoint's epoch."""
        run.send_signal(stop)
        try:
            run.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            run.kill()
            run.communicate()
            raise AssertionError(f"the run went on after the signal: {stderr_file.read_text()[-2000:]}") from None
        assert run.returncode == status, stderr_file.read_text()[-2000:]
        stderr = stderr_file.read_text()
        assert "Traceback" not in stderr
        match = _INTERRUPTED.fullmatch(stderr.strip().splitlines()[-1])
        assert match and stderr.strip().splitlines()[-1].startswith(f"{word} at epoch "), stderr[-2000:]
        assert match.group(2) == str(last)
        saved = torch.load(last, weights_only=True)
        assert saved["trainer"]["iteration"] == int(match.group(3)) * per_epoch
        assert int(match.group(1)) in (int(match.group(3)), int(match.group(3)) + 1)
        assert not (out / "models" / LOCK_NAME).exists()
        return int(match.group(3))

    def start(index: int) -> tuple[subprocess.Popen, Path]:
        stderr_file = tmp_path / f"stderr{index}.txt"
        with stderr_file.open("w") as err:
            run = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
        return run, stderr_file

    run, stderr_file = start(0)
    _wait_for_line(run, "Epoch[1] Complete")  # the engine's own log line, after the epoch's checkpoint
    assert last.exists()
    first = interrupted(run, stderr_file)

    run, stderr_file = start(1)  # the same command resumes
    line = _wait_for_line(run, "resumed from ")
    assert f"resumed from {last} at epoch {first} of {epochs}" in line
    second = interrupted(run, stderr_file)
    assert second >= first

    finish = [*args, "--max_epochs", str(second + 1)]  # the last value of an option wins
    again = subprocess.run(finish, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resumed from {last} at epoch {second} of {second + 1}" in again.stdout
    assert torch.load(last, weights_only=True)["trainer"]["iteration"] == (second + 1) * per_epoch


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_training_with_the_readme_command_leaves_the_bundle_and_its_weights_untouched(name, tmp_path):
    """A copy of the repository's bundle and data in a fresh git repository, trained with the README's command
    (one short epoch): the shipped model.pt is unchanged and ``git status`` is clean."""
    ndim = BUNDLES[name][0]
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "bundles" / name, repo / "bundles" / name, ignore=shutil.ignore_patterns("runs", "eval"))
    shutil.copytree(ROOT / "data" / f"brain_{ndim}d", repo / "data" / f"brain_{ndim}d")
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bundle"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    shipped = _sha(repo / "bundles" / name / "models" / "model.pt")
    bundle_dir = f"bundles/{name}"
    args = [sys.executable, "-m", "monai.bundle", "run", "training"]
    args += ["--config_file", f"{bundle_dir}/configs/train.json"]
    args += ["--max_epochs", "1", "--pairs_per_epoch", "1", "--val_interval", "1", "--augment_prob", "0"]
    args += ["--spatial_size", json.dumps([SIZE] * ndim)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(args, capture_output=True, text=True, cwd=repo, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = repo / "bundles" / name / "runs" / "train"
    assert (run_dir / "models" / "model.pt").is_file() and (run_dir / "models" / "last.pt").is_file()
    assert _sha(repo / "bundles" / name / "models" / "model.pt") == shipped
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=all"], capture_output=True, text=True)
    assert status.stdout == ""
