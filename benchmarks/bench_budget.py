"""Same data, same loss, same wall-clock budget: our VoxelMorph against MONAI's, trained from scratch, then scored.

Both networks are trained in ONE process on the embedded 3D brains (``data/brain_3d``), batch by batch in turn:
every batch the 3D bundle's training data loader yields (random scan-to-scan pairs, its preprocessing, no
augmentation) goes to both, so they see exactly the same pairs in the same order, and machine noise hits both
alike. A network stops when its accumulated step time (forward, loss, backward, Adam step; data loading excluded)
reaches ``--minutes``; the faster one simply takes more steps in the same budget.

* **ours**: the 3D bundle's model (``configs/train.json``'s ``model``: the paper's vxm-2 features with the
  half-resolution UNet head, 7 scaling-and-squaring steps at half resolution).
* **monai**: ``monai.networks.nets.VoxelMorph`` with the same features (``bench_networks.py``'s matched build:
  full-resolution UNet, 7 steps, ``half_res=True`` integration).

Both from the same seed, Adam at ``--lr``, the bundle's :class:`~monai_vmorph.losses.RegistrationLoss`: local NCC
+ ``--smoothness-weight`` x Grad + ``--dice-weight`` x soft Dice of the warped labels (the shipped weights' recipe).
The smoothness term is on our pre-integration velocity (``loss_mult`` 2, as voxelmorph) and on MONAI's output
DDF (MONAI does not return its velocity; its tutorials regularise the DDF).

Then both (and the identity) are scored exactly like ``bench_accuracy.py``'s ``ours`` row: Task S (each subject
warped by a known smooth field) and Task I (the ``registration_val`` pairs), through
:func:`monai_vmorph.pipeline.register_pair` and ``bench_accuracy.evaluate``.

    python benchmarks/bench_budget.py --minutes 15          # the BENCHMARKS.md row
    python benchmarks/bench_budget.py --quick                # smoke run: 1 step each, 32^3, one Task I pair
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path

import bench_accuracy as acc
import bench_networks as nets
import torch
from monai.bundle import ConfigParser
from monai.utils import set_determinism
from torch import nn

from monai_vmorph.engines import PrepareRegistrationBatch
from monai_vmorph.losses import RegistrationLoss
from monai_vmorph.networks import RegistrationResult
from monai_vmorph.pipeline import BundleModel

BUNDLE = acc.ROOT / "bundles" / "voxelmorph_brain_3d"
MODELS = ("ours", "monai")
#: ``--quick``'s network grid (2 mm, centred): small enough for a smoke test, divisible by MONAI's 16
QUICK_SIZE = (32, 32, 32)


class MonaiAsResult(nn.Module):
    """MONAI's ``VoxelMorph`` returning our :class:`RegistrationResult` (its output DDF doubles as ``velocity``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult:
        warped, ddf = self.net(moving, fixed)
        return RegistrationResult(warped=warped, ddf=ddf, velocity=ddf)


def _bundle_parser(args: argparse.Namespace) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update(
        {
            "bundle_root": str(BUNDLE),
            "dataset_dir": args.data,
            "augment_prob": 0.0,
            "pairs_per_epoch": 16,
            "seed": args.seed,
            # both networks train in float32: MONAI's runs without autocast here, and a bfloat16 backbone would
            # make the budget comparison one of precisions (those rows are bench_networks.py --precision's)
            "precision": "fp32",
        }
    )
    if args.quick:
        parser["spatial_size"] = list(QUICK_SIZE)
    return parser


def build(parser: ConfigParser, args: argparse.Namespace) -> dict[str, tuple[nn.Module, RegistrationLoss]]:
    """Each model with its loss, both initialised from ``args.seed``."""
    size = tuple(parser.get_parsed_content("spatial_size"))
    labels = parser.get_parsed_content("labels")
    models = {}
    for name in MODELS:
        torch.manual_seed(args.seed)
        net = (
            parser.get_parsed_content("model", instantiate=True)
            if name == "ours"
            else MonaiAsResult(nets.monai_matched(size))
        )
        loss = RegistrationLoss(
            similarity=parser.get_parsed_content("similarity"),
            smoothness_weight=args.smoothness_weight,
            loss_mult=parser.get_parsed_content("int_downsize") if name == "ours" else 1,
            dice_weight=args.dice_weight,
            labels=labels,
        )
        models[name] = (net, loss)
    return models


