"""Accuracy and time per pair of our VoxelMorph model against classical registration, on the embedded 3D brains.

Tasks on ``data/brain_3d`` (four T1 brains with CSF/GM/WM labels on one 2 mm MNI grid): S and I below, A (not
pre-aligned, ``accuracy_task_a.py``) and C (Task I's pairs with a T2-like moving scan, ``accuracy_task_c.py``).

* **S (synthetic):** each subject (image and labels) is warped by a known random smooth diffeomorphic field
  (:class:`~monai_vmorph.transforms.RandSyntheticPaird`: ``fixed(x) = moving(x + u(x))``, largest velocity
  component 4 voxels = 8 mm, control points every 16 voxels; seeds fixed); the subject is registered to its
  warped copy. Reported: tissue Dice, endpoint error (mm) against ``u`` inside the brain (fixed label > 0),
  % folding, seconds per pair.
* **I (inter-subject):** the dataset's ``registration_val`` pairs (``--all-pairs``: all 12 ordered pairs).
  Reported: Dice, % folding, SDlogJ (Learn2Reg's, :func:`monai_vmorph.metrics.sdlogj`), seconds per pair.

Every method returns a displacement field on the fixed grid, converted to our voxel DDF ``(1, 3, *S)``
(``warped(x) = moving(x + u(x))``); ONE code path then scores all of them: the moving labels are warped by
:func:`monai_vmorph.io.warp_physical` in ``"label"`` mode (one-hot, linear, argmax), Dice is the mean over labels
1-3, folding is ``det J <= 0``. The synthetic fixed labels are made by the same label warp with the true field,
so a perfect registration scores Dice 1 and EPE 0. Seconds cover the registration call only (model and
library loading excluded), with ``--threads`` threads for torch, SimpleITK, ITK and ANTs.

Methods:

* ``identity``: zero displacement.
* ``ours-fast`` / ``ours`` / ``ours-grid`` / ``ours+refine``: :func:`monai_vmorph.pipeline.register_pair` with the
  shipped brain bundle (or ``--weights``), as ``monai-vmorph register`` runs it: the affine stage, then the network
  alone (``--fast``), the network then the deformable stage on the fixed scan's grid (the command's default), the
  network then the refinement on the network's grid (preset ``"network-grid"``, the default before; with
  ``+native`` followed by the deformable stage), or the network then ``--refine`` Adam steps. Seconds include
  everything in the call; after each table, the time per stage.
* ``ants-syn``: antspyx ``ants.registration(type_of_transform="SyNOnly")`` with ANTsPy's default parameters
  (Mattes MI, 40x20x0 iterations at shrink 4x2x1, flow sigma 3): the volumes are already affinely aligned in MNI
  space, so no affine stage (ANTs still writes its identity start as ``0GenericAffine.mat``; it is checked to be
  the identity). Its forward warp ``1Warp.nii.gz`` (ITK displacement field, LPS mm) is read with
  :func:`monai_vmorph.io.read_itk_displacement`; on the first pair the labels warped by that converted field are
  compared with ``ants.apply_transforms(interpolator="nearestNeighbor")`` and the agreement printed.
* ``sitk-demons``: SimpleITK ``DiffeomorphicDemonsRegistrationFilter`` after histogram matching, symmetric
  gradient, field smoothing 1.5 voxels, 100 iterations at half then 100 at full resolution.
* ``elastix-bspline``: itk-elastix with ``GetDefaultParameterMap("bspline")`` (4 resolutions x 256 iterations,
  Mattes MI + bending energy, final grid spacing 10 mm), only ``WriteResultImage`` off (output only); the field
  from ``itk.transformix_deformation_field``. Its threads are ITK's global default (``number_of_threads=``
  crashes itk-elastix 0.25.4).

* ``greedy`` / ``convexadam``: the strongest peers (``accuracy_peers.py``): picsl-greedy's affine then deformable
  runs as the Greedy manual suggests (NMI across contrasts), and ``convex_adam_pt`` with its defaults (MIND).

``--quick`` (smoke run, not for numbers): the first synthetic pair and the first ``registration_val`` pair only,
``ours+refine`` 5 steps, demons 20 iterations at full resolution only, ants-syn 10x5x0 iterations, elastix
2 resolutions x 20 iterations. Images are never downsampled, so identity scores are those of the full benchmark.

A method that cannot run (missing weights or package) gives a row "not available: <reason>".

``--precision`` sets the network's precision (:mod:`monai_vmorph.precision`; default ``auto``); given several
(``--precision fp32 bf16``), ``ours``/``ours+refine`` run once per precision (rows ``ours [bf16]``) and each task
ends with a line comparing every precision with the first one, pair by pair: largest Dice and EPE difference,
largest voxel-wise field difference (mm) and folding. ``--emulate`` runs ``bf16``/``fp16`` as float32 with the
convolutions' operands and results rounded to that type
(:func:`~monai_vmorph.precision.emulate_reduced_precision`), for CPUs without native bfloat16, where the real
kernels are hundreds of times slower; seconds are then those of float32.

    python benchmarks/bench_accuracy.py                       # both tasks, all methods, 1 synthetic pair/subject
    python benchmarks/bench_accuracy.py --quick --methods identity sitk-demons   # smoke run

Needs ``pip install -e .[bench]`` for the ants-syn and elastix-bspline rows.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from importlib import metadata
from pathlib import Path

import monai
import numpy as np
import SimpleITK as sitk
import torch

from monai_vmorph.data import learn2reg_datalist
from monai_vmorph.errors import UserError
from monai_vmorph.io import affine_to_itk, itk_to_affine, read_itk_displacement, warp_physical
from monai_vmorph.metrics import endpoint_error, folding_fraction, label_dice, sdlogj
from monai_vmorph.pipeline import BundleModel
from monai_vmorph.precision import PRECISIONS, emulate_reduced_precision, precision_dtype, resolve_precision

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy_peers
import accuracy_task_a as task_a
import accuracy_task_c as task_c
from accuracy_base import (  # noqa: F401  (re-exported for bench_budget and the tests)
    Identity,
    Method,
    NotAvailable,
    Pair,
    Settings,
    _labels_of,
    _lps_vector_array_to_ras,
    _on_fixed_grid,
    _sitk_image,
    ddf_to_ras,
    inter_subject_pairs,
    mean_std,
    ras_to_ddf,
    synthetic_pairs,
)
from peak_memory import PeakMemory

ROOT = Path(__file__).resolve().parents[1]
METHODS = (
    "identity",
    "ours-fast",
    "ours",
    "ours-grid",
    "ours-grid+native",
    "ours+refine",
    "affine-only",
    "ants-syn",
    "greedy",
    "convexadam",
    "sitk-demons",
    "sitk-affine-demons",
    "elastix-bspline",
)
TASKS = {"S": "synthetic", "I": "inter-subject", "A": "affine + warp, not pre-aligned", "C": "cross-contrast"}
LABELS = (1, 2, 3)
NA = "not available"


# --------------------------------------------------------------------------------------------- methods
class Ours(Method):
    """``register_pair`` with the shipped bundle's weights (``--weights``), or with a ready ``bundle`` model.

    ``affine`` is the affine stage's mode (``"none"``: the network on the pair as given), ``preset`` names a refinement
    preset (``"fast"``: the network alone); ``refine`` adds fixed Adam steps. The stage times of every pair are kept
    in ``stages`` (affine and network seconds; per level: factor, steps, seconds).
    """

    def __init__(
        self,
        settings: Settings,
        refine: int,
        bundle: BundleModel | None = None,
        preset: str = "fast",
        affine: str = "none",
    ) -> None:
        super().__init__(settings)
        self.refine = refine
        self.bundle = bundle
        self.preset = preset
        self.affine = affine
        self.stages: list[dict] = []

    def prepare(self) -> None:
        from monai_vmorph.pipeline import load_bundle_model

        if self.bundle is not None:
            return

        precision = "fp32" if self._emulated else self.settings.precision
        try:
            self.bundle = load_bundle_model(3, torch.device("cpu"), weights=self.settings.weights, precision=precision)
        except UserError as error:
            raise NotAvailable(str(error)) from None

    @property
    def _emulated(self) -> bool:
        return self.settings.emulate and self.settings.precision in ("bf16", "fp16")

    def run(self, pair: Pair) -> torch.Tensor:
        from monai_vmorph.pipeline import register_pair

        emulation = emulate_reduced_precision(precision_dtype(self.settings.precision)) if self._emulated else None
        with emulation or contextlib.nullcontext():
            result = register_pair(
                pair.fixed, pair.moving, self.bundle, refine=self.refine, affine=self.affine, preset=self.preset
            )
        self.stages.append(
            {
                "affine": result.metrics["seconds_affine"],
                "network": result.metrics["seconds_network"],
                "levels": result.metrics.get("refine_levels", []),
                "deformable": result.metrics.get("deformable", {}).get("levels", []),
            }
        )
        return _on_fixed_grid(result.displacement, pair.fixed.affine, pair)

    def stage_summary(self) -> str:
        """Mean seconds per pair of each stage, and mean steps per level, over the pairs run so far."""
        if not self.stages:
            return ""
        parts = [f"{key} {statistics.fmean(s[key] for s in self.stages):.2f} s" for key in ("affine", "network")]
        for k, level in enumerate(self.stages[0]["levels"]):
            rows = [s["levels"][k] for s in self.stages]
            seconds = statistics.fmean(r["seconds"] for r in rows)
            steps = statistics.fmean(r["steps"] for r in rows)
            parts.append(f"refine 1/{level['factor']} res {seconds:.2f} s ({steps:.1f} steps)")
        for k, level in enumerate(self.stages[0]["deformable"]):
            rows = [s["deformable"][k] for s in self.stages]
            seconds = statistics.fmean(r["seconds"] for r in rows)
            steps = statistics.fmean(r["iterations"] for r in rows)
            parts.append(f"deformable 1/{level['shrink']} {seconds:.2f} s ({steps:.1f} it)")
        self.stages = []
        return ", ".join(parts)


class AntsSyN(Method):
    def prepare(self) -> None:
        try:
            import ants
        except Exception as error:  # ImportError, or a broken install
            raise NotAvailable(
                f"antspyx cannot be imported ({type(error).__name__}: {error}); pip install -e .[bench]"
            ) from None
        self.ants = ants
        self.checked = False
        self.transforms: list[str] = []
        self.files: set[str] = set()

    def _image(self, array: np.ndarray, affine: np.ndarray):
        origin, spacing, direction = affine_to_itk(affine)
        data = np.ascontiguousarray(array.astype(np.float32))
        return self.ants.from_numpy(
            data, origin=list(origin), spacing=list(spacing), direction=np.reshape(direction, (3, 3))
        )

    def run(self, pair: Pair) -> torch.Tensor:
        self._cleanup()
        fixed, moving = self.images(pair)
        options = {"reg_iterations": (10, 5, 0)} if self.settings.quick else {}
        kind = "SyNOnly" if pair.aligned else "SyN"  # task A: ANTs' own affine stage first
        reg = self.ants.registration(fixed, moving, type_of_transform=kind, **options)
        self.transforms = list(reg["fwdtransforms"])
        self.files = {*self.transforms, *reg["invtransforms"]}
        # SyNOnly starts from the identity, which ANTs still writes as a 0GenericAffine.mat: check it is one
        warps = [t for t in self.transforms if t.endswith("Warp.nii.gz")]
        matrix = np.eye(4)
        for path in self.transforms:
            if path.endswith(".mat"):
                transform = self.ants.read_transform(path)
                parameters = np.asarray(transform.parameters, dtype=np.float64)
                matrix = task_a.ants_matrix_to_ras(parameters, np.asarray(transform.fixed_parameters))
                if pair.aligned and not np.allclose(matrix, np.eye(4), atol=1e-6):
                    raise RuntimeError(f"SyNOnly returned a non-identity affine {path}: {parameters.tolist()}")
        if len(warps) != 1:
            raise RuntimeError(f"{kind} returned {self.transforms}, expected one *Warp.nii.gz")
        displacement, affine = read_itk_displacement(warps[0], 3)
        if self.checked:  # the files are kept for check() on the first pair only
            self._cleanup()
        if not pair.aligned:  # ITK's composite applies the warp first, then the affine: q = A(p + w(p))
            warp = _on_fixed_grid(displacement, affine, pair)
            displacement, affine = (
                task_a.affine_displacement_ras(matrix, ddf_to_ras(warp, pair.fixed.affine), pair),
                pair.fixed.affine,
            )
        return _on_fixed_grid(displacement, affine, pair)

    def check(self, pair: Pair, ddf: torch.Tensor) -> str | None:
        if self.checked or not self.transforms:
            return None
        self.checked = True
        fixed = self._image(pair.fixed.array, pair.fixed.affine)
        labels = self._image(pair.moving_labels, pair.moving.affine)
        theirs = self.ants.apply_transforms(fixed, labels, self.transforms, interpolator="nearestNeighbor").numpy()
        shape, affine = pair.fixed.array.shape, pair.fixed.affine
        ours = warp_physical(pair.moving_labels, pair.moving.affine, shape, affine, ddf_to_ras(ddf, affine), "nearest")
        agree = float(np.mean(np.rint(theirs).astype(np.int64) == ours.astype(np.int64)))
        self._cleanup()
        return (
            f"ants-syn field check ({pair.name}): moving labels warped (nearest) through our converted field and "
            f"by ants.apply_transforms(interpolator='nearestNeighbor') agree on {100 * agree:.3f} % of voxels"
        )

    def _cleanup(self) -> None:
        for path in self.files:
            Path(path).unlink(missing_ok=True)
        self.transforms, self.files = [], set()


class SitkDemons(Method):
    def _image(self, array: np.ndarray, affine: np.ndarray) -> sitk.Image:
        return _sitk_image(array, affine)

    def run(self, pair: Pair) -> torch.Tensor:
        return _on_fixed_grid(self.field(*self.images(pair)), pair.fixed.affine, pair)

    def field(self, fixed: sitk.Image, moving: sitk.Image) -> np.ndarray:
        """Demons' ``(*S, 3)`` RAS mm displacement on the fixed grid."""
        iterations = 20 if self.settings.quick else 100
        moving = sitk.HistogramMatching(moving, fixed, 1024, 7, True)
        demons = sitk.DiffeomorphicDemonsRegistrationFilter()
        demons.SetNumberOfIterations(iterations)
        demons.SetStandardDeviations(1.5)
        demons.SetSmoothDisplacementField(True)
        demons.SetUseGradientType(demons.Symmetric)
        field = None
        for shrink in (1,) if self.settings.quick else (2, 1):
            f, m = (sitk.BinShrink(im, [shrink] * 3) if shrink > 1 else im for im in (fixed, moving))
            if field is None:
                field = sitk.Image(f.GetSize(), sitk.sitkVectorFloat64, 3)
                field.CopyInformation(f)
            else:  # carry the coarse field over (physical mm vectors: only resampled)
                field = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = demons.Execute(f, m, field)
        return _lps_vector_array_to_ras(sitk.GetArrayFromImage(field))


