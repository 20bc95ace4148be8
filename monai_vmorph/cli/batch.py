"""Many pairs in one command: one result file per pair, resumable after a kill, split over the tasks of a job array.

``evaluate`` registers each pair of its list in one process (the model loaded and the modules imported once) and
writes the pair's result as soon as it is done, atomically, to ``<out-dir>/pairs/<NNNN>_<moving>_to_<fixed>.json``
(``NNNN`` the pair's index in the list). A result file records the pair's files and the settings that produced it,
so the same command run again **skips the pairs that are done** (a killed run resumes where it stopped), and a run
with other settings is refused instead of mixing results (``--overwrite`` redoes every pair).

``--shard K/N`` (``1 <= K <= N``) takes the pairs whose index ``i`` has ``i % N == K - 1``: deterministic, disjoint,
together the whole list, so ``N`` tasks of a job array (Slurm: ``--shard $((SLURM_ARRAY_TASK_ID + 1))/N`` for
``--array=0-(N-1)``) share one output folder on a shared file system. A shard writes only its pair files (each shard
holds a lock of its own, ``pairs/shard-K-of-N``); the run without ``--shard`` — ``--merge`` to forbid it from
registering anything — writes ``metrics.csv`` and ``summary.json`` from all pair files, the same as one run.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path

from monai_vmorph.cli.errors import CLIError
from monai_vmorph.errors import UserError
from monai_vmorph.io.atomic import atomic_write
from monai_vmorph.io.locks import FolderLock
from monai_vmorph.keys import FIXED_IMAGE, FIXED_NAME, MOVING_IMAGE, MOVING_NAME

__all__ = ["SETTINGS", "BatchRun", "PairResults", "distinct_provenance", "parse_shard", "shard_indices"]

#: The options that must match for a stored pair result to be reused (with the refinement preset).
SETTINGS = ("bundle", "weights", "affine", "similarity", "resolution", "refine", "refine_lr", "precision", "split")


def distinct_provenance(rows: list[dict]) -> list[dict]:
    """The distinct ``"provenance"`` records of a run's pairs, in order of first use.

    One record when one machine ran every pair; shards merged from machines with other threads, devices or
    versions each keep theirs, so a summary never claims one setting for pairs computed under another.
    """
    seen: list[dict] = []
    for row in rows:
        record = row.get("provenance")
        if record is not None and record not in seen:
            seen.append(record)
    return seen


_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"K/N"`` as ``(K, N)`` with ``1 <= K <= N``; ``None`` for ``None``."""
    if text is None:
        return None
    match = _SHARD.fullmatch(text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise CLIError(f"--shard {text!r} must be K/N with 1 <= K <= N, e.g. --shard 2/8")
    return int(match.group(1)), int(match.group(2))


def shard_indices(count: int, shard: tuple[int, int] | None) -> list[int]:
    """The indices of ``count`` pairs that shard ``(K, N)`` registers (all without a shard)."""
    if shard is None:
        return list(range(count))
    k, n = shard
    return [i for i in range(count) if i % n == k - 1]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)[:80]


