"""Numerical precision of the network's backbone: one policy for the Python API, the bundles and the command line.

A registration network spends almost all of its time in the backbone's convolutions. Processors with native
half-precision paths (CPUs with AVX512-BF16 or AMX, CUDA GPUs with tensor cores) run those convolutions about
twice as fast in bfloat16/float16 as in float32, so the backbone may run under :func:`torch.autocast`. Everything
after it stays in float32 (float64 for a float64 model), because there reduced precision costs accuracy for no
measurable speed:

* **integration** (scaling and squaring) composes the field with itself ``2^steps`` times: bfloat16's 8-bit
  mantissa (relative error 4e-3) would be amplified at every squaring, and the Jacobian's folding test would see
  the noise;
* **warping and field resizing** are interpolations whose sampling positions are ``x + u(x)``: at 100 voxels a
  bfloat16 coordinate is only known to ~0.4 voxel;
* **the losses' sums** add millions of terms (local NCC's box sums, MSE's mean): half precision loses the small
  terms against the running total;
* **the Jacobian determinant** is a difference of products of derivatives near 1, where bfloat16 cancels to noise.

These are grid_sample / element-wise passes over a 3-channel field, a few percent of a step, so float32 costs
nothing there. :class:`~monai_vmorph.networks.VoxelMorph` therefore autocasts only its backbone
(:func:`backbone_autocast`), casts the backbone's field back to the input's dtype, and runs the rest with autocast
switched off (:func:`full_precision`), even inside a caller's own ``torch.autocast``.

Precisions (:data:`PRECISIONS`): ``"fp32"`` (no autocast), ``"bf16"``, ``"fp16"`` (autocast to that type on any
device, emulated and slow where the hardware has no native path) and ``"auto"``, which picks what the device runs
natively (:func:`resolve_precision`): bfloat16 on a CPU for which torch reports AVX512-BF16 or AMX tiles and oneDNN
is available, bfloat16 on CUDA GPUs with native bfloat16 (compute capability 8.0+), float16 on older tensor-core GPUs
(7.x, which need gradient scaling in training, :func:`needs_grad_scaler`), float32 everywhere else (CPUs with AVX2
or AVX-512 only, where a bfloat16 convolution falls back to a reference loop hundreds of times slower than
float32; Arm CPUs, for which torch does not report bfloat16 support; MPS).

:func:`emulate_reduced_precision` reproduces the rounding of a reduced-precision backbone at float32 speed, to check
the accuracy of ``bf16`` weights on a machine without native support (``benchmarks/bench_accuracy.py``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from monai_vmorph.errors import UserError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the command line builds its parser (``--precision`` choices) from
# PRECISIONS, and answers --help and argument errors without loading torch.

__all__ = [
    "PRECISIONS",
    "backbone_autocast",
    "check_precision",
    "emulate_reduced_precision",
    "full_precision",
    "native_bf16",
    "native_fp16",
    "needs_grad_scaler",
    "precision_dtype",
    "resolve_precision",
]

#: The precision names accepted everywhere (Python API, bundles' ``precision`` key, ``--precision``).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`, else raise a one-line :class:`UserError`."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}; use auto or fp32")
    return precision


def precision_dtype(precision: str) -> torch.dtype:
    """The dtype of an explicit precision: ``fp32`` float32, ``bf16`` bfloat16, ``fp16`` float16."""
    import torch

    check_precision(precision)
    if precision == "auto":
        raise UserError("precision 'auto' has no fixed dtype; resolve it for a device with resolve_precision")
    return getattr(torch, _DTYPE_NAMES[precision])


def _cpu_flag(name: str) -> bool:
    """A private ``torch.cpu._is_*_supported()`` query; ``False`` where this torch does not have it."""
    import torch

    query = getattr(torch.cpu, name, None)
    try:
        return bool(query()) if callable(query) else False
    except RuntimeError:
        return False


def _onednn() -> bool:
    import torch

    return torch.backends.mkldnn.is_available() and bool(torch.backends.mkldnn.enabled)


def _cuda_capability(device: torch.device) -> tuple[int, int] | None:
    import torch

    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


@functools.cache
def _native(device_type: str, index: int | None, dtype: torch.dtype) -> bool:
    import torch

    device = torch.device(device_type, index) if index is not None else torch.device(device_type)
    if device.type == "cpu":
        if not _onednn():
            return False
        if dtype == torch.bfloat16:
            return _cpu_flag("_is_avx512_bf16_supported") or _cpu_flag("_is_amx_tile_supported")
        return _cpu_flag("_is_amx_fp16_supported")
    capability = _cuda_capability(device)
    if capability is None:
        return False
    return capability >= ((8, 0) if dtype == torch.bfloat16 else (7, 0))


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` runs bfloat16 convolutions natively, as torch reports it (not from the CPU's name).

    CPU: oneDNN is available and enabled and torch reports AVX512-BF16 (``torch.cpu._is_avx512_bf16_supported``)
    or AMX tiles (``torch.cpu._is_amx_tile_supported``). CUDA: compute capability 8.0 or higher (Ampere on).
    """
    import torch

    device = torch.device(device)
    return _native(device.type, device.index, torch.bfloat16)


