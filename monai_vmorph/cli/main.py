"""``monai-vmorph`` (also ``python -m monai_vmorph``): register, warp, evaluate, report.

Every user mistake ends the process with exit status 2 and one line ``monai-vmorph: error: …`` on stderr (no
traceback), and leaves no partial output file (see :class:`monai_vmorph.cli.outputs.OutputSet`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from monai_vmorph.cli.errors import CLIError
from monai_vmorph.errors import UserError
from monai_vmorph.precision import PRECISIONS
from monai_vmorph.runtime import keep_freed_memory

__all__ = ["build_parser", "entry_point", "main"]

PROG = "monai-vmorph"


class _Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors (argparse prints the whole usage block by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{message}; see {self.prog} --help")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _common(parser: argparse.ArgumentParser, model: bool = True) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    if model:
        parser.add_argument("--bundle", help="bundle folder (default: the shipped brain bundle for 2D/3D inputs)")
        parser.add_argument("--weights", help="weights file (default: <bundle>/models/model.pt)")
        parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
        parser.add_argument(
            "--precision",
            choices=PRECISIONS,
            help="network precision: auto (bf16/fp16 where the device runs it natively, else fp32), fp32, bf16, "
            "fp16 (default: the bundle's, auto)",
        )
        parser.add_argument(
            "--refine",
            type=_non_negative_int,
            default=0,
            metavar="N",
            help="instance-optimisation Adam steps (default 0)",
        )
        parser.add_argument(
            "--refine-lr", type=_positive_float, default=0.05, help="Adam step size in voxels (default 0.05)"
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    parser = _Parser(prog=PROG, description="VoxelMorph deformable registration of NIfTI scans (MONAI).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    reg = commands.add_parser("register", help="register a moving scan to a fixed scan")
    reg.add_argument("--fixed", required=True, help="fixed image (.nii/.nii.gz)")
    reg.add_argument("--moving", required=True, help="moving image (.nii/.nii.gz)")
    reg.add_argument("--out-dir", required=True, help="folder for warped.nii.gz, ddf.nii.gz, metrics.json")
    reg.add_argument("--moving-labels", help="moving label map, warped to warped_labels.nii.gz")
    reg.add_argument("--fixed-labels", help="fixed label map: Dice per label in metrics.json")
    _common(reg)

    warp = commands.add_parser("warp", help="apply an ITK displacement field (ours, ANTs', SimpleITK's)")
    warp.add_argument("--field", required=True, help="ITK displacement field NIfTI")
    warp.add_argument("--moving", required=True, help="image or label map to warp")
    warp.add_argument("--reference", required=True, help="image whose grid the output takes")
    warp.add_argument("--out", required=True, help="output NIfTI")
    warp.add_argument("--interp", choices=("linear", "nearest", "label"), default="linear")
    _common(warp, model=False)

    ev = commands.add_parser("evaluate", help="register a list of pairs and summarise the metrics")
    ev.add_argument("--pairs", required=True, help="CSV of pairs or a Learn2Reg dataset JSON")
    ev.add_argument("--out-dir", required=True, help="folder for metrics.csv and summary.json")
    ev.add_argument("--split", default="registration_val", help="pair list of a Learn2Reg JSON")
    _common(ev)

    rep = commands.add_parser("report", help="PNG of fixed / moving / warped / difference / grid / Jacobian")
    rep.add_argument("--fixed", required=True)
    rep.add_argument("--moving", required=True)
    rep.add_argument("--out-dir", required=True, help="folder for report.png")
    _common(rep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for a user mistake)."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "register":
            from monai_vmorph.cli.register import run_register as run
        elif args.command == "warp":
            from monai_vmorph.cli.warp import run_warp as run
        elif args.command == "evaluate":
            from monai_vmorph.cli.evaluate import run_evaluate as run
        else:
            from monai_vmorph.cli.report import run_report as run
        run(args)
    except (UserError, FileExistsError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no output was written", file=sys.stderr, flush=True)
        return 130
    return 0


def entry_point() -> int:
    """The installed ``monai-vmorph`` program: :func:`main` in a process that keeps freed memory for reuse.

    :func:`monai_vmorph.runtime.keep_freed_memory` changes the whole process's allocator, so it is applied here,
    where the program owns the process, and not in :func:`main`, which tests and scripts call in their own.
    """
    keep_freed_memory()
    return main()
