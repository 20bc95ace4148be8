"""Time and memory of ``register_pair`` on a whole brain at 1 mm (the deformable stage on the fixed scan's grid).

The embedded 2 mm scans (icbm09a fixed, colin27 moving) are resampled by cubic B-splines to 1 mm (191x223x191
voxels, the size of a 1 mm MNI brain) and registered with each preset named on the command line (default: the
defaults, and the default at ``--resolution 2``). Printed per run: seconds (the ``register_pair`` call), seconds per
stage, the deformable grid and the memory the stage estimated for it, the peak resident memory above what the
process held before the call, and the folding of the written field. ``--quick``: the scans at 2 mm, 1 run (a
smoke test).

    python benchmarks/bench_native.py [--runs default res2 fast] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from monai_vmorph.pipeline import NativeScan, load_bundle_model, read_scan, register_pair

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import PeakMemory

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"default": {}, "res2": {"resolution": 2.0}, "fast": {"preset": "fast"}}


def at_1mm(path: Path) -> NativeScan:
    """The scan resampled by cubic B-splines onto a grid of half its voxel size (corner voxels kept)."""
    scan = read_scan(str(path), "scan")
    image = sitk.GetImageFromArray(np.ascontiguousarray(scan.array.T.astype(np.float32)))
    size = [2 * n - 1 for n in scan.array.shape]
    direction = tuple(np.eye(3).ravel())
    out = sitk.Resample(image, size, sitk.Transform(), sitk.sitkBSpline, (0, 0, 0), (0.5,) * 3, direction, 0.0)
    affine = scan.affine.copy()
    affine[:3, :3] /= 2
    return NativeScan.from_array(np.clip(sitk.GetArrayFromImage(out).T, 0, None), affine)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=["default", "res2"], choices=list(RUNS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the 2 mm scans, one run (smoke test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = ROOT / "data" / "brain_3d" / "imagesTr"
    paths = images / "icbm09a_0000.nii.gz", images / "colin27_0000.nii.gz"
    if args.quick:
        fixed, moving = (read_scan(str(p), "scan") for p in paths)
        args.runs = args.runs[:1]
    else:
        fixed, moving = (at_1mm(p) for p in paths)
    bundle = load_bundle_model(3, torch.device("cpu"))
    print(f"# fixed {'x'.join(map(str, fixed.array.shape))} at {abs(fixed.affine[0, 0]):g} mm, {args.threads} threads")
    columns = "s (register_pair) | affine | network | deformable | native | grid | estimate GB | peak GB | folding %"
    print(f"| run | {columns} |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for run in args.runs:
        with PeakMemory() as peak:
            start = time.perf_counter()
            metrics = register_pair(fixed, moving, bundle, **RUNS[run]).metrics
            seconds = time.perf_counter() - start
        stage = metrics.get("deformable", {})
        times = [metrics.get(f"seconds_{key}", 0.0) for key in ("affine", "network", "deformable", "native")]
        grid = "x".join(map(str, stage.get("grid_shape", []))) or "—"
        estimate = f"{stage['memory_estimate_gb']:.2f}" if stage else "—"
        peak_gb = f"{peak.gb:.2f}" if peak.gb is not None else "—"
        cells = " | ".join(f"{t:.2f}" for t in times)
        folding = metrics["folding_percent"]
        print(f"| {run} | {seconds:.2f} | {cells} | {grid} | {estimate} | {peak_gb} | {folding:.4f} |")


if __name__ == "__main__":
    main()
