"""``monai-vmorph report``: a PNG to check a registration by eye (headless matplotlib).

Columns: fixed, moving, warped, |warped − fixed|, the deformation grid drawn over the warped image, and the
Jacobian determinant with folding (det ≤ 0) in black. Rows: the middle axial, coronal and sagittal slices (one
row for 2D). Everything is shown on the network grid (RAS, axis-aligned), where the field was computed.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from monai_vmorph.cli.inputs import check_same_dims, load_scan
from monai_vmorph.cli.model import load_bundle_model, parse_device
from monai_vmorph.cli.outputs import OutputSet
from monai_vmorph.cli.pipeline import PairResult, register_scans
from monai_vmorph.cli.register import refine_progress
from monai_vmorph.metrics import jacobian_determinant

__all__ = ["render_report", "run_report"]

COLUMNS = ("fixed", "moving", "warped", "|warped - fixed|", "deformation grid", "Jacobian determinant")


def _slices(ndim: int, shape: tuple[int, ...]) -> list[tuple[str, tuple]]:
    """(title, index) of the middle slices; the displayed plane keeps two array axes."""
    if ndim == 2:
        return [("slice", (slice(None), slice(None)))]
    x, y, z = (n // 2 for n in shape)
    return [
        ("axial", (slice(None), slice(None), z)),
        ("coronal", (slice(None), y, slice(None))),
        ("sagittal", (x, slice(None), slice(None))),
    ]


def _show(ax, image: np.ndarray, **kwargs) -> object:
    # array axis 0 runs left->right (R), axis 1 bottom->top (A or S): transpose and flip for the usual view
    handle = ax.imshow(image.T, origin="lower", interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    return handle


def render_report(result: PairResult, path, title: str = "") -> None:
    """Draw the report of ``result`` into the PNG file ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    ddf = result.net_ddf
    ndim = ddf.shape[0]
    jac = jacobian_determinant(torch.as_tensor(ddf[None], dtype=torch.float64))[0].numpy()
    rows = _slices(ndim, result.net_fixed.shape)
    fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(3 * len(COLUMNS), 3 * len(rows)), squeeze=False)
    for r, (name, index) in enumerate(rows):
        fixed, moving, warped = (a[index] for a in (result.net_fixed, result.net_moving, result.net_warped))
        kept = [a for a, i in enumerate(index) if isinstance(i, slice)]  # the two displayed array axes
        for c, (image, kwargs) in enumerate(
            [
                (fixed, {"cmap": "gray", "vmin": 0, "vmax": 1}),
                (moving, {"cmap": "gray", "vmin": 0, "vmax": 1}),
                (warped, {"cmap": "gray", "vmin": 0, "vmax": 1}),
                (np.abs(warped - fixed), {"cmap": "magma", "vmin": 0, "vmax": 0.5}),
            ]
        ):
            _show(axes[r, c], image, **kwargs)
        ax = axes[r, 4]
        _show(ax, warped, cmap="gray", vmin=0, vmax=1)
        u, v = (ddf[a][index] for a in kept)
        gi, gj = np.meshgrid(*(np.arange(n, dtype=float) for n in u.shape), indexing="ij")
        pi, pj = gi + u, gj + v  # where each displayed voxel samples the moving image
        step = max(2, min(u.shape) // 16)
        for k in range(0, u.shape[0], step):
            ax.plot(pi[k, :], pj[k, :], color="yellow", linewidth=0.5)
        for k in range(0, u.shape[1], step):
            ax.plot(pi[:, k], pj[:, k], color="yellow", linewidth=0.5)
        det = jac[index]
        shown = _show(axes[r, 5], det, cmap="RdBu_r", norm=TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=2.0))
        folds = np.ma.masked_where(det > 0, np.ones_like(det))
        _show(axes[r, 5], folds, cmap="binary", vmin=0, vmax=1)
        fig.colorbar(shown, ax=axes[r, 5], fraction=0.046)
        axes[r, 0].set_ylabel(name)
    for c, column in enumerate(COLUMNS):
        axes[0, c].set_title(column)
    metrics = result.metrics
    fig.suptitle(
        f"{title}  folding {metrics['folding_percent']:.3f} %  SDlogJ {metrics['sdlogj']:.3f}"
        + (f"  Dice {metrics['mean_dice_before']:.3f} -> {metrics['mean_dice']:.3f}" if "mean_dice" in metrics else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)


def run_report(args: argparse.Namespace) -> None:
    fixed = load_scan(args.fixed, "--fixed")
    moving = load_scan(args.moving, "--moving")
    ndim = check_same_dims(fixed, moving)
    device = parse_device(args.device)
    outputs = OutputSet(args.out_dir, ["report.png"], overwrite=args.overwrite, inputs=[args.fixed, args.moving])
    bundle = load_bundle_model(ndim, device, args.bundle, args.weights, args.precision)
    callback, bar = refine_progress(args.refine, args.quiet)
    result = register_scans(fixed, moving, bundle, args.refine, args.refine_lr, progress=callback)
    if bar is not None:
        bar.close()
    with outputs:
        outputs.write_with("report.png", lambda p: render_report(result, p, f"{moving.path.name} -> {fixed.path.name}"))
        outputs.commit()
    if not args.quiet:
        print(f"report of {moving.path.name} -> {fixed.path.name}: {outputs.paths['report.png']}")
