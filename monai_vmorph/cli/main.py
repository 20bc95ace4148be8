"""``monai-vmorph`` (also ``python -m monai_vmorph``): register, warp, evaluate, report, learn2reg.

Every user mistake ends the process with exit status 2 and one line ``monai-vmorph: error: …`` on stderr (no
traceback), and leaves no partial output file (see :class:`monai_vmorph.pipeline.OutputSet`).

This module imports only the standard library and the package's light modules: ``--help``, ``--version``, a bad
option or a missing input file are answered in a fraction of a second, before PyTorch and MONAI (several seconds
to import) are loaded by the sub-command that runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from monai_vmorph import __version__
from monai_vmorph.cli.errors import CLIError
from monai_vmorph.errors import UserError
from monai_vmorph.precision import PRECISIONS
from monai_vmorph.runtime import keep_freed_memory

__all__ = ["build_parser", "check_inputs", "entry_point", "main"]

PROG = "monai-vmorph"
_FIXED = "data/brain_3d/imagesTr/icbm09a_0000.nii.gz"
_MOVING = "data/brain_3d/imagesTr/colin27_0000.nii.gz"
_SPLITS = ("registration_val", "registration_test")  # monai_vmorph.data.LEARN2REG_PAIR_SPLITS, not imported: heavy


class _Parser(argparse.ArgumentParser):
    """``argparse`` with one-line errors (argparse prints the whole usage block by default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CLIError(f"{message}; see {self.prog} --help")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks and appends ``(default: X)`` to options that have a default.

    Unlike :class:`argparse.ArgumentDefaultsHelpFormatter` it says nothing for ``None`` and ``False`` defaults
    (an optional file, an off switch), whose help says what happens without them.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default is None or default is False or default == argparse.SUPPRESS:
            return text
        if not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


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


#: The affine stage's modes (monai_vmorph.pipeline.affine.AFFINE_MODES, repeated here so that --help does not import
#: torch; a test keeps the two equal).
AFFINE_CHOICES = ("affine", "rigid", "none")

#: The deformable similarities (monai_vmorph.pipeline.auto_similarity.DEFORMABLE_SIMILARITIES, likewise).
SIMILARITY_CHOICES = ("auto", "ncc", "mind")


def _common(parser: argparse.ArgumentParser, model: bool = True, quiet: str = "print nothing on success") -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help=quiet)
    if model:
        parser.add_argument(
            "--bundle", metavar="DIR", help="bundle folder (default: the shipped brain bundle for 2D or 3D inputs)"
        )
        parser.add_argument("--weights", metavar="FILE", help="weights file (default: <bundle>/models/model.pt)")
        parser.add_argument(
            "--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
        )
        parser.add_argument(
            "--affine",
            choices=AFFINE_CHOICES,
            default="affine",
            help="pre-alignment before the network: affine, rigid, or none for scans already aligned",
        )
        parser.add_argument(
            "--similarity",
            choices=SIMILARITY_CHOICES,
            default="auto",
            help="deformable similarity: ncc (local NCC, one contrast), mind (MIND-SSC, any contrasts) or auto "
            "(ncc when the aligned scans' intensities correlate, else mind); it also decides whether the network's "
            "field is used or the affine alignment is kept",
        )
        parser.add_argument(
            "--fast",
            action="store_true",
            help="the network alone, without the deformable stage on the fixed scan's grid (faster, less accurate)",
        )
        parser.add_argument(
            "--resolution",
            type=_positive_float,
            metavar="MM",
            help="voxel size (mm) of the deformable stage's grid (default: the fixed scan's own); e.g. 2 for a "
            "1 mm scan in a quarter of the memory",
        )
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
            help="extra single-level Adam steps of instance optimisation after the refinement preset",
        )
        parser.add_argument(
            "--refine-lr", type=_positive_float, default=0.05, metavar="LR", help="--refine step size in voxels"
        )