class ElastixBSpline(Method):
    def prepare(self) -> None:
        try:
            import itk

            itk.ParameterObject  # noqa: B018  (itk-elastix's lazy attribute: fails without the package)
        except Exception as error:
            raise NotAvailable(
                f"itk-elastix cannot be used ({type(error).__name__}: {error}); pip install -e .[bench]"
            ) from None
        self.itk = itk
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(self.settings.threads)

    def _image(self, array: np.ndarray, affine: np.ndarray):
        image = self.itk.image_from_array(np.ascontiguousarray(array.astype(np.float32).transpose(2, 1, 0)))
        origin, spacing, direction = affine_to_itk(affine)
        image.SetOrigin(origin)
        image.SetSpacing(spacing)
        image.SetDirection(self.itk.matrix_from_array(np.reshape(direction, (3, 3))))
        return image

    def run(self, pair: Pair) -> torch.Tensor:
        itk = self.itk
        fixed, moving = self.images(pair)
        parameters = itk.ParameterObject.New()
        if self.settings.quick:
            bspline = parameters.GetDefaultParameterMap("bspline", 2)
            bspline["MaximumNumberOfIterations"] = ["20"]
        else:
            bspline = parameters.GetDefaultParameterMap("bspline")
        bspline["WriteResultImage"] = ["false"]  # output only: the warped image is not used
        parameters.AddParameterMap(bspline)
        _, transform = itk.elastix_registration_method(
            fixed, moving, parameter_object=parameters, log_to_console=False
        )  # threads: the ITK global default (number_of_threads=... segfaults in itk-elastix 0.25.4)
        with tempfile.TemporaryDirectory() as out:  # transformix writes deformationField.nii there (default: cwd)
            field = itk.transformix_deformation_field(moving, transform, output_directory=out)
            displacement = _lps_vector_array_to_ras(itk.array_from_image(field))
        direction = itk.array_from_matrix(field.GetDirection()).reshape(-1)
        affine = itk_to_affine(tuple(field.GetOrigin()), tuple(field.GetSpacing()), direction)
        return _on_fixed_grid(displacement, affine, pair)


