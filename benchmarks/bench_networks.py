"""Speed and memory of VoxelMorph implementations at the SAME architecture, side by side in one process.

Compares our ``VoxelMorph`` with MONAI's ``VoxelMorph`` and the official ``voxelmorph`` package's ``VxmDense``
(PyTorch backend), all configured as the paper's vxm-2 network: encoder 16, 32, 32, 32; decoder 32, 32, 32, 32,
32, 16, 16; 7 scaling-and-squaring steps; the field integrated at half resolution (MONAI: 3D only). Extra rows show our
half-resolution UNet and channels-last variants.

Each round runs every model once, in turn, so machine noise hits all of them alike; times are medians over
rounds. Peak memory of two training steps (model, gradients, Adam state and activations) is measured in a fresh
subprocess per model, above what the imports and inputs hold: on CUDA with ``torch.cuda.max_memory_allocated``, on
Linux as peak RSS after resetting it (``/proc/self/clear_refs``), elsewhere as ``ru_maxrss`` minus that of a
subprocess that only builds the inputs. Ratios are relative to MONAI's row (lower is better); the printed notes
list where MONAI's network cannot be configured exactly like the others.

    python benchmarks/bench_networks.py --size 64 64 64 --rounds 5
    python benchmarks/bench_networks.py --sizes all --rounds 5 [--device cuda [--amp]]

The voxelmorph row needs ``pip install -e .[bench]`` (voxelmorph 0.2: the 0.3 releases dropped ``VxmDense``);
without it the row reads "not installed".
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
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
from torch import nn

from monai_vmorph.losses import gradient_loss, mse
from monai_vmorph.networks import VoxelMorph

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


def _monai(size: tuple[int, ...]) -> nn.Module:
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


def _ours(half_res: bool, channels_last: bool) -> Callable[[tuple[int, ...]], nn.Module]:
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
        REF: _monai,
        VXM: (lambda size: _VxmDense(vxm, size)) if vxm is not None else None,
        "ours (matched)": _ours(False, False),
        "ours, channels_last": _ours(False, True),
        "ours, half_res UNet": _ours(True, False),
        "ours, half_res UNet, channels_last": _ours(True, True),
    }


def _outputs(net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = net(moving, fixed)
    return (out.warped, out.ddf) if hasattr(out, "warped") else (out[0], out[1])


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor, amp: bool) -> Callable[[], None]:
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step() -> None:
        with _autocast(moving.device, amp):
            warped, ddf = _outputs(net, moving, fixed)
        loss = mse(warped.float(), fixed) + 0.01 * gradient_loss(ddf.float(), penalty="l2")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _inference(net: nn.Module, moving: torch.Tensor, fixed: torch.Tensor, amp: bool) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode(), _autocast(moving.device, amp):
            _outputs(net, moving, fixed)

    return run


def _inputs(size: tuple[int, ...], batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(batch, 1, *size, device=device), torch.rand(batch, 1, *size, device=device)


def _reset_peak_rss() -> int | None:
    """Reset this process's peak RSS (Linux >= 4.0) and return the current RSS in bytes; ``None`` if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status_kib("VmRSS") * 1024
    except (OSError, ValueError):
        return None


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/self/status")


def _memory_child(name: str, size: tuple[int, ...], batch: int, device: torch.device, amp: bool) -> None:
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
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    elif relative:
        rss = _reset_peak_rss()
        relative, base = rss is not None, rss or 0
    if name:
        builder = _builders(vxm)[name]
        if builder is None:
            raise SystemExit(f"{name} is not available")
        step = _train_step(builder(size).to(device).train(), moving, fixed, amp)
        for _ in range(2):  # the second step holds Adam's state as well
            step()
        _sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    elif relative:
        peak = _proc_status_kib("VmHWM") * 1024 - base
    else:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB elsewhere
    print(f"{PEAK_TAG} {peak} {'relative' if relative else 'absolute'}")