def _command(commands, name: str, summary: str, description: str, example: str) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=textwrap.fill(description, 78),
        epilog=f"example:\n  {example}",
        formatter_class=_Formatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of all sub-commands."""
    parser = _Parser(
        prog=PROG,
        description="VoxelMorph deformable registration of NIfTI scans (MONAI). "
        f"Run '{PROG} COMMAND --help' for a command's options and an example.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    reg = _command(
        commands,
        "register",
        "register a moving scan to a fixed scan",
        "Register --moving to --fixed with the bundle's network (and --refine steps). Writes, on the fixed scan's "
        "grid: warped.nii.gz, ddf.nii.gz (an ITK displacement field for SimpleITK, ANTs, Slicer and 'warp'), "
        "metrics.json and, with --moving-labels, warped_labels.nii.gz.",
        f"{PROG} register --fixed {_FIXED} --moving {_MOVING} --out-dir out/pair --refine 20",
    )
    reg.add_argument("--fixed", required=True, metavar="FILE", help="fixed image (.nii/.nii.gz), the target grid")
    reg.add_argument("--moving", required=True, metavar="FILE", help="moving image (.nii/.nii.gz)")
    reg.add_argument("--out-dir", required=True, metavar="DIR", help="output folder (created if missing)")
    reg.add_argument("--moving-labels", metavar="FILE", help="moving label map, warped to warped_labels.nii.gz")
    reg.add_argument("--fixed-labels", metavar="FILE", help="fixed label map: Dice per label in metrics.json")
    reg.add_argument(
        "--fixed-landmarks",
        metavar="FILE",
        help="landmarks on the fixed scan: a Learn2Reg keypoint CSV (voxel indices i,j,k, no header), a Slicer .fcsv "
        "or .mrk.json; with --moving-landmarks (row n matches row n), TRE in mm before/after in metrics.json",
    )
    reg.add_argument("--moving-landmarks", metavar="FILE", help="the corresponding landmarks on the moving scan")
    reg.add_argument(
        "--inverse",
        action="store_true",
        help="also write inverse_ddf.nii.gz: the ITK field on the moving scan's grid that maps moving points to "
        "fixed ones (warps fixed-space images, e.g. an atlas's labels, onto the moving scan)",
    )
    _common(reg)

    warp = _command(
        commands,
        "warp",
        "apply an ITK displacement field (ours, ANTs', SimpleITK's)",
        "Warp --moving with an ITK displacement field onto the grid of --reference, as SimpleITK's Resample does.",
        f"{PROG} warp --field out/pair/ddf.nii.gz --moving data/brain_3d/labelsTr/colin27_0000.nii.gz "
        f"--reference {_FIXED} --out out/labels.nii.gz --interp label",
    )
    warp.add_argument("--field", required=True, metavar="FILE", help="ITK displacement field NIfTI (LPS mm)")
    warp.add_argument("--moving", required=True, metavar="FILE", help="image or label map to warp")
    warp.add_argument("--reference", required=True, metavar="FILE", help="image whose grid the output takes")
    warp.add_argument("--out", required=True, metavar="FILE", help="output NIfTI (.nii or .nii.gz)")
    warp.add_argument(
        "--interp",
        choices=("linear", "nearest", "label"),
        default="linear",
        help="linear for images; nearest keeps an image's values; label warps each label's region smoothly",
    )
    _common(warp, model=False)

    ev = _command(
        commands,
        "evaluate",
        "register a list of pairs and summarise the metrics",
        "Register every pair of --pairs and write metrics.csv (one row per pair) and summary.json (mean, std, "
        "median, min, max of each metric). Each pair's result is kept in pairs/ as soon as it is done: the same "
        "command resumes a killed run, and --shard K/N spreads the list over the tasks of a job array.",
        f"{PROG} evaluate --pairs data/brain_3d --out-dir out/eval",
    )
    ev.add_argument(
        "--pairs",
        required=True,
        metavar="PATH",
        help="a CSV with columns moving,fixed[,moving_label,fixed_label] (paths relative to the CSV), "
        "a Learn2Reg dataset JSON (*_dataset.json), or a Learn2Reg dataset folder holding one",
    )
    ev.add_argument("--out-dir", required=True, metavar="DIR", help="folder for metrics.csv and summary.json")
    ev.add_argument("--split", default="registration_val", choices=_SPLITS, help="pair list of a Learn2Reg dataset")
    ev.add_argument(
        "--shard",
        metavar="K/N",
        help="register only the pairs i with i %% N == K-1 (1 <= K <= N): the N tasks of a job array share one "
        "--out-dir; then run once without --shard (or with --merge) for metrics.csv and summary.json",
    )
    ev.add_argument(
        "--merge",
        action="store_true",
        help="write metrics.csv and summary.json from the shards' pair results, registering nothing",
    )
    _common(ev, quiet="hide the progress bar (the summary is still printed)")

    rep = _command(
        commands,
        "report",
        "PNG to check a registration by eye",
        "Register --moving to --fixed and draw report.png: fixed, moving, warped, the difference before and after "
        "registration, the deformation grid and the Jacobian determinant (folds in black); with label maps, their "
        "contours and Dice before and after.",
        f"{PROG} report --fixed {_FIXED} --moving {_MOVING} --out-dir out/report",
    )
    rep.add_argument("--fixed", required=True, metavar="FILE", help="fixed image (.nii/.nii.gz)")
    rep.add_argument("--moving", required=True, metavar="FILE", help="moving image (.nii/.nii.gz)")
    rep.add_argument("--out-dir", required=True, metavar="DIR", help="folder for report.png")
    rep.add_argument("--moving-labels", metavar="FILE", help="moving label map: contours and Dice in the report")
    rep.add_argument("--fixed-labels", metavar="FILE", help="fixed label map (needs --moving-labels)")
    _common(rep)

    l2r = _command(
        commands,
        "learn2reg",
        "write Learn2Reg submission fields and its metrics for a dataset split",
        "Register every pair of a Learn2Reg split and write one displacement field per pair in Learn2Reg's "
        "format: disp_FFFF_ffff_MMMM_mmmm (fixed and moving case ids and modalities), on the fixed grid, in voxels "
        "of the moving image, shape (H, W, D, 3). metrics.json holds Learn2Reg's own Dice, HD95 and SDlogJ "
        "(computed from the fields as written) next to this package's metrics.",
        f"{PROG} learn2reg --dataset OASIS --split registration_val --out-dir submission",
    )
    l2r.add_argument(
        "--dataset",
        required=True,
        metavar="PATH",
        help="Learn2Reg dataset folder (as downloaded, e.g. OASIS/ with OASIS_dataset.json) or its JSON",
    )
    l2r.add_argument("--split", default="registration_val", choices=_SPLITS, help="pair list of the dataset JSON")
    l2r.add_argument("--out-dir", required=True, metavar="DIR", help="folder for the fields and metrics.json")
    l2r.add_argument(
        "--format",
        choices=("npz", "nii.gz"),
        default="npz",
        help="npz: float16 (Learn2Reg's submission size); nii.gz: float32",
    )
    l2r.add_argument(
        "--short-names",
        action="store_true",
        help="name a field disp_FFFF_MMMM where Learn2Reg accepts it (fixed modality 0000, moving 0001)",
    )
    l2r.add_argument("--shard", metavar="K/N", help="write only the fields of pairs i with i %% N == K-1 (job arrays)")
    l2r.add_argument(
        "--merge", action="store_true", help="write metrics.json from the shards' fields, registering nothing"
    )
    _common(l2r, quiet="hide the progress bar (the summary is still printed)")
    return parser


def _check_file(path: str | None, role: str, what: str = "give a .nii or .nii.gz file") -> None:
    if path is None:
        return
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{role} {p} does not exist; check the path")
    if p.is_dir():
        raise CLIError(f"{role} {p} is a folder; {what}")


def check_inputs(args: argparse.Namespace) -> None:
    """Report a missing input file or folder of the parsed ``args`` before the heavy modules are imported.

    The sub-commands check the same paths again (and their contents) when they read them.

    Raises:
        CLIError: an input file that does not exist or is a folder, a ``--bundle`` that is not a folder.
    """
    if args.command in ("register", "report"):
        for role in ("fixed", "moving", "moving_labels", "fixed_labels", "fixed_landmarks", "moving_landmarks"):
            _check_file(getattr(args, role, None), "--" + role.replace("_", "-"), "give a landmark or NIfTI file")
    elif args.command == "warp":
        for role in ("reference", "moving", "field"):
            _check_file(getattr(args, role), f"--{role}")
    elif args.command in ("evaluate", "learn2reg"):
        option = "--pairs" if args.command == "evaluate" else "--dataset"
        path = Path(getattr(args, option[2:]))
        if not path.exists():
            raise CLIError(
                f"{option} {path} does not exist; give "
                + ("a pairs CSV, " if args.command == "evaluate" else "")
                + "a Learn2Reg dataset folder or its *_dataset.json"
            )
    if getattr(args, "bundle", None) is not None and not os.path.isdir(args.bundle):
        raise CLIError(
            f"--bundle {args.bundle} is not a folder; give a bundle folder such as bundles/voxelmorph_brain_3d"
        )
    weights = getattr(args, "weights", None)
    if weights is not None and not os.path.isfile(weights):
        raise CLIError(f"weights {weights} do not exist; train the bundle first or pass --weights FILE")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, or 2 for a user mistake)."""
    try:
        args = build_parser().parse_args(argv)
        check_inputs(args)
        if args.command == "register":
            from monai_vmorph.cli.register import run_register as run
        elif args.command == "warp":
            from monai_vmorph.cli.warp import run_warp as run
        elif args.command == "evaluate":
            from monai_vmorph.cli.evaluate import run_evaluate as run
        elif args.command == "learn2reg":
            from monai_vmorph.cli.learn2reg import run_learn2reg as run
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
