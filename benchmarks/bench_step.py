"""Training-step and inference time of our VoxelMorph against MONAI's, side by side in one process.

Each round runs every model once, in turn, so machine noise hits all of them alike; the table reports the
median over rounds and the ratio to MONAI's ``VoxelMorph`` (lower is better).

    python benchmarks/bench_step.py --size 64 64 64 --rounds 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from monai.networks.nets import VoxelMorph as MonaiVoxelMorph

from monai_vmorph.losses import gradient_loss, mse
from monai_vmorph.networks import VoxelMorph


def _outputs(net: torch.nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = net(moving, fixed)
    return (out.warped, out.ddf) if hasattr(out, "warped") else (out[0], out[1])


def _train_step(net: torch.nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step() -> None:
        warped, ddf = _outputs(net, moving, fixed)
        loss = mse(warped, fixed) + 0.01 * gradient_loss(ddf)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def _inference(net: torch.nn.Module, moving: torch.Tensor, fixed: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            _outputs(net, moving, fixed)

    return run


def _models(ndim: int) -> dict[str, torch.nn.Module]:
    half = {"half_res": True}
    return {
        "monai VoxelMorph (default)": MonaiVoxelMorph(spatial_dims=ndim),
        "ours (paper, int_downsize=2)": VoxelMorph(ndim),
        "ours, channels_last": VoxelMorph(ndim, channels_last=True),
        "ours, half_res UNet": VoxelMorph(ndim, backbone_kwargs=half),
        "ours, half_res UNet, channels_last": VoxelMorph(ndim, backbone_kwargs=half, channels_last=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs="+", default=[64, 64, 64], help="spatial size (2 or 3 ints)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    args = parser.parse_args()
    if len(args.size) not in (2, 3) or args.rounds < 1:
        parser.error("--size takes 2 or 3 ints and --rounds must be >= 1")
    warnings.filterwarnings("ignore", message="monai.networks.blocks.Warp")
    torch.manual_seed(0)
    ndim, size = len(args.size), tuple(args.size)
    moving, fixed = torch.rand(args.batch, 1, *size), torch.rand(args.batch, 1, *size)

    tasks = {}
    for name, net in _models(ndim).items():
        params = sum(p.numel() for p in net.parameters())
        tasks[name] = (params, _train_step(net.train(), moving, fixed), _inference(net, moving, fixed))

    times: dict[tuple[str, str], list[float]] = {}
    for round_ in range(args.rounds + 1):
        for name, (_, train, infer) in tasks.items():
            for kind, fn in (("train", train), ("infer", infer)):
                start = time.perf_counter()
                fn()
                if round_ > 0:  # round 0 warms up
                    times.setdefault((name, kind), []).append(time.perf_counter() - start)

    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"# input {args.batch}x1x{'x'.join(map(str, size))}, median of {args.rounds} rounds")
    ref = "monai VoxelMorph (default)"
    print("| model | params | train step (s) | ratio | inference (s) | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (params, _, _) in tasks.items():
        t = statistics.median(times[(name, "train")])
        i = statistics.median(times[(name, "infer")])
        rt, ri = statistics.median(times[(ref, "train")]), statistics.median(times[(ref, "infer")])
        print(f"| {name} | {params:,} | {t:.3f} | {t / rt:.2f} | {i:.3f} | {i / ri:.2f} |")


if __name__ == "__main__":
    main()
