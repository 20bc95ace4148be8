"""``monai-vmorph report``: a PNG to check a registration by eye (headless matplotlib).

Columns: fixed, moving, warped, the difference to the fixed image before (|moving − fixed|) and after
(|warped − fixed|) registration on one colour scale, the deformation grid drawn over the warped image, and the
Jacobian determinant with folding (det ≤ 0) in black. With label maps, their contours are drawn over the fixed,
moving and warped images (the fixed labels in thin white over the moving and warped ones) and the mean Dice before
and after registration is in the titles. Rows: the middle axial, coronal and sagittal slices (one
row for 2D). Everything is shown on the network grid (RAS, axis-aligned), where the field was computed.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import torch

from monai_vmorph.cli.errors import CLIError
from monai_vmorph.cli.model import parse_device
from monai_vmorph.cli.register import preset_of, refine_progress
from monai_vmorph.io import resample
from monai_vmorph.metrics import jacobian_determinant
from monai_vmorph.pipeline import (
    NativeScan,
    OutputSet,
    PairResult,
    check_same_dims,
    load_bundle_model,
    normalise_intensity,
    read_scan,
    register_pair,
)

__all__ = ["draw_report", "network_labels", "render_report", "run_report", "unaligned_view"]

COLUMNS = (
    "fixed",
    "moving",
    "warped",
    "before: |moving - fixed|",
    "after: |warped - fixed|",
    "deformation grid",
    "Jacobian determinant",
)
_DIFFERENCE = {"cmap": "magma", "vmin": 0.0, "vmax": 0.5}


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


def _contours(ax, labels: np.ndarray, values: list[int], colours, **kwargs) -> None:
    """One contour per label value present in the slice ``labels``."""
    for value, colour in zip(values, colours, strict=True):
        mask = labels == value
        if mask.any() and not mask.all():
            ax.contour(mask.T.astype(np.float32), levels=[0.5], colors=[colour], origin="lower", **kwargs)


def unaligned_view(result: PairResult, moving: NativeScan) -> PairResult:
    """``result`` with ``net_moving`` replaced by the moving scan on the network grid *before* any registration (the
    pipeline's ``net_moving`` is the network's input, after the affine stage), so that the report's "moving" column
    and "before" difference show the pair as the user gave it."""
    before = resample(normalise_intensity(moving.array), moving.affine, result.net_fixed.shape, result.net_affine)
    return replace(result, net_moving=np.asarray(before, dtype=np.float32))


def network_labels(
    result: PairResult, fixed: NativeScan, moving_labels: NativeScan, fixed_labels: NativeScan
) -> dict[str, np.ndarray]:
    """The label maps on the report's (network) grid, nearest neighbour: ``{"fixed", "moving", "warped"}``.

    ``moving`` is the moving labels before registration, ``warped`` the registered ones (``result.warped_labels``,
    on the fixed scan's grid).
    """
    shape, affine = result.net_fixed.shape, result.net_affine
    return {
        "fixed": resample(fixed_labels.array, fixed_labels.affine, shape, affine, "nearest"),
        "moving": resample(moving_labels.array, moving_labels.affine, shape, affine, "nearest"),
        "warped": resample(result.warped_labels, fixed.affine, shape, affine, "nearest"),
    }


def draw_report(result: PairResult, title: str = "", labels: dict[str, np.ndarray] | None = None):
    """The report figure of ``result`` (a :class:`matplotlib.figure.Figure`; the caller saves and closes it).

    Args:
        result: the registered pair.
        title: the figure's title, before the metrics.
        labels: label maps on the network grid (:func:`network_labels`): their contours are drawn over the fixed,
            moving and warped images (the fixed labels as thin white lines for reference) and the Dice before and
            after registration in the titles.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Patch

    ddf = result.net_ddf
    ndim = ddf.shape[0]
    jac = jacobian_determinant(torch.as_tensor(ddf[None], dtype=torch.float64))[0].numpy()
    rows = _slices(ndim, result.net_fixed.shape)
    fig, axes = plt.subplots(len(rows), len(COLUMNS), figsize=(3 * len(COLUMNS), 3 * len(rows)), squeeze=False)
    values = sorted(int(v) for v in np.unique(labels["fixed"]) if v != 0) if labels is not None else []
    palette = plt.get_cmap("tab10" if len(values) <= 10 else "tab20")
    colours = [palette(i % palette.N) for i in range(len(values))]
    for r, (name, index) in enumerate(rows):
        fixed, moving, warped = (a[index] for a in (result.net_fixed, result.net_moving, result.net_warped))
        kept = [a for a, i in enumerate(index) if isinstance(i, slice)]  # the two displayed array axes
        for c, image in enumerate((fixed, moving, warped)):
            _show(axes[r, c], image, cmap="gray", vmin=0, vmax=1)
        for c, image in ((3, np.abs(moving - fixed)), (4, np.abs(warped - fixed))):
            fig.colorbar(_show(axes[r, c], image, **_DIFFERENCE), ax=axes[r, c], fraction=0.046)
        if labels is not None:
            fixed_labels = labels["fixed"][index]
            _contours(axes[r, 0], fixed_labels, values, colours, linewidths=0.8)
            for c, key in ((1, "moving"), (2, "warped")):
                _contours(axes[r, c], fixed_labels, values, ["white"] * len(values), linewidths=0.4)
                _contours(axes[r, c], labels[key][index], values, colours, linewidths=0.8)
        ax = axes[r, 5]
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
        shown = _show(axes[r, 6], det, cmap="RdBu_r", norm=TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=2.0))
        folds = np.ma.masked_where(det > 0, np.ones_like(det))
        _show(axes[r, 6], folds, cmap="binary", vmin=0, vmax=1)
        fig.colorbar(shown, ax=axes[r, 6], fraction=0.046)
        axes[r, 0].set_ylabel(name)
    metrics = result.metrics
    titles = list(COLUMNS)
    if labels is not None and "mean_dice" in metrics:
        titles[1] = f"moving (Dice {metrics['mean_dice_before']:.3f})"
        titles[2] = f"warped (Dice {metrics['mean_dice']:.3f})"
    for c, column in enumerate(titles):
        axes[0, c].set_title(column)
    axes[0, 6].legend(
        handles=[Patch(facecolor="black", label="folding (det <= 0)")], loc="lower left", fontsize=7, framealpha=0.8
    )
    fig.suptitle(
        f"{title}  folding {metrics['folding_percent']:.3f} %  SDlogJ {metrics['sdlogj']:.3f}"
        + (f"  Dice {metrics['mean_dice_before']:.3f} -> {metrics['mean_dice']:.3f}" if "mean_dice" in metrics else "")
    )
    fig.tight_layout()
    return fig


