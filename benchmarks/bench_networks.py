"""Speed and memory of VoxelMorph implementations at the SAME architecture, side by side in one process.

Compares our ``VoxelMorph`` with MONAI's ``VoxelMorph`` and the official ``voxelmorph`` package's ``VxmDense``
(PyTorch backend), all configured as the paper's vxm-2 network: encoder 16, 32, 32, 32; decoder 32, 32, 32, 32,
32, 16, 16; 7 scaling-and-squaring steps; the field integrated at half resolution (MONAI: 3D only). Extra rows show our
half-resolution UNet and channels-last variants.

``--precision fp32 bf16 ...`` (default ``fp32``) adds a row per model and precision: ours through its own
``precision`` argument (only the backbone autocast, :mod:`monai_vmorph.precision`), MONAI's and voxelmorph's inside
``torch.autocast`` (what their users would write); ``auto`` is resolved for the device and shown (``auto=fp32``).
Ratios are relative to MONAI's row at the first precision given.

The FLOP floor: the convolution FLOPs of one forward pass are counted from the layer shapes (forward hooks on
every convolution: ``2 * output elements * input channels / groups * kernel volume``; transposed convolutions
from their input), a training step counted as 3x the forward (input gradient + weight gradient). The best rate of
the same run, per precision, is the faster of the model's own heaviest convolution run alone and a 2048x2048 GEMM
(``# rates`` line). ``floor`` columns give measured time / (FLOPs / best rate): 1.0 is the processor's limit for
these convolutions. The ``executed`` columns count what each implementation actually runs (``aten.convolution``
calls, PyTorch's ``FlopCounterMode``): the same for MONAI and voxelmorph, fewer for ours, whose decoder convolves
each upsampled tensor at the low resolution (27/8 times fewer multiply-adds for that part, the same function).

By default the process keeps freed memory for reuse (``--allocator keep``: what the ``monai-vmorph`` program
and the bundles set, for every row alike); ``--allocator system`` leaves glibc's default, under which every new
large activation is page-faulted afresh. The memory subprocesses always use the default.

Each round runs every model once, in turn, so machine noise hits all of them alike; times are medians over
rounds. Peak memory of two training steps (model, gradients, Adam state and activations) is measured in a fresh
subprocess per model, above what the imports and inputs hold: on CUDA with ``torch.cuda.max_memory_allocated``, on
Linux as peak RSS after resetting it (``/proc/self/clear_refs``), elsewhere as ``ru_maxrss`` minus that of a
subprocess that only builds the inputs. Ratios are relative to MONAI's row (lower is better); the printed notes
list where MONAI's network cannot be configured exactly like the others.

    python benchmarks/bench_networks.py --size 64 64 64 --rounds 5
    python benchmarks/bench_networks.py --sizes all --rounds 5 [--device cuda] [--precision fp32 auto bf16]

The voxelmorph row needs ``pip install -e .[bench]`` (voxelmorph 0.2: the 0.3 releases dropped ``VxmDense``);
without it the row reads "not installed".
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from types import ModuleType

import monai
import torch
from monai.networks.nets import VoxelMorph as MonaiVoxelMorph
from monai.networks.nets import VoxelMorphUNet as MonaiVoxelMorphUNet
from peak_memory import proc_status_kib, reset_peak_rss  # a sibling module of the benchmark scripts
from torch import nn

from monai_vmorph.losses import gradient_loss, mse
from monai_vmorph.networks import VoxelMorph
from monai_vmorph.networks.blocks.upsample_conv import memory_format_of
from monai_vmorph.precision import PRECISIONS, needs_grad_scaler, precision_dtype, resolve_precision
from monai_vmorph.runtime import keep_freed_memory

#: The paper's vxm-2 architecture, shared by every row.
ENCODER = (16, 32, 32, 32)
DECODER = (32, 32, 32, 32, 32, 16, 16)
STEPS = 7
INT_DOWNSIZE = 2
#: Sizes of the issue: (spatial size, batch).
PRESETS = {
    "all": [((64, 64, 64), 1), ((192, 224), 8), ((96, 112, 96), 1), ((128, 160, 128), 1)],
}
DIVISOR = 2 ** len(ENCODER)  # MONAI's and voxelmorph's UNets do not pad their input
REF = "monai VoxelMorph (matched)"
VXM = "voxelmorph VxmDense"
NOT_INSTALLED = "not installed"
PEAK_TAG = "PEAK_BYTES"

NOTES = (
    "all rows: encoder 16,32,32,32; decoder 32,32,32,32,32,16,16; 7 scaling-and-squaring steps; "
    "the smoothness loss is on the full-resolution ddf",
    "ours and voxelmorph: int_downsize=2 (field integrated at half resolution, 2D and 3D)",
    "MONAI: VoxelMorphUNet(channels=(16,32,32,32,32,32,32,32), unet_out_channels=32, final_conv_channels=(16,16)) "
    "is the same stack of convolutions; VoxelMorph(half_res=True) integrates at half resolution in 3D, but its "
    "half_res interpolates trilinearly (3D only), so in 2D MONAI integrates at FULL resolution",
    "MONAI also differs in: default (not N(0, 1e-5)) init of the flow head, zero padding "
    "during integration (ours: border), no input padding (sizes must be multiples of 16)",
    "ours without 'channels_last': the default channels_last='auto' (channels-last input to a 3D backbone on a CPU "
    "with AVX-512, channels-first otherwise); 'channels_last': channels_last=True (weights stored channels-last too)",
)


def _load_voxelmorph() -> tuple[ModuleType | None, str]:
    """Import the official voxelmorph package (PyTorch backend), or say why it cannot be used."""
    os.environ["VXM_BACKEND"] = "pytorch"  # read at import; the default backend is TensorFlow
    os.environ["NEURITE_BACKEND"] = "pytorch"  # neurite 0.2 reads it too (0.3 is PyTorch-only)
    if not hasattr(inspect, "getargspec"):  # voxelmorph 0.2's modelio uses it; removed in Python 3.11
        inspect.getargspec = lambda func: tuple(inspect.getfullargspec(func))[:4]  # type: ignore[attr-defined]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import voxelmorph
    except Exception as exc:  # ImportError, or a broken install
        return None, f"{type(exc).__name__}: {exc}"
    if not hasattr(getattr(voxelmorph, "networks", None), "VxmDense"):
        version = getattr(voxelmorph, "__version__", "?")
        return None, f"voxelmorph {version} has no networks.VxmDense (pip install voxelmorph==0.2)"
    return voxelmorph, f"voxelmorph {getattr(voxelmorph, '__version__', '?')}"


class _VxmDense(nn.Module):
    """``voxelmorph.networks.VxmDense`` returning ``(warped, full-resolution ddf)`` like the other models."""

    def __init__(self, vxm: ModuleType, size: tuple[int, ...]) -> None:
        super().__init__()
        features = [list(ENCODER), list(DECODER)]
        self.net = vxm.networks.VxmDense(size, nb_unet_features=features, int_steps=STEPS, int_downsize=INT_DOWNSIZE)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(moving, fixed, registration=True)


def monai_matched(size: tuple[int, ...]) -> nn.Module:
    ndim = len(size)
    # MONAI's `channels` interleaves, from the top level down, the encoder conv and the decoder conv whose output
    # returns to that level; the last pair is the deepest encoder conv and the bottleneck conv (our decoder[0]).
    channels = tuple(c for pair in zip(ENCODER, reversed(DECODER[: len(ENCODER)]), strict=True) for c in pair)
    backbone = MonaiVoxelMorphUNet(
        spatial_dims=ndim,
        in_channels=2,
        unet_out_channels=DECODER[len(ENCODER)],
        channels=channels,
        final_conv_channels=DECODER[len(ENCODER) + 1 :],
    )
    return MonaiVoxelMorph(backbone=backbone, integration_steps=STEPS, half_res=ndim == 3, spatial_dims=ndim)


def ours_builder(half_res: bool, channels_last: bool | str) -> Callable[[tuple[int, ...]], nn.Module]:
    kwargs = {"encoder_channels": ENCODER, "decoder_channels": DECODER, "half_res": half_res}
    return lambda size: VoxelMorph(
        len(size),
        integration_steps=STEPS,
        int_downsize=INT_DOWNSIZE,
        backbone_kwargs=kwargs,
        channels_last=channels_last,
    )


def _builders(vxm: ModuleType | None) -> dict[str, Callable[[tuple[int, ...]], nn.Module] | None]:
    """Model name -> builder from the spatial size (``None``: not available). MONAI comes first: the reference."""
    return {
        REF: monai_matched,
        VXM: (lambda size: _VxmDense(vxm, size)) if vxm is not None else None,
        "ours (matched)": ours_builder(False, "auto"),
        "ours, channels_last": ours_builder(False, True),
        "ours, half_res UNet": ours_builder(True, "auto"),
        "ours, half_res UNet, channels_last": ours_builder(True, True),
    }


def _outputs(net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = net(moving, fixed)
    return (out.warped, out.ddf) if hasattr(out, "warped") else (out[0], out[1])


def set_precision(net: nn.Module, precision: str) -> nn.Module:
    """Ours takes ``precision`` itself; the others are wrapped in ``torch.autocast`` by :func:`_autocast`."""
    if isinstance(net, VoxelMorph):
        net.precision = precision
    return net


def _autocast(net: nn.Module, device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = resolve_precision(precision, device)
    if isinstance(net, VoxelMorph) or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_fn(net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor, precision: str) -> Callable[[], None]:
    """One Adam step on MSE + smoothness, the loss in float32; float16 on CUDA with a gradient scaler."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(moving.device.type) if needs_grad_scaler(precision, moving.device) else None

    def step() -> None:
        with _autocast(net, moving.device, precision):
            warped, ddf = _outputs(net, moving, fixed)
        loss = mse(warped.float(), fixed) + 0.01 * gradient_loss(ddf.float(), penalty="l2")
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def inference_fn(net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor, precision: str) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode(), _autocast(net, moving.device, precision):
            _outputs(net, moving, fixed)

    return run


