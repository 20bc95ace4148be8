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

import json
import re
from pathlib import Path

from monai_vmorph.cli.errors import CLIError
from monai_vmorph.errors import UserError
from monai_vmorph.io.atomic import atomic_write
from monai_vmorph.io.locks import FolderLock
from monai_vmorph.keys import FIXED_IMAGE, FIXED_NAME, MOVING_IMAGE, MOVING_NAME

__all__ = ["PairResults", "parse_shard", "shard_indices"]

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
        path = self.paths[index]
        if self.overwrite or not path.is_file():
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
