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