def build_method(name: str, settings: Settings) -> Method:
    """The method ``name``; ``ours [bf16]`` is ``ours`` at that precision."""
    if name.endswith("]"):
        name, precision = name[:-1].split(" [")
        settings = dataclasses.replace(settings, precision=precision)
    if name in ("affine-only", "sitk-affine-demons"):
        base = {"Method": Method, "SitkDemons": SitkDemons, "on_fixed_grid": _on_fixed_grid}
        return task_a.make_methods(base)[name](settings)
    if name in ("greedy", "convexadam"):
        base = {
            "Method": Method,
            "NotAvailable": NotAvailable,
            "on_fixed_grid": _on_fixed_grid,
            "ddf_to_ras": ddf_to_ras,
            "affine_displacement_ras": task_a.affine_displacement_ras,
        }
        return accuracy_peers.make_peer_methods(base)[name](settings)
    return {
        "identity": lambda: Identity(settings),
        "ours-fast": lambda: Ours(settings, 0, preset="fast", affine="affine"),
        "ours": lambda: Ours(settings, 0, preset="default", affine="affine"),
        "ours-grid": lambda: Ours(settings, 0, preset="network-grid", affine="affine"),
        "ours-grid+native": lambda: Ours(settings, 0, preset="network-grid+native", affine="affine"),
        "ours+refine": lambda: Ours(settings, settings.refine, affine="affine"),
        "ants-syn": lambda: AntsSyN(settings),
        "sitk-demons": lambda: SitkDemons(settings),
        "elastix-bspline": lambda: ElastixBSpline(settings),
    }[name]()