class PairResults:
    """The per-pair result files of one output folder (module docstring).

    Args:
        out_dir: the command's output folder; the files live in ``out_dir/pairs``.
        pairs: the whole pair list (datalist entries).
        settings: JSON-ready settings that must match for a stored result to be reused.
        overwrite: ignore stored results (every pair is registered again and its file replaced).
        folder: the sub-folder of ``out_dir`` for the files (``learn2reg`` hides them, ``.pairs``, so that its
            folder holds the submission's fields alone).
    """

    def __init__(
        self, out_dir: str | Path, pairs: list[dict], settings: dict, overwrite: bool = False, folder: str = "pairs"
    ) -> None:
        self.folder = Path(out_dir) / folder
        self.pairs = pairs
        self.settings = json.loads(json.dumps(settings))  # as it reads back
        self.overwrite = overwrite
        width = max(4, len(str(len(pairs) - 1)))
        self.paths = [
            self.folder
            / f"{i:0{width}d}_{_safe(p.get(MOVING_NAME, 'moving'))}_to_{_safe(p.get(FIXED_NAME, 'fixed'))}.json"
            for i, p in enumerate(pairs)
        ]

    def _identity(self, index: int) -> dict:
        pair = self.pairs[index]
        return {"index": index, "moving": str(pair[MOVING_IMAGE]), "fixed": str(pair[FIXED_IMAGE])}

    def read(self, index: int) -> dict | None:
        """The stored row of pair ``index``, ``None`` when it is not done (or ``overwrite``).

        Raises:
            UserError: the file is unreadable, belongs to another pair list or was made with other settings.
        """
        return None if self.overwrite else self.stored(index)

    def stored(self, index: int) -> dict | None:
        """The row stored for pair ``index`` whatever ``overwrite`` says (``None`` without one); checked as
        :meth:`read`."""
        path = self.paths[index]
        if not path.is_file():
            return None
        try:
            content = json.loads(path.read_text())
            identity, settings, row = content["pair"], content["settings"], content["row"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"{path} is not a pair result ({error}); delete it or pass --overwrite") from None
        if identity != self._identity(index):
            raise UserError(
                f"{path} holds the result of another pair ({identity.get('moving')} -> {identity.get('fixed')}); "
                "the pair list changed: pass --overwrite or choose another --out-dir"
            )
        if settings != self.settings:
            changed = sorted(k for k in set(settings) | set(self.settings) if settings.get(k) != self.settings.get(k))
            raise UserError(
                f"{path} was made with other settings ({', '.join(changed)} differ); pass --overwrite to redo every "
                "pair or choose another --out-dir"
            )
        return row

    def write(self, index: int, row: dict) -> None:
        """Store pair ``index``'s row atomically (a kill leaves the old file or none, never half of one)."""
        content = {"pair": self._identity(index), "settings": self.settings, "row": row}
        text = json.dumps(content, indent=1) + "\n"
        atomic_write(self.paths[index], lambda p: p.write_text(text))

    def missing(self, indices: list[int]) -> list[int]:
        """The indices among ``indices`` that have no stored result."""
        return [i for i in indices if self.read(i) is None]

    def shard_lock(self, shard: tuple[int, int]) -> FolderLock:
        """The lock one shard holds while it runs (two runs of one shard conflict; different shards do not)."""
        return FolderLock(self.folder / f"shard-{shard[0]}-of-{shard[1]}")


class BatchRun:
    """One ``evaluate`` / ``learn2reg`` run over a pair list: its shard, its stored results and its lock.

    Entering takes the lock: without ``--shard``, the folder's (:class:`monai_vmorph.pipeline.OutputSet` of the
    summary files, which are committed by the caller); with one, the shard's own (:meth:`PairResults.shard_lock`).
    Leaving releases it (and discards uncommitted summary files).

    Args:
        args: the command's options (``shard``, ``merge``, ``overwrite``, ``out_dir`` and the :data:`SETTINGS`).
        pairs: the whole pair list.
        summary: the files the run without ``--shard`` writes.
        inputs: the command's input files (never overwritten).
        extra_settings: options besides :data:`SETTINGS` that must match (e.g. the field format).
        folder: :class:`PairResults`' sub-folder.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        pairs: list[dict],
        summary: list[str],
        inputs: list,
        extra_settings: tuple[str, ...] = (),
        folder: str = "pairs",
    ) -> None:
        from monai_vmorph.cli.register import preset_of

        self.shard = parse_shard(args.shard)
        if self.shard is not None and args.merge:
            raise CLIError("--merge combines the shards' results; run it without --shard")
        self.args, self.pairs, self.summary, self.inputs = args, pairs, summary, inputs
        settings = {"preset": preset_of(args), **{k: getattr(args, k, None) for k in (*SETTINGS, *extra_settings)}}
        self.results = PairResults(args.out_dir, pairs, settings, args.overwrite and not args.merge, folder)
        self.selected = shard_indices(len(pairs), self.shard)
        self.outputs = self._lock = None

    def __enter__(self) -> BatchRun:
        from monai_vmorph.pipeline import OutputSet

        if self.shard is None:
            args = self.args
            self.outputs = OutputSet(args.out_dir, self.summary, overwrite=args.overwrite, inputs=self.inputs)
        else:
            self._lock = self.results.shard_lock(self.shard)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
        if self.outputs is not None:
            self.outputs.__exit__(*exc)

    def todo(self, what: str, where: Path, first: Callable[[int], str]) -> list[int]:
        """The selected pairs without a stored result; with ``--merge``, one line if there are any (``what`` they
        lack, ``where``, and ``first(index)`` naming the first of them)."""
        todo = self.results.missing(self.selected)
        if self.args.merge and todo:
            raise CLIError(
                f"{len(todo)} of {len(self.pairs)} pairs have no {what} in {where} yet (first: {first(todo[0])}); "
                "run the missing shards first"
            )
        return todo

    def stored(self) -> list[dict]:
        """Every pair's stored row, in the order of the list (also the rows this run rewrote)."""
        return [self.results.stored(i) for i in range(len(self.pairs))]
