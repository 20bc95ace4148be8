"""VoxelMorph: a backbone predicts a (velocity) field from a (moving, fixed) pair, which is integrated and used
to warp the moving image. Fields follow the convention of :mod:`monai_vmorph.networks.blocks.warp`.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from monai_vmorph.networks.blocks.integrate import integrate_velocity
from monai_vmorph.networks.blocks.resize import resize_field
from monai_vmorph.networks.blocks.warp import _MODES, _check_mode, _check_padding_mode, _warp
from monai_vmorph.networks.nets.double_conv_unet import DoubleConvUNet
from monai_vmorph.networks.nets.voxelmorph_unet import CHANNELS_LAST, VoxelMorphUNet
from monai_vmorph.precision import backbone_autocast, check_precision, full_precision
from monai_vmorph.validation import (
    check_finite,
    check_floating,
    check_same_shape,
    check_spatial_tensor,
)

__all__ = ["BACKBONES", "RegistrationResult", "VoxelMorph"]

#: Backbones selectable by name: the paper's UNet and the seed blog post's BatchNorm UNet.
BACKBONES: dict[str, type[nn.Module]] = {"voxelmorph": VoxelMorphUNet, "doubleconv": DoubleConvUNet}


class RegistrationResult(NamedTuple):
    """What :class:`VoxelMorph` returns, whatever its flags.

    Attributes:
        warped: ``(B, C, *S)`` the moving image warped onto the fixed image.
        ddf: ``(B, ndim, *S)`` displacement (voxel units) with ``warped(x) = moving(x + ddf(x))``.
        velocity: ``(B, ndim, *S_int)`` the backbone's field before integration, on the grid padded to the
            backbone's divisor and downsampled by ``int_downsize`` (voxel units of that grid). The smoothness
            loss is applied to it (voxelmorph's ``preint_flow``). Equals the field integrated into ``ddf``.
        warped_fixed: ``(B, C, *S)`` the fixed image warped onto the moving image (bidirectional), else ``None``.
        inverse_ddf: ``(B, ndim, *S)`` displacement of the inverse transform (bidirectional), else ``None``.
    """

    warped: torch.Tensor
    ddf: torch.Tensor
    velocity: torch.Tensor
    # Optional, not ``X | None``: TorchScript reads a NamedTuple's annotations only in this spelling
    warped_fixed: Optional[torch.Tensor] = None  # noqa: UP045
    inverse_ddf: Optional[torch.Tensor] = None  # noqa: UP045


def _register_result_for_export() -> None:
    """Give the result type a stable name in ``torch.export``'s saved programs (``torch.export.save`` refuses a
    namedtuple output without one; PyTorch offers no public call for namedtuples, so a missing private one only
    loses saving, not exporting)."""
    try:
        from torch.utils._pytree import _register_namedtuple
    except ImportError:
        return
    try:
        _register_namedtuple(RegistrationResult, serialized_type_name="monai_vmorph.networks.RegistrationResult")
    except ValueError:  # already registered (a module reloaded)
        pass


_register_result_for_export()


@functools.cache
def _cpu_avx512() -> bool:
    """Whether torch's CPU kernels run with AVX-512 here (``torch.backends.cpu.get_cpu_capability()``)."""
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")


