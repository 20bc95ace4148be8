"""The README's Python example runs as written and prints what it claims."""

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _run(block: str) -> list[str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
    return stdout.getvalue().splitlines()


@pytest.mark.slow
def test_readme_example_runs_and_prints_the_documented_shapes():
    example = _python_blocks()[0]
    assert len(example.splitlines()) <= 40
    lines = _run(example)
    assert lines[0] == "torch.Size([1, 1, 97, 115, 93])"
    assert lines[1] == "torch.Size([1, 3, 97, 115, 93])"
    assert lines[2] == "tensor([0.])"


def test_readme_setup_commands_match_ci():
    ci = (README.parent / ".ci" / "run").read_text()
    for command in ("pip install torch==2.13.0", 'pip install -e ".[dev]"', "pytest"):
        assert command in README.read_text()
        assert re.search(rf"^{re.escape(command)}(\s|$)", ci, flags=re.M), command


def test_readme_data_pipeline_example_runs_on_the_embedded_data(monkeypatch):
    monkeypatch.chdir(README.parent)
    lines = _run(_python_blocks()[1])
    assert lines == ["torch.Size([1, 1, 96, 112, 96])", "[0.0, 1.0, 2.0, 3.0]"]


def _cli_block() -> str:
    return next(
        b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S) if "monai-vmorph register" in b
    )


@pytest.mark.slow
def test_readme_command_line_examples_run_and_simpleitk_reproduces_warped(tmp_path, monkeypatch):
    """Every ``monai-vmorph`` command of the README runs as written (in a scratch folder that sees ``data/``), and
    the README's SimpleITK snippet reproduces ``warped.nii.gz`` from the written field."""
    import subprocess

    import nibabel as nib
    import numpy as np
    import SimpleITK as sitk

    (tmp_path / "data").symlink_to(README.parent / "data")
    commands = _cli_block().replace("\\\n", " ").splitlines()
    commands = [c.split("#")[0].strip() for c in commands if c.strip().startswith("monai-vmorph")]
    assert [c.split()[1] for c in commands] == ["register", "warp", "evaluate", "report"]
    for command in commands:
        result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
    out = tmp_path / "out"
    metrics = __import__("json").loads((out / "colin_to_icbm" / "metrics.json").read_text())
    assert metrics["mean_dice"] > metrics["mean_dice_before"] + 0.05
    assert (out / "report" / "report.png").stat().st_size > 10_000
    assert (out / "eval" / "metrics.csv").read_text().count("\n") == 4  # header + the 3 validation pairs
    warped_labels = np.asarray(nib.load(out / "colin_labels.nii.gz").dataobj)
    np.testing.assert_array_equal(
        warped_labels, np.asarray(nib.load(out / "colin_to_icbm" / "warped_labels.nii.gz").dataobj)
    )

    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(_python_blocks()[2], str(README), "exec"), namespace)
    ours = np.asarray(nib.load(out / "colin_to_icbm" / "warped.nii.gz").dataobj).transpose(2, 1, 0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(namespace["warped"]), ours, atol=1e-4)
