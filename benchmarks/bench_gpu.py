"""Brain-sized (160x192x224) inference and training step in float32 and mixed precision, ours and MONAI's VoxelMorph.

A short prepared script for a machine with a GPU (about a minute on a recent one). Rows, each at ``fp32`` and at
``auto`` (what :func:`monai_vmorph.precision.resolve_precision` picks for the device: bfloat16 on compute
capability 8.0+, float16 on 7.x, float32 elsewhere):

* ``ours (default)``: ``VoxelMorph(3)``, the package's default network (the paper's vxm-2 UNet, field integrated
  at half resolution); at ``auto`` only its backbone runs in reduced precision.
* ``monai VoxelMorph (default)``: ``monai.networks.nets.VoxelMorph()`` as MONAI builds it by default, run inside
  ``torch.autocast`` at ``auto`` (what a MONAI user writes; MONAI's engines do the same with ``amp=True``).
* ``ours (matched)`` / ``monai VoxelMorph (matched)``: both configured as the same vxm-2 stack
  (``benchmarks/bench_networks.py``).
* with ``--compile``: ``ours (default)`` again through ``torch.compile`` (compile time reported separately).

Each training step is Adam on MSE + 0.01 x smoothness with the loss in float32 (and a gradient scaler for float16);
times are medians over ``--rounds`` rounds after one warm-up round, every row once per round in turn; peak memory
is ``torch.cuda.max_memory_allocated`` of the training step. The FLOP-floor columns are measured time over
convolution FLOPs / the best convolution or GEMM rate of the run (as in ``bench_networks.py``).

    python benchmarks/bench_gpu.py                  # on a GPU: 160x192x224, 5 rounds
    python benchmarks/bench_gpu.py --quick          # anywhere (CPU too): 32x32x32, 1 round, to check the script
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import monai
import torch
from monai.networks.nets import VoxelMorph as MonaiVoxelMorph
from torch import nn

from monai_vmorph.networks import VoxelMorph
from monai_vmorph.precision import resolve_precision

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_networks import (  # a sibling script, not a package
    count_conv_flops,
    inference_fn,
    measure_rates,
    monai_matched,
    ours_builder,
    set_precision,
    sync,
    train_step_fn,
)

SIZE = (160, 192, 224)
QUICK_SIZE = (32, 32, 32)


def builders() -> dict[str, Callable[[tuple[int, ...]], nn.Module]]:
    """Row name -> model from the spatial size; MONAI's default first (the reference of the ratios)."""
    return {
        "monai VoxelMorph (default)": lambda size: MonaiVoxelMorph(),
        "ours (default)": lambda size: VoxelMorph(3),
        "monai VoxelMorph (matched)": monai_matched,
        "ours (matched)": ours_builder(False, False),
    }


def _peak_mib(step: Callable[[], None], device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def run(size: tuple[int, ...], rounds: int, device: torch.device, compile_: bool) -> None:
    torch.manual_seed(0)
    moving, fixed = torch.rand(1, 1, *size, device=device), torch.rand(1, 1, *size, device=device)
    auto = resolve_precision("auto", device)
    precisions = ["fp32"] + (["auto"] if auto != torch.float32 else [])
    rows: dict[str, tuple[Callable[[], None], Callable[[], None], float, float | None]] = {}
    heaviest: dict[str, tuple] = {}
    compile_seconds = None
    for name, build in builders().items():
        for precision in precisions:
            net = set_precision(build(size).to(device), precision)
            flops, heavy = count_conv_flops(net.eval(), moving, fixed)
            heaviest.setdefault(name, heavy)
            train = train_step_fn(net.train(), moving, fixed, precision)
            label = f"{name} [{precision if precision == 'fp32' else 'auto=' + _dtype_name(auto)}]"
            rows[label] = (train, inference_fn(net, moving, fixed, precision), flops, _peak_mib(train, device))
            if compile_ and name == "ours (default)":
                compiled = torch.compile(net)
                start = time.perf_counter()
                inference_fn(compiled, moving, fixed, precision)()
                train_step_fn(compiled.train(), moving, fixed, precision)()
                sync(device)
                compile_seconds = time.perf_counter() - start
                rows[label.replace("]", ", compiled]")] = (
                    train_step_fn(compiled, moving, fixed, precision),
                    inference_fn(compiled, moving, fixed, precision),
                    flops,
                    None,
                )

    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(rounds + 1):
        for label, (train, infer, _, _) in rows.items():
            for kind, fn in (("train", train), ("infer", infer)):
                sync(device)
                start = time.perf_counter()
                fn()
                sync(device)
                if round_ > 0:
                    times.setdefault((label, kind), []).append(time.perf_counter() - start)

    best: dict[torch.dtype, float] = {}
    for dtype in dict.fromkeys(resolve_precision(p, device) for p in precisions):
        rates = {}
        for name in ("monai VoxelMorph (matched)", "ours (matched)"):
            rates.update(measure_rates(heaviest[name], device, dtype))
        best[dtype] = max(rates.values())
        print(f"# rates {_dtype_name(dtype)} (GFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    if compile_seconds is not None:
        print(f"# torch.compile of ours (default): first inference + training step {compile_seconds:.1f} s")

    def med(label: str, kind: str) -> float:
        return statistics.median(times[(label, kind)])

    ref = next(iter(rows))
    shape = "x".join(map(str, size))
    print(f"\n## 3D {shape}, batch 1, {device.type}, median of {rounds} rounds")
    print(
        "| model [precision] | train step (s) | ratio | inference (s) | ratio | peak train memory (MiB) "
        "| conv GFLOP (forward) | train / floor | inference / floor |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, (_, _, flops, peak) in rows.items():
        dtype = torch.float32 if "[fp32" in label else auto
        t, i = med(label, "train"), med(label, "infer")
        floor = flops / (best[dtype] * 1e9)
        memory = "—" if peak is None else f"{peak:.0f}"
        print(
            f"| {label} | {t:.3f} | {t / med(ref, 'train'):.2f} | {i:.3f} | {i / med(ref, 'infer'):.2f} | {memory} "
            f"| {flops / 1e9:.1f} | {t / (3 * floor):.2f} | {i / floor:.2f} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="32x32x32 and 1 round: checks the script on any machine")
    parser.add_argument("--rounds", type=int, help="timed rounds after one warm-up (default 5; 1 with --quick)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu")
    parser.add_argument("--compile", action="store_true", help="also time ours (default) through torch.compile")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    if rounds < 1:
        parser.error("--rounds must be >= 1")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device cuda needs a GPU and a CUDA build of torch (this is torch {torch.__version__})")
    warnings.filterwarnings("ignore", message="monai.networks.blocks.Warp")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    auto = resolve_precision("auto", device)
    print(
        f"# {name}, torch {torch.__version__}, MONAI {monai.__version__}, auto precision = {_dtype_name(auto)}"
        + ("" if device.type == "cuda" else "; no GPU: only checks the script")
    )
    run(QUICK_SIZE if args.quick else SIZE, rounds, device, args.compile)


if __name__ == "__main__":
    main()
