"""What produced a result: the software, the machine settings, the precision of each stage and the weights' digest.

Every ``metrics.json`` (``register``), ``summary.json`` (``evaluate``) and ``metrics.json`` (``learn2reg``) carries
:func:`provenance` under the key ``"provenance"``, so that a number can be traced back to the code and weights that
computed it and rerun the same way (the same reason ANTs and Greedy print their version and command line).
"""

from __future__ import annotations

import functools
import hashlib
import platform
from importlib import metadata
from pathlib import Path

import torch

from monai_vmorph.precision import resolve_precision

__all__ = ["provenance", "sha256_of"]


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: str | Path) -> str:
    """The SHA-256 hex digest of a file (cached per path, size and modification time: a batch hashes it once)."""
    stat = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return None


def provenance(model: torch.nn.Module, weights: str | Path, device: torch.device | str) -> dict:
    """The record of what computed a registration with ``model`` (loaded from ``weights``) on ``device``.

    Args:
        model: the :class:`~monai_vmorph.networks.VoxelMorph` used (its ``precision`` and parameter dtype).
        weights: the weight file loaded into it (a model built in memory, e.g. by a benchmark that trains it, names
            no file: then ``weights_sha256`` is ``None``).
        device: the device every stage ran on.

    Returns:
        ``{"package", "torch", "monai", "numpy", "python", "device", "threads", "precision", "weights",
        "weights_sha256"}``: versions as installed, ``torch.get_num_threads()`` and, per stage, the dtype its
        arithmetic ran in. The affine stage optimises float64 parameters on float32 images; the network's backbone
        runs in what its ``precision`` resolves to on ``device`` (:func:`monai_vmorph.precision.resolve_precision`),
        the rest of the network and the refinement in the parameters' dtype (see :mod:`monai_vmorph.precision`);
        the native-grid stage samples at float64 coordinates and writes float32 fields.
    """
    from monai_vmorph import __version__

    device = torch.device(device)
    full = str(next(model.parameters()).dtype).removeprefix("torch.")
    backbone = str(resolve_precision(getattr(model, "precision", "fp32"), device)).removeprefix("torch.")
    return {
        "package": _version("monai-vmorph") or __version__,
        "torch": torch.__version__,
        "monai": _version("monai"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "precision": {
            "affine": "float64 parameters, float32 images",
            "network_backbone": backbone,
            "network": full,
            "refine": full,
            "native": "float64 coordinates, float32 fields",
        },
        "weights": str(weights),
        "weights_sha256": sha256_of(weights) if Path(weights).is_file() else None,
    }