def _peak_memory(name: str, size: tuple[int, ...], batch: int, device: str, amp: bool) -> tuple[int, bool] | None:
    """(peak bytes, relative?) reported by a fresh subprocess running ``_memory_child``; ``None`` if it failed."""
    cmd = [sys.executable, os.path.abspath(__file__), "--size", *map(str, size), "--batch", str(batch)]
    cmd += ["--device", device, "--memory-child", name, *(["--amp"] if amp else [])]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in result.stdout.splitlines():
        if line.startswith(PEAK_TAG):
            _, peak, kind = line.split()
            return int(peak), kind == "relative"
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    print(f"# memory of {name or 'baseline'} failed: {tail}", file=sys.stderr)
    return None


def _peaks_mib(names: list[str], size: tuple[int, ...], batch: int, device: str, amp: bool) -> dict[str, float]:
    """Peak training-step memory (MiB) of each model, one fresh subprocess each."""
    peaks: dict[str, float] = {}
    baseline: tuple[int, bool] | None = None
    for name in names:
        got = _peak_memory(name, size, batch, device, amp)
        if got is not None and not got[1]:  # absolute peak RSS: subtract a child that only builds the inputs
            baseline = baseline or _peak_memory("", size, batch, device, amp)
            got = None if baseline is None else (got[0] - baseline[0], True)
        if got is not None:
            peaks[name] = got[0] / 2**20
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


def bench(
    size: tuple[int, ...],
    batch: int,
    rounds: int,
    device: torch.device,
    amp: bool,
    memory: bool,
    vxm: ModuleType | None,
) -> None:
    """Time every model at one size and print the Markdown table."""
    moving, fixed = _inputs(size, batch, device)
    tasks: dict[str, tuple[int, Callable[[], None], Callable[[], None]] | None] = {}
    for name, builder in _builders(vxm).items():
        if builder is None:
            tasks[name] = None
            continue
        net = builder(size).to(device)
        params = sum(p.numel() for p in net.parameters())
        tasks[name] = (params, _train_step(net.train(), moving, fixed, amp), _inference(net, moving, fixed, amp))

    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(rounds + 1):
        for name, task in tasks.items():
            if task is None:
                continue
            for kind, fn in (("train", task[1]), ("infer", task[2])):
                _sync(device)
                start = time.perf_counter()
                fn()
                _sync(device)
                if round_ > 0:  # round 0 warms up
                    times.setdefault((name, kind), []).append(time.perf_counter() - start)

    runnable = [name for name, task in tasks.items() if task is not None]
    peaks = _peaks_mib(runnable, size, batch, str(device), amp) if memory else {}

    def med(name: str, kind: str) -> float | None:
        return statistics.median(times[(name, kind)]) if (name, kind) in times else None

    shape = "x".join(map(str, size))
    print(f"\n## {len(size)}D {shape}, batch {batch}, {device.type}{' AMP bf16' if amp else ''}")
    print(f"# input {batch}x1x{shape}, median of {rounds} rounds")
    print("| model | params | train step (s) | ratio | inference (s) | ratio | peak train memory (MiB) | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, task in tasks.items():
        if task is None:
            print(f"| {name} | {NOT_INSTALLED} | — | — | — | — | — | — |")
            continue
        t, i, m = med(name, "train"), med(name, "infer"), peaks.get(name)
        print(
            f"| {name} | {task[0]:,} | {_fmt(t, '.3f')} | {_ratio(t, med(REF, 'train'))} | {_fmt(i, '.3f')} | "
            f"{_ratio(i, med(REF, 'infer'))} | {_fmt(m, '.1f')} | {_ratio(m, peaks.get(REF))} |"
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
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast for the forward pass")
    parser.add_argument(
        "--memory", action=argparse.BooleanOptionalAction, default=True, help="measure peak memory (subprocesses)"
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
        _memory_child(args.memory_child, *runs[0], device, args.amp)
        return
    vxm, vxm_status = _load_voxelmorph()
    print(_machine_line(device, vxm_status if vxm is not None else f"voxelmorph {NOT_INSTALLED}"))
    if vxm is None:
        print(f"# voxelmorph row: {NOT_INSTALLED} ({vxm_status}); pip install -e .[bench]")
    for note in NOTES:
        print(f"# note: {note}")
    for size, batch in runs:
        bench(size, batch, args.rounds, device, args.amp, args.memory, vxm)


if __name__ == "__main__":
    main()