def render_report(result: PairResult, path, title: str = "", labels: dict[str, np.ndarray] | None = None) -> None:
    """Draw the report of ``result`` (see :func:`draw_report`) into the PNG file ``path``."""
    import matplotlib.pyplot as plt

    fig = draw_report(result, title, labels)
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)


def run_report(args: argparse.Namespace) -> None:
    fixed = read_scan(args.fixed, "--fixed")
    moving = read_scan(args.moving, "--moving")
    moving_labels = read_scan(args.moving_labels, "--moving-labels", labels=True) if args.moving_labels else None
    fixed_labels = read_scan(args.fixed_labels, "--fixed-labels", labels=True) if args.fixed_labels else None
    if (fixed_labels is None) != (moving_labels is None):
        raise CLIError("the report's label contours and Dice need both --moving-labels and --fixed-labels")
    ndim = check_same_dims(*(s for s in (fixed, moving, moving_labels, fixed_labels) if s is not None))
    for labels, image, role in ((moving_labels, moving, "--moving-labels"), (fixed_labels, fixed, "--fixed-labels")):
        if labels is not None and labels.array.shape != image.array.shape:
            raise CLIError(
                f"{role} {labels.path} has shape {labels.array.shape} but its image has {image.array.shape}; "
                "give the label map of that image"
            )
    device = parse_device(args.device)
    inputs = [args.fixed, args.moving, args.moving_labels, args.fixed_labels]
    outputs = OutputSet(args.out_dir, ["report.png"], overwrite=args.overwrite, inputs=inputs)
    bundle = load_bundle_model(ndim, device, args.bundle, args.weights, args.precision)
    callback, bar = refine_progress(args)
    result = register_pair(
        fixed,
        moving,
        bundle,
        args.refine,
        args.refine_lr,
        moving_labels,
        fixed_labels,
        callback,
        affine=args.affine,
        preset=preset_of(args),
        resolution=getattr(args, "resolution", None),
    )
    result = unaligned_view(result, moving)
    if bar is not None:
        bar.close()
    labels = None
    if moving_labels is not None and fixed_labels is not None:
        labels = network_labels(result, fixed, moving_labels, fixed_labels)
    title = f"{moving.path.name} -> {fixed.path.name}"
    with outputs:
        outputs.write_with("report.png", lambda p: render_report(result, p, title, labels))
        outputs.commit()
    if not args.quiet:
        print(f"report of {moving.path.name} -> {fixed.path.name}: {outputs.paths['report.png']}")
