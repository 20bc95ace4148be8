"""A bundle's model with its weights, ready to register scans; the shipped bundles are found installed or in the
source tree."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from monai_vmorph.errors import UserError
from monai_vmorph.losses import RegistrationLoss
from monai_vmorph.networks import VoxelMorph

__all__ = ["BundleModel", "bundles_root", "default_bundle", "load_bundle_model"]


def bundles_root() -> Path:
    """The folder of the shipped bundles: ``monai_vmorph/bundles`` in a wheel install (the repository's ``bundles/``
    is installed there as package data, see ``setup.py``), else ``bundles/`` next to the package (source tree and
    editable install)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "bundles"
    return installed if installed.is_dir() else package.parent / "bundles"


def default_bundle(spatial_dims: int) -> Path:
    """The shipped brain bundle for 2D or 3D images."""
    return bundles_root() / f"voxelmorph_brain_{spatial_dims}d"


@dataclass
class BundleModel:
    """A bundle's network with its weights and the settings the command line needs.

    Attributes:
        model: the :class:`~monai_vmorph.networks.VoxelMorph`, in eval mode, on the requested device.
        loss: the bundle's training loss (similarity + λ·smoothness), used by ``--refine``.
        spatial_dims: 2 or 3.
        pixdim: the network grid's voxel size (mm per axis).
        spatial_size: the network grid's shape.
        weights: the loaded weight file.
    """

    model: VoxelMorph
    loss: RegistrationLoss
    spatial_dims: int
    pixdim: tuple[float, ...]
    spatial_size: tuple[int, ...]
    weights: Path


def _read_config(bundle: Path) -> ConfigParser:
    config = bundle / "configs" / "train.json"
    if not config.is_file():
        raise UserError(f"--bundle {bundle} is not a monai-vmorph bundle: {config} is missing")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["bundle_root"] = str(bundle)
    return parser


def _load_state(weights: Path) -> dict[str, torch.Tensor]:
    if not weights.is_file():
        raise UserError(f"weights {weights} do not exist; train the bundle first or pass --weights FILE")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, a zip without data.pkl (KeyError), an unsafe pickle, truncated...
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"weights {weights} are not a PyTorch state dict that is safe to load ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights {weights} do not hold a state dict of tensors; give the bundle's models/model.pt")
    return state


def load_bundle_model(
    spatial_dims: int,
    device: torch.device,
    bundle: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    precision: str | None = None,
) -> BundleModel:
    """Build the model of ``bundle`` (default: the shipped brain bundle of ``spatial_dims``) and load ``weights``.

    ``weights`` defaults to ``<bundle>/models/model.pt``; both the bundle's ``network_def`` format (keys
    ``model.…``) and a bare :class:`VoxelMorph` state dict are accepted. Loading uses ``weights_only=True``.
    ``precision`` (``--precision``) replaces the bundle's ``precision`` key (see :mod:`monai_vmorph.precision`).

    Raises:
        UserError: missing bundle/weights, weights that do not fit the model, a bundle for other dimensions.
    """
    root = Path(bundle) if bundle is not None else default_bundle(spatial_dims)
    if not root.is_dir():
        raise UserError(f"--bundle {root} is not a folder; give a bundle folder such as bundles/voxelmorph_brain_3d")
    parser = _read_config(root)
    if precision is not None:
        parser["precision"] = precision
    dims = int(parser.get_parsed_content("spatial_dims"))
    if dims != spatial_dims:
        raise UserError(f"bundle {root.name} registers {dims}D images but the inputs are {spatial_dims}D")
    pixdim = parser.get_parsed_content("pixdim")
    if pixdim is None:
        raise UserError(f"bundle {root} has no pixdim; set the network's voxel size in its configs/train.json")
    model = parser.get_parsed_content("model")
    weights = Path(weights) if weights is not None else root / "models" / "model.pt"
    state = _load_state(weights)
    if all(k.startswith("model.") for k in state):
        state = {k[len("model.") :]: v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        summary = str(error).splitlines()[0]
        raise UserError(f"weights {weights} do not fit bundle {root.name}'s model ({summary})") from None
    loss = RegistrationLoss(
        similarity=parser.get_parsed_content("similarity"),
        smoothness_weight=float(parser.get_parsed_content("smoothness_weight")),
        loss_mult=parser.get_parsed_content("int_downsize"),
    )
    size = tuple(int(s) for s in parser.get_parsed_content("spatial_size"))
    pix = (float(pixdim),) * dims if isinstance(pixdim, (int, float)) else tuple(float(p) for p in pixdim)
    return BundleModel(model.to(device).eval(), loss, dims, pix, size, weights)