# --------------------------------------------------------------------------------------------- scoring
def evaluate(pair: Pair, ddf: torch.Tensor) -> dict[str, float]:
    """The shared metrics of one method's voxel DDF on one pair."""
    shape, affine = pair.fixed.array.shape, pair.fixed.affine
    displacement = ddf_to_ras(ddf, affine)
    warped = warp_physical(pair.moving_labels, pair.moving.affine, shape, affine, displacement, "label")
    dice = label_dice(torch.as_tensor(warped)[None, None], torch.as_tensor(pair.fixed_labels)[None, None], LABELS)
    scores = {
        "dice": float(np.nanmean(dice[0].numpy())),
        "folding": 100.0 * float(folding_fraction(ddf)[0]),
        "sdlogj": float(sdlogj(ddf)[0]),
    }
    if pair.ddf_true is not None:
        spacing = np.linalg.norm(affine[:3, :3], axis=0).tolist()
        mask = torch.as_tensor(pair.fixed_labels > 0)[None, None]
        scores["epe"] = float(endpoint_error(ddf, pair.ddf_true, spacing, mask)[0])
    return scores


def compare_precisions(pair: Pair, ddfs: dict[str, torch.Tensor], scores: dict[str, dict[str, float]]) -> dict:
    """Differences of each ``name [precision]`` result from the same method at the first precision, on one pair."""
    spacing = torch.as_tensor(np.linalg.norm(pair.fixed.affine[:3, :3], axis=0), dtype=torch.float32)
    diffs = {}
    for name, ddf in ddfs.items():
        base = next(other for other in ddfs if other.split(" [")[0] == name.split(" [")[0])
        if base == name:
            continue
        mm = ((ddf - ddfs[base]) * spacing.view(1, 3, 1, 1, 1)).norm(dim=1).max()
        delta = {k: abs(scores[name][k] - scores[base][k]) for k in ("dice", "epe") if k in scores[name]}
        extra = scores[name]["folding"] - scores[base]["folding"]
        diffs[f"{name} vs {base}"] = {**delta, "field_mm": float(mm), "new_folding": extra}
    return diffs