class VoxelMorph(nn.Module):
    """Learned deformable registration of a moving image to a fixed image (2D or 3D).

    ``forward(moving, fixed)`` concatenates the pair (moving first, as in voxelmorph and MONAI), pads it so the
    backbone's downsampling divides the size, predicts a field, optionally resamples it to
    ``1 / int_downsize`` resolution and integrates it by scaling and squaring (a diffeomorphism), resamples it
    back, crops the padding and warps the moving image. Any input size works (e.g. 97×115×93).

    Args:
        spatial_dims: 2 or 3.
        backbone: ``None`` or ``"voxelmorph"`` for :class:`VoxelMorphUNet` (the paper's architecture),
            ``"doubleconv"`` for :class:`DoubleConvUNet` (the seed post's BatchNorm UNet), or any module
            mapping ``(B, 2 * in_channels, *S)`` to ``(B, spatial_dims, *S / output_stride)``, where the
            backbone's optional ``output_stride`` attribute (default 1) says at which resolution it predicts
            (``backbone_kwargs={"half_res": True}`` makes the VoxelMorph UNet predict at half resolution).
        integration_steps: scaling-and-squaring steps; ``0`` gives a plain (non-diffeomorphic) field.
        int_downsize: the field is integrated at ``1 / int_downsize`` of the (padded) input resolution;
            ``1`` integrates at full resolution.
        bidirectional: also return the inverse field and the fixed image warped onto the moving one.
        in_channels: channels of each of the moving and fixed images.
        mode: interpolation used to warp the images (``"bilinear"`` or ``"nearest"``).
        padding_mode: value outside the moving image when warping (``"zeros"``, ``"border"``, ``"reflection"``).
        integration_padding_mode: extrapolation of the field during integration, see
            :func:`~monai_vmorph.networks.blocks.integrate.integrate_velocity`.
        pad_divisor: inputs are padded to a multiple of this; defaults to the backbone's ``divisor`` attribute
            times ``int_downsize`` (or ``int_downsize`` for a backbone without one).
        backbone_kwargs: keyword arguments for a backbone given by name (e.g. ``{"features": (32, 64)}``).
        check_inputs: raise a ``ValueError`` on NaN/inf inputs (one reduction over each image; skipped while
            ``torch.export`` / ``torch.compile`` trace the model, whose graph cannot hold a data-dependent error).
        channels_last: run the backbone in channels-last memory format (``channels_last_3d`` in 3D): ``True``
            (the weights are stored channels-last too), ``False``, or ``"auto"`` (default), which feeds the 3D
            backbone channels-last input on a CPU for which torch reports AVX-512 (there the bundle's
            half-resolution network took 0.78x the time of channels-first in inference and 0.85-0.93x per training
            step, ``BENCHMARKS.md``) and channels-first elsewhere (2D, CUDA, AVX2: not measured faster). Results
            are the same up to float rounding.
        precision: the backbone's precision, one of :data:`monai_vmorph.precision.PRECISIONS`: ``"auto"``
            (bfloat16 autocast on CPUs and GPUs with native bfloat16, float16 on older tensor-core GPUs, float32
            elsewhere), ``"fp32"``, ``"bf16"`` or ``"fp16"``; see :mod:`monai_vmorph.precision`. Only the backbone
            is autocast: its field is cast back to the input's dtype and integration, resizing and warping run in
            full precision (also inside a caller's ``torch.autocast``), so every result has the input's dtype.
            A plain attribute, it can be changed after construction (``net.precision = "fp32"``).

    Example::

        net = VoxelMorph(spatial_dims=3)
        out = net(moving=torch.rand(1, 1, 97, 115, 93), fixed=torch.rand(1, 1, 97, 115, 93))
        out.warped.shape, out.ddf.shape  # (1, 1, 97, 115, 93), (1, 3, 97, 115, 93)
    """

    # eager-only attributes, not compiled by torch.jit.script
    __jit_unused_properties__: ClassVar[list[str]] = ["precision", "diffeomorphic", "_channels_last_format"]

    def __init__(
        self,
        spatial_dims: int = 3,
        backbone: str | nn.Module | None = None,
        integration_steps: int = 7,
        int_downsize: int = 2,
        bidirectional: bool = False,
        in_channels: int = 1,
        mode: str = "bilinear",
        padding_mode: str = "zeros",
        integration_padding_mode: str = "border",
        pad_divisor: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        check_inputs: bool = True,
        channels_last: bool | str = "auto",
        precision: str = "auto",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        for name, value, low in (
            ("integration_steps", integration_steps, 0),
            ("int_downsize", int_downsize, 1),
            ("in_channels", in_channels, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")
        _check_mode(mode, spatial_dims)
        _check_padding_mode(padding_mode)
        _check_padding_mode(integration_padding_mode)
        self.spatial_dims = spatial_dims
        self.integration_steps = integration_steps
        self.int_downsize = int_downsize
        self.bidirectional = bool(bidirectional)
        self.in_channels = in_channels
        self.mode = _MODES[mode]
        self.padding_mode = padding_mode
        self.integration_padding_mode = integration_padding_mode
        self.check_inputs = check_inputs
        self.backbone = self._build_backbone(backbone, backbone_kwargs or {})
        #: the backbone's ``output_stride`` (1 for a backbone without one): it predicts the field at ``S / stride``
        self.output_stride = int(getattr(self.backbone, "output_stride", 1))
        if pad_divisor is None:
            pad_divisor = math.lcm(int(getattr(self.backbone, "divisor", 1)), int_downsize)
        if isinstance(pad_divisor, bool) or not isinstance(pad_divisor, int) or pad_divisor < 1:
            raise ValueError(f"pad_divisor must be an int >= 1, got {pad_divisor!r}.")
        self.pad_divisor = pad_divisor
        if not isinstance(channels_last, bool) and channels_last != "auto":
            raise ValueError(f"channels_last must be True, False or 'auto', got {channels_last!r}.")
        self.channels_last = channels_last
        if channels_last is True:
            self.backbone.to(memory_format=self._channels_last_format)
        self.precision = precision

    @property
    def precision(self) -> str:
        """The backbone's precision (``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``), resolved per device at call."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = check_precision(value)

    @property
    def _channels_last_format(self) -> torch.memory_format:
        return CHANNELS_LAST[self.spatial_dims]

    def _memory_format(self, device: torch.device) -> torch.memory_format:
        """The backbone's input memory format on ``device`` (see ``channels_last``)."""
        if self.channels_last == "auto":
            use = self.spatial_dims == 3 and device.type == "cpu" and _cpu_avx512()
        else:
            use = self.channels_last
        return self._channels_last_format if use else torch.contiguous_format

    def _build_backbone(self, backbone: str | nn.Module | None, kwargs: dict[str, Any]) -> nn.Module:
        if isinstance(backbone, nn.Module):
            if kwargs:
                raise ValueError("backbone_kwargs is only used with a backbone given by name, got a module.")
            return backbone
        name = "voxelmorph" if backbone is None else backbone
        if name not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)} or an nn.Module, got {backbone!r}.")
        return BACKBONES[name](spatial_dims=self.spatial_dims, in_channels=2 * self.in_channels, **kwargs)

    @property
    def diffeomorphic(self) -> bool:
        """Whether the field is integrated (``integration_steps > 0``)."""
        return self.integration_steps > 0

    @torch.jit.unused
    def _check_pair(self, moving: torch.Tensor, fixed: torch.Tensor) -> None:
        for name, image in (("moving", moving), ("fixed", fixed)):
            check_spatial_tensor(image, name, self.spatial_dims)
            check_floating(image, name)
            if image.shape[1] != self.in_channels:
                raise ValueError(
                    f"{name} must have {self.in_channels} channel(s) (in_channels), got shape {tuple(image.shape)}."
                )
        check_same_shape(moving, fixed, "moving", "fixed")
        if self.check_inputs and not torch.compiler.is_compiling():  # data-dependent: not in an exported graph
            check_finite(moving, "moving")
            check_finite(fixed, "fixed")

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult:
        """Register ``moving`` to ``fixed``.

        Args:
            moving: ``(B, in_channels, *S)`` floating-point image.
            fixed: ``(B, in_channels, *S)`` floating-point image on the same grid.

        Returns:
            A :class:`RegistrationResult`; ``warped_fixed`` and ``inverse_ddf`` are ``None`` unless bidirectional.

        Under TorchScript (``torch.jit.script``, MONAI's ``ckpt_export``) the same computation runs without the
        eager-only parts: the input checks, :attr:`precision`'s autocast (the backbone runs in the input's dtype),
        the channels-last input, the identity-grid cache, the threaded 3D sampler and the decoder's low-resolution
        convolution rewrite (:func:`~monai_vmorph.networks.nets.voxelmorph_unet.up_concat_conv_act`); the results
        equal eager float32 ones up to float rounding.
        """
        if not torch.jit.is_scripting():
            self._check_pair(moving, fixed)
        shape = list(moving.shape[2:])
        padded_shape = self.padded_shape(shape)
        pad: list[int] = []  # F.pad's order: last axis first
        for axis, n in enumerate(shape):
            pad = [0, padded_shape[axis] - n] + pad  # noqa: RUF005 (TorchScript has no [*a])
        x = torch.cat([moving, fixed], dim=1)
        if max(pad) > 0:
            x = F.pad(x, pad)
        if torch.jit.is_scripting():
            field = self.backbone(x)
        else:
            field = self._eager_backbone(x)
        expected = self._field_shape(x.shape[0], padded_shape, self.output_stride)
        if list(field.shape) != expected:
            raise ValueError(f"the backbone must return a field of shape {expected}, got {list(field.shape)}.")
        int_shape = [n // self.int_downsize for n in padded_shape]
        if torch.jit.is_scripting():
            return self._tail(moving, fixed, resize_field(field.to(moving.dtype), int_shape))
        return self._eager_tail(moving, fixed, field, int_shape)

    @torch.jit.unused
    def _eager_backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone under :attr:`precision`'s autocast, fed in the memory format chosen for ``x``'s device."""
        with backbone_autocast(self._precision, x.device):
            return self.backbone(x.contiguous(memory_format=self._memory_format(x.device)))

    @torch.jit.unused
    def _eager_tail(
        self, moving: torch.Tensor, fixed: torch.Tensor, field: torch.Tensor, int_shape: list[int]
    ) -> RegistrationResult:
        with full_precision(field.device):
            velocity = resize_field(field.to(moving.dtype), int_shape)
        return self.from_velocity(moving, fixed, velocity)

    def _field_shape(self, batch: int, padded_shape: list[int], stride: int) -> list[int]:
        """``[batch, ndim, *(padded_shape / stride)]``: the shape of a field on the padded grid at ``1 / stride``."""
        shape = [batch, self.spatial_dims]
        for n in padded_shape:
            shape.append(n // stride)
        return shape

    def padded_shape(self, shape: list[int]) -> list[int]:
        """The grid the backbone runs on for an input of spatial ``shape``: padded up to ``pad_divisor``."""
        return [-(-int(n) // self.pad_divisor) * self.pad_divisor for n in shape]

    @torch.jit.unused
    def from_velocity(self, moving: torch.Tensor, fixed: torch.Tensor, velocity: torch.Tensor) -> RegistrationResult:
        """The result the model gives for the field ``velocity``, without running the backbone.

        This is the differentiable tail of :meth:`forward` (integrate, resample, crop, warp), always in the
        precision of its inputs (autocast off, whatever :attr:`precision` says); instance
        optimisation (:func:`monai_vmorph.engines.refine_registration`) optimises ``velocity`` through it.

        Args:
            moving: ``(B, in_channels, *S)`` image.
            fixed: ``(B, in_channels, *S)`` image (warped only when bidirectional).
            velocity: ``(B, ndim, *S_int)`` field on the padded grid downsampled by ``int_downsize``, as in
                :attr:`RegistrationResult.velocity`.
        """
        with full_precision(velocity.device):
            return self._tail(moving, fixed, velocity)

    def _tail(self, moving: torch.Tensor, fixed: torch.Tensor, velocity: torch.Tensor) -> RegistrationResult:
        """:meth:`from_velocity` in the current precision (TorchScript has no autocast to switch off)."""
        shape = list(moving.shape[2:])
        padded_shape = self.padded_shape(shape)
        expected = self._field_shape(moving.shape[0], padded_shape, self.int_downsize)
        if list(velocity.shape) != expected:
            raise ValueError(f"velocity must have shape {expected} for this input, got {list(velocity.shape)}.")
        ddf = self._to_ddf(velocity, padded_shape, shape)
        warped = _warp(moving, ddf, self.mode, self.padding_mode)
        if not self.bidirectional:
            return RegistrationResult(warped=warped, ddf=ddf, velocity=velocity)
        inverse_ddf = self._to_ddf(-velocity, padded_shape, shape)
        warped_fixed = _warp(fixed, inverse_ddf, self.mode, self.padding_mode)
        return RegistrationResult(warped, ddf, velocity, warped_fixed, inverse_ddf)

    def _to_ddf(self, velocity: torch.Tensor, padded_shape: list[int], shape: list[int]) -> torch.Tensor:
        """Integrate, resample to the padded input grid and crop to the input grid."""
        ddf = integrate_velocity(velocity, self.integration_steps, self.integration_padding_mode)
        ddf = resize_field(ddf, padded_shape)
        for axis, n in enumerate(shape):
            if padded_shape[axis] != n:
                ddf = ddf.narrow(2 + axis, 0, n)
        return ddf

    def extra_repr(self) -> str:
        return (
            f"spatial_dims={self.spatial_dims}, integration_steps={self.integration_steps}, "
            f"int_downsize={self.int_downsize}, bidirectional={self.bidirectional}, pad_divisor={self.pad_divisor}, "
            f"channels_last={self.channels_last}, precision={self._precision!r}"
        )