def train(parser: ConfigParser, models: dict, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Train every model on the same batches until its step time reaches the budget (or ``--max-steps``)."""
    budget = 60.0 * args.minutes
    dataset = parser.get_parsed_content("train#dataset")
    loader = parser.get_parsed_content("train#dataloader")
    prepare = PrepareRegistrationBatch()
    optimizers = {name: torch.optim.Adam(net.parameters(), lr=args.lr) for name, (net, _) in models.items()}
    stats = {name: {"steps": 0, "seconds": 0.0, "loss": float("nan")} for name in models}

    def running(name: str) -> bool:
        s = stats[name]
        return s["seconds"] < budget and (args.max_steps is None or s["steps"] < args.max_steps)

    epoch = 0
    while any(running(name) for name in models):
        epoch += 1
        dataset.set_epoch(epoch)
        for batch in loader:
            moving, targets, _, kwargs = prepare(batch, torch.device("cpu"))
            for name, (net, loss_fn) in models.items():
                if not running(name):
                    continue
                net.train()
                start = time.perf_counter()
                optimizers[name].zero_grad(set_to_none=True)
                loss = loss_fn(net(moving, kwargs["fixed"]), targets)
                loss.backward()
                optimizers[name].step()
                s = stats[name]
                s["seconds"] += time.perf_counter() - start
                s["steps"] += 1
                s["loss"] = float(loss.detach())
            done = ", ".join(
                f"{n}: {s['steps']} steps, {s['seconds']:.0f} s, loss {s['loss']:.4f}" for n, s in stats.items()
            )
            print(f"# epoch {epoch}: {done}", file=sys.stderr, flush=True)
            if not any(running(name) for name in models):
                break
    return stats


def score(parser: ConfigParser, models: dict, args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """``{task: {method: mean scores}}`` over Task S and Task I pairs, as ``bench_accuracy.py`` scores them."""
    dataset = acc.learn2reg_datalist(args.data)
    tasks = (
        {"I": acc.inter_subject_pairs(dataset, False)[:1]}
        if args.quick
        else {
            "S": acc.synthetic_pairs(dataset["training"], 1, args.seed),
            "I": acc.inter_subject_pairs(dataset, False),
        }
    )
    pixdim = tuple(float(p) for p in parser.get_parsed_content("pixdim"))
    size = tuple(int(s) for s in parser.get_parsed_content("spatial_size"))
    settings = acc.Settings(quick=args.quick, refine=0, weights=None, threads=args.threads)
    methods: dict[str, acc.Method] = {"identity": acc.Identity(settings)}
    for name, (net, train_loss) in models.items():
        # register_pair reports the image loss of the result: the training loss without the label term
        loss = RegistrationLoss(train_loss.similarity, args.smoothness_weight, loss_mult=train_loss.loss_mult)
        bundle = BundleModel(net.eval(), loss, 3, pixdim, size, Path(f"<trained by this run: {name}>"))
        methods[name] = acc.Ours(settings, 0, bundle)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for task, pairs in tasks.items():
        rows = {name: [acc.evaluate(pair, method.run(pair)) for pair in pairs] for name, method in methods.items()}
        table[task] = {name: {k: statistics.fmean(r[k] for r in got) for k in got[0]} for name, got in rows.items()}
    return table


def _synthetic_cells(table: dict, name: str) -> str:
    """Task S's Dice and EPE cells, or dashes where Task S was not run (``--quick``)."""
    if "S" not in table:
        return "— | —"
    return f"{table['S'][name]['dice']:.4f} | {table['S'][name]['epe']:.3f}"


def report(stats: dict, table: dict, params: dict[str, int]) -> None:
    i = table["I"]
    columns = "Task S Dice | Task S EPE (mm) | Task I Dice | Task I folding (%) | Task I SDlogJ"
    print(f"| model | params | steps | s/step | train s | {columns} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("identity", *MODELS):
        if name == "identity":
            lead = "| identity | — | — | — | — "
        else:
            st = stats[name]
            per_step = st["seconds"] / max(st["steps"], 1)
            lead = f"| {name} | {params[name]:,} | {st['steps']} | {per_step:.2f} | {st['seconds']:.0f} "
        print(
            f"{lead}| {_synthetic_cells(table, name)} | {i[name]['dice']:.4f} | "
            f"{i[name]['folding']:.3f} | {i[name]['sdlogj']:.3f} |"
        )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per model (step time)")
    parser.add_argument("--max-steps", type=int, help="also stop each model after this many steps")
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate of both")
    parser.add_argument("--smoothness-weight", type=float, default=1.0, help="λ of the Grad term")
    parser.add_argument("--dice-weight", type=float, default=1.0, help="weight of the label Dice term")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="initialisation, pair draws and synthetic fields")
    parser.add_argument("--data", default=str(acc.ROOT / "data" / "brain_3d"), help="Learn2Reg-style 3D dataset")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 1 step each, 32^3 grid, one Task I pair")
    args = parser.parse_args(argv)
    for option, value in (("--minutes", args.minutes), ("--lr", args.lr)):
        if not value > 0:
            parser.error(f"{option} must be > 0")
    for option, value in (("--smoothness-weight", args.smoothness_weight), ("--dice-weight", args.dice_weight)):
        if value < 0:
            parser.error(f"{option} must be >= 0")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be >= 1")
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if not Path(args.data).is_dir():
        parser.error(f"--data {args.data} is not a folder")
    if args.quick:
        args.max_steps = 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="monai.networks.blocks.Warp")
    set_determinism(seed=args.seed)
    print(acc._machine_line(args.threads))
    given = sys.argv[1:] if argv is None else argv
    print("# command: python benchmarks/bench_budget.py " + " ".join(shlex.quote(a) for a in given))
    parser = _bundle_parser(args)
    models = build(parser, args)
    params = {name: sum(p.numel() for p in net.parameters()) for name, (net, _) in models.items()}
    stats = train(parser, models, args)
    table = score(parser, models, args)
    print(
        f"\n## Same data and budget: {args.minutes:g} min of step time each, lr {args.lr:g}, "
        f"λ {args.smoothness_weight:g}, Dice weight {args.dice_weight:g}"
        + (" (quick: 1 step, 32^3 grid, Task I's first pair only)" if args.quick else "")
    )
    report(stats, table, params)


if __name__ == "__main__":
    main()