def native_fp16(device: torch.device | str) -> bool:
    """Whether ``device`` runs float16 convolutions natively: CUDA tensor cores (7.0+), or a CPU with AMX-FP16."""
    import torch

    device = torch.device(device)
    return _native(device.type, device.index, torch.float16)


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype the backbone runs in for ``precision`` on ``device``.

    ``"fp32"``, ``"bf16"`` and ``"fp16"`` are taken as given; ``"auto"`` is bfloat16 where :func:`native_bf16`,
    else float16 on a CUDA device where :func:`native_fp16`, else float32.

    Raises:
        UserError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    import torch

    check_precision(precision)
    if precision != "auto":
        return precision_dtype(precision)
    device = torch.device(device)
    if native_bf16(device):
        return torch.bfloat16
    if device.type == "cuda" and native_fp16(device):
        return torch.float16
    return torch.float32


def needs_grad_scaler(precision: str, device: torch.device | str) -> bool:
    """Whether training at ``precision`` on ``device`` needs gradient scaling: a float16 backbone on CUDA.

    float16's smallest normal number is 6e-5, so small gradients underflow without MONAI's/torch's
    ``GradScaler``; bfloat16 has float32's range and does not need it.
    """
    import torch

    device = torch.device(device)
    return device.type == "cuda" and resolve_precision(precision, device) == torch.float16


def backbone_autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context the backbone runs in: ``torch.autocast`` to the resolved dtype, or autocast off for float32.

    Only float32 tensors are cast by autocast, so a float64 model stays float64 whatever the precision.
    """
    import torch

    device = torch.device(device)
    dtype = resolve_precision(precision, device)
    if dtype == torch.float32:
        return full_precision(device)
    return torch.autocast(device_type=device.type, dtype=dtype)


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast switched off on ``device``'s type (also inside a caller's ``torch.autocast``)."""
    import torch

    device_type = torch.device(device).type
    if not torch.amp.autocast_mode.is_autocast_available(device_type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, enabled=False)


@functools.cache
def _rounding_mode_type() -> type:
    """The :class:`torch.overrides.TorchFunctionMode` of :func:`emulate_reduced_precision` (built on first use)."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._pytree import tree_map

    # the functions CPU and CUDA autocast run in reduced precision that the backbones here use
    lower_precision = frozenset(
        {
            torch.conv1d,
            torch.conv2d,
            torch.conv3d,
            torch.conv_transpose1d,
            torch.conv_transpose2d,
            torch.conv_transpose3d,
            torch.nn.functional.linear,
            torch.matmul,
            torch.mm,
            torch.bmm,
        }
    )

    class RoundingMode(TorchFunctionMode):
        """Rounds the float32 inputs and the result of autocast's lower-precision functions to ``dtype``."""

        def __init__(self, dtype: torch.dtype) -> None:
            super().__init__()
            self.dtype = dtype

        def _round(self, value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
                return value.detach().to(self.dtype).to(torch.float32) + (value - value.detach())
            return value

        def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            kwargs = kwargs or {}
            if func not in lower_precision:
                return func(*args, **kwargs)
            return self._round(func(*tree_map(self._round, args), **tree_map(self._round, kwargs)))

    return RoundingMode


@contextlib.contextmanager
def emulate_reduced_precision(dtype: torch.dtype | None = None) -> Iterator[None]:
    """Compute convolutions and matrix products in float32 with inputs, weights and results rounded to ``dtype``.

    This is what a native bfloat16/float16 autocast kernel computes (rounded operands, float32 accumulation, one
    rounding of the result), at float32 speed, so the accuracy of a reduced-precision backbone can be measured on
    a CPU without native support, where the real kernels are hundreds of times slower. Differences from the real
    kernels: accumulation order, and element-wise layers (activations, normalisation) run on the rounded values in
    float32 instead of rounding their own outputs. Gradients pass through the rounding unchanged.

    Use it with the model's ``precision="fp32"`` so that no real autocast is active::

        with torch.no_grad(), emulate_reduced_precision(torch.bfloat16):
            out = VoxelMorph(3, precision="fp32")(moving, fixed)

    The model's tail (integration, resizing, warping) has no convolution or matrix product, so only the backbone
    is affected; a loss computed inside the context is affected only where it uses one of them.

    Args:
        dtype: ``torch.bfloat16`` (``None``) or ``torch.float16``.
    """
    import torch

    dtype = torch.bfloat16 if dtype is None else dtype
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype!r}.")
    with _rounding_mode_type()(dtype):
        yield