# ------------------------------------------------------------------------------------------------ FLOP floor
def _conv_flops(module: nn.Module, inputs: tuple, output: torch.Tensor) -> float:
    """Multiply-adds x 2 of one convolution call, from its shapes."""
    kernel = math.prod(module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 2.0 * inputs[0].numel() * module.out_channels // module.groups * kernel
    return 2.0 * output.numel() * module.in_channels // module.groups * kernel


def count_conv_flops(net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[float, tuple | None]:
    """Convolution FLOPs of one forward pass, and (module, input shape) of the heaviest convolution call."""
    calls: list[tuple[float, nn.Module, torch.Size]] = []

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        calls.append((_conv_flops(module, inputs, output), module, inputs[0].shape))

    convs = [m for m in net.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            _outputs(net, moving, fixed)
    finally:
        for handle in handles:
            handle.remove()
    heaviest = max(calls, key=lambda c: c[0], default=None)
    return sum(c[0] for c in calls), (heaviest[1], heaviest[2]) if heaviest else None


def count_executed_conv_flops(net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> float:
    """Convolution FLOPs one forward pass executes, counted per ``aten.convolution`` call (PyTorch's
    ``FlopCounterMode``): the same as :func:`count_conv_flops` for a network that runs its layers as written, fewer
    for ours, whose decoder convolves the upsampled tensors at low resolution
    (:mod:`monai_vmorph.networks.blocks.upsample_conv`)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        _outputs(net, moving, fixed)
    counts = counter.get_flop_counts().get("Global", {})
    return float(sum(n for op, n in counts.items() if "convolution" in str(op)))


def _rate(fn: Callable[[], object], flops: float, device: torch.device, budget: float = 2.0) -> float:
    """Best GFLOP/s of ``fn`` (``flops`` per call) over repeated calls within about ``budget`` seconds."""
    best = math.inf
    fn()  # warm-up
    sync(device)
    spent = 0.0
    for _ in range(20):
        start = time.perf_counter()
        fn()
        sync(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget:
            break
    return flops / best / 1e9


def measure_rates(heaviest: tuple | None, device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    """GFLOP/s of the model's heaviest convolution alone and of a square GEMM, in ``dtype`` (autocast)."""
    rates = {}
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        n = 256  # small first: a GEMM without a native path for dtype (bfloat16 on AVX2) is ~1000x slower
        a = torch.rand(n, n, device=device)
        small = _rate(lambda: a @ a, 2.0 * n**3, device, budget=0.5)
        n = 2048 if small > 5 else n
        a = torch.rand(n, n, device=device)
        rates[f"gemm {n}"] = _rate(lambda: a @ a, 2.0 * n**3, device)
        if heaviest is not None:
            module, shape = heaviest
            x = torch.rand(shape, device=device).contiguous(memory_format=memory_format_of(module.weight))
            flops = _conv_flops(module, (x,), module(x))
            if flops / (rates[f"gemm {n}"] * 1e9) < 30:  # skip what would take minutes (no native path)
                rates[f"conv {module.in_channels}->{module.out_channels}"] = _rate(lambda: module(x), flops, device)
    return rates


def _inputs(size: tuple[int, ...], batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(batch, 1, *size, device=device), torch.rand(batch, 1, *size, device=device)


def _memory_child(name: str, size: tuple[int, ...], batch: int, device: torch.device, precision: str) -> None:
    """Run two training steps of one model (none for ``""``) and print its peak memory in bytes.

    Prints ``PEAK_BYTES n relative`` (memory above that of the inputs and imports) on CUDA and on Linux, where the
    peak RSS can be reset; elsewhere ``PEAK_BYTES n absolute`` (peak RSS), from which the parent subtracts a
    baseline child that only builds the inputs.
    """
    relative = device.type == "cuda" or os.path.exists("/proc/self/clear_refs")
    vxm = _load_voxelmorph()[0] if name == VXM or not relative else None  # baseline and models alike
    moving, fixed = _inputs(size, batch, device)
    base = 0
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    elif relative:
        rss = reset_peak_rss()
        relative, base = rss is not None, rss or 0
    if name:
        builder = _builders(vxm)[name]
        if builder is None:
            raise SystemExit(f"{name} is not available")
        step = train_step_fn(set_precision(builder(size).to(device).train(), precision), moving, fixed, precision)
        for _ in range(2):  # the second step holds Adam's state as well
            step()
        sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    elif relative:
        peak = proc_status_kib("VmHWM") * 1024 - base
    else:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB elsewhere
    print(f"{PEAK_TAG} {peak} {'relative' if relative else 'absolute'}")


def _peak_memory(name: str, size: tuple[int, ...], batch: int, device: str, precision: str) -> tuple[int, bool] | None:
    """(peak bytes, relative?) reported by a fresh subprocess running ``_memory_child``; ``None`` if it failed."""
    cmd = [sys.executable, os.path.abspath(__file__), "--size", *map(str, size), "--batch", str(batch)]
    cmd += ["--device", device, "--memory-child", name, "--precision", precision]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        if line.startswith(PEAK_TAG):
            _, peak, kind = line.split()
            return int(peak), kind == "relative"
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    print(f"# memory of {name or 'baseline'} failed: {tail}", file=sys.stderr)
    return None


def _peaks_mib(
    rows: list[tuple[str, str]], size: tuple[int, ...], batch: int, device: str
) -> dict[tuple[str, str], float]:
    """Peak training-step memory (MiB) of each (model, precision), one fresh subprocess each."""
    peaks: dict[tuple[str, str], float] = {}
    baseline: tuple[int, bool] | None = None
    for name, precision in rows:
        got = _peak_memory(name, size, batch, device, precision)
        if got is not None and not got[1]:  # absolute peak RSS: subtract a child that only builds the inputs
            baseline = baseline or _peak_memory("", size, batch, device, "fp32")
            got = None if baseline is None else (got[0] - baseline[0], True)
        if got is not None:
            peaks[(name, precision)] = got[0] / 2**20
    return peaks


def _machine_line(device: torch.device, vxm_status: str) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return (
        f"# {name}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"MONAI {monai.__version__}, {vxm_status}"
    )


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _ratio(value: float | None, ref: float | None) -> str:
    return "—" if value is None or ref is None or ref <= 0 else f"{value / ref:.2f}"


def _label(precision: str, device: torch.device) -> str:
    if precision != "auto":
        return precision
    dtype = resolve_precision(precision, device)
    return "auto=" + next(p for p in PRECISIONS[1:] if precision_dtype(p) == dtype)


def bench(
    size: tuple[int, ...],
    batch: int,
    rounds: int,
    device: torch.device,
    precisions: list[str],
    memory: bool,
    vxm: ModuleType | None,
) -> None:
    """Time every model at every precision at one size and print the Markdown table."""
    moving, fixed = _inputs(size, batch, device)
    Task = tuple[int, Callable[[], None], Callable[[], None], float, float]
    tasks: dict[tuple[str, str], Task | None] = {}
    heaviest: dict[str, tuple] = {}
    for name, builder in _builders(vxm).items():
        for precision in precisions:
            if builder is None:
                tasks[(name, precision)] = None
                continue
            net = set_precision(builder(size).to(device), precision)
            params = sum(p.numel() for p in net.parameters())
            flops, heavy = count_conv_flops(net.eval(), moving, fixed)
            executed = count_executed_conv_flops(net, moving, fixed)
            if heavy is not None and (name == REF or name not in heaviest):
                heaviest[name] = heavy
            train = train_step_fn(net.train(), moving, fixed, precision)
            tasks[(name, precision)] = (params, train, inference_fn(net, moving, fixed, precision), flops, executed)

    times: dict[tuple[str, str, str], list[float]] = {}
    for round_ in range(rounds + 1):
        for key, task in tasks.items():
            if task is None:
                continue
            for kind, fn in (("train", task[1]), ("infer", task[2])):
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                if round_ > 0:  # round 0 warms up
                    times.setdefault((*key, kind), []).append(time.perf_counter() - start)

    # the best convolution / GEMM rate of this run, per dtype, on the heaviest convolution of MONAI's and ours
    best: dict[torch.dtype, float] = {}
    lines = []
    for dtype in dict.fromkeys(resolve_precision(p, device) for p in precisions):
        rates: dict[str, float] = {}
        for name in (REF, "ours (matched)"):
            if name in heaviest:
                rates.update(measure_rates(heaviest[name], device, dtype))
        best[dtype] = max(rates.values())
        lines.append(f"{str(dtype).removeprefix('torch.')}: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))

    runnable = [key for key, task in tasks.items() if task is not None]
    peaks = _peaks_mib(runnable, size, batch, str(device)) if memory else {}

    def med(key: tuple[str, str], kind: str) -> float | None:
        return statistics.median(times[(*key, kind)]) if (*key, kind) in times else None

    def floor(key: tuple[str, str], kind: str, flops: float) -> str:
        measured, rate = med(key, kind), best[resolve_precision(key[1], device)]
        return _ratio(measured, flops * (3 if kind == "train" else 1) / (rate * 1e9))

    ref = (REF, precisions[0])
    shape = "x".join(map(str, size))
    labels = ", ".join(_label(p, device) for p in precisions)
    print(f"\n## {len(size)}D {shape}, batch {batch}, {device.type}, {labels}")
    print(f"# input {batch}x1x{shape}, median of {rounds} rounds")
    print("# rates (GFLOP/s, best of the run): " + "; ".join(lines))
    print(
        "| model | params | train step (s) | ratio | inference (s) | ratio | peak train memory (MiB) | ratio "
        "| conv GFLOP (forward) | train / floor | inference / floor | executed conv GFLOP | train / executed floor "
        "| inference / executed floor |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, task in tasks.items():
        name = key[0] if len(precisions) == 1 else f"{key[0]} [{_label(key[1], device)}]"
        if task is None:
            print(f"| {name} | {NOT_INSTALLED} |" + " — |" * 12)
            continue
        t, i, m = med(key, "train"), med(key, "infer"), peaks.get(key)
        print(
            f"| {name} | {task[0]:,} | {_fmt(t, '.3f')} | {_ratio(t, med(ref, 'train'))} | {_fmt(i, '.3f')} | "
            f"{_ratio(i, med(ref, 'infer'))} | {_fmt(m, '.1f')} | {_ratio(m, peaks.get(ref))} | "
            f"{task[3] / 1e9:.1f} | {floor(key, 'train', task[3])} | {floor(key, 'infer', task[3])} | "
            f"{task[4] / 1e9:.1f} | {floor(key, 'train', task[4])} | {floor(key, 'infer', task[4])} |"
        )


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[tuple[tuple[int, ...], int]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--size", type=int, nargs="+", help="spatial size, 2 or 3 ints (default 64 64 64)")
    where.add_argument(
        "--sizes",
        choices=sorted(PRESETS),
        help="preset: 'all' runs " + ", ".join(f"{'x'.join(map(str, s))} batch {b}" for s, b in PRESETS["all"]),
    )
    parser.add_argument("--batch", type=int, help="batch size with --size (default 1)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=PRECISIONS,
        default=["fp32"],
        help="one row per model and precision (default fp32); auto is resolved for the device",
    )
    parser.add_argument(
        "--memory", action=argparse.BooleanOptionalAction, default=True, help="measure peak memory (subprocesses)"
    )
    parser.add_argument(
        "--allocator",
        choices=["keep", "system"],
        default="keep",
        help="keep: glibc keeps freed memory for reuse, as the monai-vmorph program and the bundles set it "
        "(monai_vmorph.runtime.keep_freed_memory; every row alike); system: the C library's default",
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sizes is not None and args.batch is not None:
        parser.error("--batch goes with --size; each --sizes preset has its own batch")
    batch = 1 if args.batch is None else args.batch
    runs = PRESETS[args.sizes] if args.sizes else [(tuple(args.size or (64, 64, 64)), batch)]
    for size, batch in runs:
        if len(size) not in (2, 3) or any(n < DIVISOR or n % DIVISOR for n in size):
            parser.error(f"--size takes 2 or 3 ints, each a multiple of {DIVISOR} (MONAI and voxelmorph do not pad)")
        if batch < 1:
            parser.error("--batch must be >= 1")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda needs a GPU and a CUDA build of torch (this is torch {torch.__version__})")
    return args, runs


def main(argv: list[str] | None = None) -> None:
    args, runs = _parse(argv)
    warnings.filterwarnings("ignore", message="monai.networks.blocks.Warp")
    warnings.filterwarnings("ignore", message="torch.meshgrid")  # voxelmorph 0.2's SpatialTransformer
    device = torch.device(args.device)
    if args.memory_child is not None:
        _memory_child(args.memory_child, *runs[0], device, args.precision[0])
        return
    kept = args.allocator == "keep" and keep_freed_memory()
    vxm, vxm_status = _load_voxelmorph()
    print(_machine_line(device, vxm_status if vxm is not None else f"voxelmorph {NOT_INSTALLED}"))
    print(f"# allocator: {'glibc keeps freed memory (keep_freed_memory)' if kept else 'the C library default'}")
    if vxm is None:
        print(f"# voxelmorph row: {NOT_INSTALLED} ({vxm_status}); pip install -e .[bench]")
    for note in NOTES:
        print(f"# note: {note}")
    for size, batch in runs:
        bench(size, batch, args.rounds, device, list(dict.fromkeys(args.precision)), args.memory, vxm)


if __name__ == "__main__":
    main()
