"""The command line as a user meets it: fast help and version, help text for every option, early input checks."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_vmorph import __version__
from monai_vmorph.cli import build_parser
from monai_vmorph.cli.model import parse_device

ROOT = Path(__file__).resolve().parents[2]
BRAIN_2D = ROOT / "data" / "brain_2d"

# Runs the command line in a fresh interpreter and reports, after it ends, which heavy modules it imported.
_PROBE = """
import json, sys, time
from monai_vmorph.cli import main
start = time.perf_counter()
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
seconds = time.perf_counter() - start
heavy = sorted(m for m in ("torch", "monai", "numpy", "nibabel", "scipy", "matplotlib") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy, "seconds": seconds}), file=sys.stderr)
"""


def _probe(*argv):
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, argv)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report, result.stdout, "\n".join(result.stderr.strip().splitlines()[:-1])


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["register", "--help"], ["learn2reg", "--help"], ["evaluate", "--help"]],
)
def test_help_and_version_import_neither_torch_nor_monai(argv):
    report, stdout, _ = _probe(*argv)
    assert report["code"] == 0
    assert report["heavy"] == [], report
    if argv == ["--version"]:
        assert stdout.strip() == f"monai-vmorph {__version__}"
    else:
        assert "usage: monai-vmorph" in stdout


def test_a_missing_input_file_is_reported_before_the_heavy_imports(tmp_path):
    report, _, stderr = _probe(
        "register", "--fixed", tmp_path / "nope.nii.gz", "--moving", tmp_path / "m.nii.gz", "--out-dir", tmp_path
    )
    assert report["code"] == 2 and report["heavy"] == []
    assert stderr == f"monai-vmorph: error: --fixed {tmp_path / 'nope.nii.gz'} does not exist; check the path"
    report, _, stderr = _probe("learn2reg", "--dataset", tmp_path / "OASIS", "--out-dir", tmp_path / "out")
    assert report["code"] == 2 and report["heavy"] == [] and "--dataset" in stderr and "does not exist" in stderr
    assert not (tmp_path / "out").exists()


def _subcommands(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_has_a_description_an_example_and_help_for_every_option():
    commands = _subcommands(build_parser())
    assert sorted(commands) == ["evaluate", "learn2reg", "register", "report", "warp"]
    for name, parser in commands.items():
        assert parser.description and len(parser.description) > 40, name
        assert parser.epilog.startswith("example:\n  monai-vmorph " + name), name
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, f"{name} {action.option_strings}"
            shows_default = action.default is not None and action.default is not False and not action.required
            assert (f"(default: {action.default})" in text) == shows_default, f"{name} {action.option_strings}"
    assert "(default: auto)" in commands["register"].format_help()
    assert "--moving-labels" in commands["report"].format_help()


def test_evaluate_pairs_help_names_every_accepted_input():
    text = " ".join(_subcommands(build_parser())["evaluate"].format_help().split())
    for accepted in ("CSV", "Learn2Reg dataset JSON", "Learn2Reg dataset folder"):
        assert accepted in text


def test_device_auto_picks_cuda_when_present():
    assert parse_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert parse_device("cpu") == torch.device("cpu")
    assert build_parser().parse_args(["report", "--fixed", "f", "--moving", "m", "--out-dir", "o"]).device == "auto"


@pytest.mark.slow
def test_evaluate_quiet_prints_only_the_summary(cli, weights_2d, tmp_path):
    csv_path = tmp_path / "pairs.csv"
    fixed, moving = (BRAIN_2D / "imagesTr" / f"{n}_0000.nii.gz" for n in ("colin27_z+0", "icbm09a_z+0"))
    csv_path.write_text(f"moving,fixed\n{moving},{fixed}\n")
    code, stdout, stderr = cli(
        "evaluate", "--pairs", csv_path, "--out-dir", tmp_path / "e", "--weights", weights_2d, "--quiet"
    )
    assert code == 0, stderr
    assert stderr == ""  # no progress bar
    assert "folding_percent: " in stdout and f"1 pairs -> {tmp_path / 'e' / 'metrics.csv'}" in stdout