def run_task(task: str, pairs: list[Pair], methods: dict[str, Method | str]) -> None:
    """Register every pair with every method, then print the task's Markdown table."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    checks: dict[str, list[dict[str, float]]] = {}
    for pair in pairs:
        ddfs: dict[str, torch.Tensor] = {}
        for name, method in methods.items():
            if isinstance(method, str):
                continue
            start = time.perf_counter()
            try:
                with PeakMemory() as peak:
                    ddf = method.run(pair)
            except Exception as error:  # a library failing on this data: report it, go on with the others
                reason = " ".join(str(error).split())[:300]
                methods[name] = f"failed on {pair.name}: {type(error).__name__}: {reason}"
                print(f"# {name}: {methods[name]}")
                continue
            seconds = time.perf_counter() - start
            note = method.check(pair, ddf)
            if note:
                print(f"# {note}")
            scores = {**evaluate(pair, ddf), "seconds": seconds, "peak_gb": peak.gb}
            results[name].append(scores)
            if name.endswith("]"):
                ddfs[name] = ddf
            print(
                f"# {TASKS[task]} {pair.name}: {name} Dice {scores['dice']:.4f}, folding {scores['folding']:.3f} %, "
                f"{seconds:.1f} s, peak {peak.gb or 0:.2f} GB",
                file=sys.stderr,
                flush=True,
            )
        last = {name: rows[-1] for name, rows in results.items() if name in ddfs}
        for key, diff in compare_precisions(pair, ddfs, last).items():
            checks.setdefault(key, []).append(diff)
    synthetic = task == "S"
    print(f"\n## Task {task} ({TASKS[task]}), {len(pairs)} pair(s): " + "; ".join(p.name for p in pairs))
    extra = "EPE (mm)" if synthetic else "SDlogJ"
    print(f"| method | Dice mean ± std | {extra} | folding (%) | s/pair | peak GB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, method in methods.items():
        if isinstance(method, str):
            print(f"| {name} | {NA}: {method} | — | — | — | — |")
            continue
        rows = results[name]
        column = mean_std([r["epe" if synthetic else "sdlogj"] for r in rows], ".3f")
        folding = statistics.fmean(r["folding"] for r in rows)
        seconds = statistics.fmean(r["seconds"] for r in rows)
        peaks = [r["peak_gb"] for r in rows if r["peak_gb"] is not None]
        peak_gb = f"{max(peaks):.2f}" if peaks else "—"
        dice = mean_std([r["dice"] for r in rows], ".3f")
        print(f"| {name} | {dice} | {column} | {folding:.3f} | {seconds:.2f} | {peak_gb} |")
    for name, method in methods.items():
        if isinstance(method, Ours) and method.stage_summary:
            summary = method.stage_summary()
            if summary:
                print(f"\n{name}, mean per pair: {summary}")
    for key, diffs in checks.items():
        epe = f"max |ΔEPE| {max(d['epe'] for d in diffs):.4f} mm, " if synthetic else ""
        print(
            f"# precision check, {key} over {len(diffs)} pair(s): max |ΔDice| {max(d['dice'] for d in diffs):.4f}, "
            f"{epe}max voxel-wise |Δu| {max(d['field_mm'] for d in diffs):.4f} mm, "
            f"largest change in folding {max(d['new_folding'] for d in diffs):+.4f} % of voxels"
        )


# --------------------------------------------------------------------------------------------- command line
def _version(package: str) -> str:
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"{package} not installed"


def _machine_line(threads: int) -> str:
    name = platform.processor() or platform.machine()
    return (
        f"# {name}, {os.cpu_count()} CPUs, {threads} threads, torch {torch.__version__}, MONAI {monai.__version__}, "
        f"SimpleITK {sitk.Version.VersionString()}, {_version('antspyx')}, {_version('itk-elastix')}"
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"subset of: {' '.join(METHODS)}")
    parser.add_argument(
        "--tasks", nargs="+", default=list(TASKS), help="S (synthetic), I (inter-subject), A, C (cross-contrast)"
    )
    parser.add_argument("--pairs-per-subject", type=int, default=1, help="synthetic pairs per subject (tasks S, A)")
    parser.add_argument("--all-pairs", action="store_true", help="task I: all 12 ordered pairs, not registration_val")
    parser.add_argument("--refine", type=int, default=50, help="instance-optimisation steps of ours+refine")
    parser.add_argument("--weights", help="model weights (default: bundles/voxelmorph_brain_3d/models/model.pt)")
    parser.add_argument("--threads", type=int, default=2, help="threads for torch, SimpleITK, ITK and ANTs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic fields")
    parser.add_argument("--data", default=str(ROOT / "data" / "brain_3d"), help="Learn2Reg-style 3D dataset folder")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 1 pair per task, few iterations")
    parser.add_argument(
        "--precision", nargs="+", choices=PRECISIONS, default=["auto"], help="network precision(s) of ours (auto)"
    )
    parser.add_argument("--emulate", action="store_true", help="emulate bf16/fp16 by rounding float32 convolutions")
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {' '.join(unknown)}; choose from {' '.join(METHODS)}")
    if any(t not in TASKS for t in args.tasks):
        parser.error("--tasks takes S (synthetic), I (inter-subject), A (affine + warp) and/or C (cross-contrast)")
    for option, value, low in (("--pairs-per-subject", args.pairs_per_subject, 1), ("--refine", args.refine, 1)):
        if value < low:
            parser.error(f"{option} must be >= {low}")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.weights is not None and not Path(args.weights).is_file():
        parser.error(f"--weights {args.weights} is not a file")
    if not Path(args.data).is_dir():
        parser.error(f"--data {args.data} is not a folder")
    args.methods = list(dict.fromkeys(args.methods))
    args.precision = list(dict.fromkeys(args.precision))
    if len(args.precision) > 1:  # one row per precision for the network methods
        args.methods = [
            f"{m} [{p}]" if m.startswith("ours") else m
            for m in args.methods
            for p in (args.precision if m.startswith("ours") else [None])
        ]
    args.tasks = list(dict.fromkeys(args.tasks))
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    # ITK (and so ANTs, elastix) read this when their thread pools start: set it before they are imported
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    warnings.filterwarnings("ignore", message="monai.networks.blocks.Warp")
    settings = Settings(
        args.quick, 5 if args.quick else args.refine, args.weights, args.threads, args.precision[0], args.emulate
    )
    try:
        dataset = learn2reg_datalist(args.data)
    except Exception as error:  # DataError: a one-line reason
        print(f"bench_accuracy.py: error: --data {args.data}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(_machine_line(args.threads))
    given = sys.argv[1:] if argv is None else argv
    print("# command: python benchmarks/bench_accuracy.py " + " ".join(shlex.quote(a) for a in given))
    resolved = ", ".join(f"{p} = {str(resolve_precision(p, 'cpu')).removeprefix('torch.')}" for p in args.precision)
    emulated = " (bf16/fp16 emulated: float32 convolutions with rounded operands and results)" if args.emulate else ""
    print(f"# network precision on this CPU: {resolved}{emulated}")
    methods: dict[str, Method | str] = {}
    for name in args.methods:
        method = build_method(name, settings)
        try:
            method.prepare()
            methods[name] = method
        except NotAvailable as reason:
            methods[name] = str(reason)
            print(f"# {name}: {NA}: {reason}")
    if args.quick:
        print(
            f"# quick mode: 1 pair per task; ours+refine {settings.refine} steps, demons 20 iterations (full "
            "resolution only), ants-syn 10x5x0, elastix 2 resolutions x 20 iterations"
        )
    for task in args.tasks:
        if task in ("S", "A"):
            subjects = dataset["training"][:1] if args.quick else dataset["training"]
            make = synthetic_pairs if task == "S" else functools.partial(task_a.task_a_pairs, pair_type=Pair)
            pairs = make(subjects, 1 if args.quick else args.pairs_per_subject, args.seed)
        else:
            pairs = inter_subject_pairs(dataset, args.all_pairs and not args.quick)
            pairs = task_c.task_c_pairs(pairs, args.seed) if task == "C" else pairs
        run_task(task, pairs[:1] if args.quick else pairs, methods)


if __name__ == "__main__":
    main()
