"""Pair generation: scan-to-scan and atlas pairs, fixed validation pairs, and a per-epoch random pair dataset.

Pairs are dicts ``{"moving_image", "fixed_image", "moving_label", "fixed_label" (when both subjects have a
label), "moving_name", "fixed_name"}``. All randomness comes from a local :class:`random.Random` seeded by the
caller, so the same seed gives the same pairs on every rank and worker and the global RNGs are untouched.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from monai.data import Dataset

from ._paths import name_from_path
from .errors import DataError
from .keys import FIXED_IMAGE, FIXED_LABEL, FIXED_NAME, IMAGE, LABEL, MOVING_IMAGE, MOVING_LABEL, MOVING_NAME, NAME

__all__ = ["PAIR_MODES", "RandomPairDataset", "atlas_pairs", "fixed_pairs", "make_pair", "scan_to_scan_pairs"]

PAIR_MODES = ("scan_to_scan", "atlas")
_DIRECTIONS = ("atlas_to_scan", "scan_to_atlas")


def make_pair(moving: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The pair dict of two subjects; labels are included only when both subjects have one.

    Args:
        moving: the subject warped onto ``fixed`` (``{"image", "label" (optional), "name" (optional)}``).
        fixed: the reference subject.
    """
    pair = {
        MOVING_IMAGE: moving[IMAGE],
        FIXED_IMAGE: fixed[IMAGE],
        MOVING_NAME: moving.get(NAME) or name_from_path(moving[IMAGE]),
        FIXED_NAME: fixed.get(NAME) or name_from_path(fixed[IMAGE]),
    }
    if moving.get(LABEL) is not None and fixed.get(LABEL) is not None:
        pair[MOVING_LABEL] = moving[LABEL]
        pair[FIXED_LABEL] = fixed[LABEL]
    return pair


def scan_to_scan_pairs(
    subjects: Sequence[Mapping[str, Any]], num_pairs: int | None = None, seed: int = 0, allow_self: bool = False
) -> list[dict[str, Any]]:
    """Random ordered pairs of distinct subjects (subject ``i`` moving, ``j`` fixed).

    Args:
        subjects: subject dicts with an ``image`` key.
        num_pairs: how many pairs to draw; ``None`` gives all ``n * (n - 1)`` ordered pairs (``n * n`` with
            ``allow_self``) in shuffled order. Pairs are drawn without replacement until all are used, then the
            draw starts over, so ``num_pairs`` may exceed the number of distinct pairs.
        seed: the seed of the local generator; the same seed gives the same list.
        allow_self: also pair a subject with itself.

    Returns:
        The list of pair dicts.
    """
    subjects = _check_subjects(subjects, "subjects", minimum=1 if allow_self else 2)
    n = len(subjects)
    total = n * n if allow_self else n * (n - 1)

    def pair_of(index: int) -> dict[str, Any]:
        if allow_self:
            i, j = divmod(index, n)
        else:
            i, r = divmod(index, n - 1)
            j = r if r < i else r + 1  # skip the diagonal
        return make_pair(subjects[i], subjects[j])

    return [pair_of(k) for k in _draw(total, total if num_pairs is None else num_pairs, random.Random(seed))]


def atlas_pairs(
    subjects: Sequence[Mapping[str, Any]], atlas: Mapping[str, Any] | int, direction: str = "atlas_to_scan"
) -> list[dict[str, Any]]:
    """Pairs of every subject with one fixed atlas, in the order of ``subjects``.

    Args:
        subjects: subject dicts with an ``image`` key; the atlas itself (same image path) is skipped.
        atlas: the atlas subject dict, or the index of the atlas in ``subjects``.
        direction: ``"atlas_to_scan"`` (atlas moving, scan fixed) or ``"scan_to_atlas"`` (scan moving, atlas
            fixed, the VoxelMorph atlas-based setting).

    Returns:
        One pair per non-atlas subject.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}.")
    subjects = _check_subjects(subjects, "subjects", minimum=1)
    if isinstance(atlas, int) and not isinstance(atlas, bool):
        if not -len(subjects) <= atlas < len(subjects):
            raise ValueError(f"atlas index must be in [0, {len(subjects)}) for {len(subjects)} subjects, got {atlas}.")
        atlas = subjects[atlas]
    atlas = _check_subjects([atlas], "atlas", minimum=1)[0]
    scans = [s for s in subjects if s[IMAGE] != atlas[IMAGE]]
    if not scans:
        raise ValueError(f"subjects must hold at least one subject besides the atlas {atlas[IMAGE]}, got none.")
    if direction == "atlas_to_scan":
        return [make_pair(atlas, s) for s in scans]
    return [make_pair(s, atlas) for s in scans]


def fixed_pairs(pairs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate a fixed list of pairs (e.g. ``registration_val``) and fill in missing names.

    Args:
        pairs: pair dicts with ``moving_image`` and ``fixed_image`` and optional labels and names.

    Returns:
        Copies of the pairs, with ``moving_name``/``fixed_name`` derived from the file names when absent.

    Raises:
        ValueError: ``pairs`` is empty or not a list of dicts.
        DataError: a pair lacks an image key, or has only one of the two labels.
    """
    if isinstance(pairs, (str, Mapping)) or not isinstance(pairs, Sequence) or not pairs:
        raise ValueError(f"pairs must be a non-empty list of pair dicts, got {type(pairs).__name__} {pairs!r:.80}.")
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, Mapping):
            raise ValueError(f"pairs[{i}] must be a dict with keys {MOVING_IMAGE!r} and {FIXED_IMAGE!r}, got {pair!r}.")
        for key in (MOVING_IMAGE, FIXED_IMAGE):
            if not pair.get(key):
                raise DataError(f"pairs[{i}] = {dict(pair)!r:.200} has no {key!r}; give both images of every pair.")
        if (pair.get(MOVING_LABEL) is None) != (pair.get(FIXED_LABEL) is None):
            have, miss = (MOVING_LABEL, FIXED_LABEL) if pair.get(MOVING_LABEL) else (FIXED_LABEL, MOVING_LABEL)
            raise DataError(f"pairs[{i}] has {have} {pair[have]} but no {miss}; give both labels of a pair or neither.")
        item = dict(pair)
        item[MOVING_NAME] = pair.get(MOVING_NAME) or name_from_path(pair[MOVING_IMAGE])
        item[FIXED_NAME] = pair.get(FIXED_NAME) or name_from_path(pair[FIXED_IMAGE])
        out.append(item)
    return out


class RandomPairDataset(Dataset):
    """Training pairs redrawn every epoch: ``set_epoch(e)`` draws ``pairs_per_epoch`` pairs with seed ``seed + e``.

    A :class:`monai.data.Dataset` over the epoch's pair list: item ``i`` is pair ``i`` passed through
    ``transform`` (e.g. ``LoadImaged`` on the moving/fixed keys). Every rank and worker computes the same pair
    list from ``(seed, epoch)``, so a :class:`~torch.utils.data.distributed.DistributedSampler` shards it
    exactly; call ``dataset.set_epoch(e)`` (and ``sampler.set_epoch(e)``) before iterating epoch ``e``. Do not
    combine with ``persistent_workers=True``: persistent workers keep the dataset copy of the epoch they
    started with.

    Args:
        subjects: subject dicts ``{"image", "label" (optional), "name" (optional)}``.
        transform: a callable applied to a copy of each pair dict (``None`` returns the path dict).
        pairs_per_epoch: the length of an epoch; default: the number of subjects (``scan_to_scan``) or of
            non-atlas subjects (``atlas``).
        mode: ``"scan_to_scan"`` (random ordered pairs of distinct subjects) or ``"atlas"`` (each pair joins a
            random subject with ``atlas``).
        atlas: the atlas subject dict or its index in ``subjects`` (``atlas`` mode only).
        direction: ``"atlas_to_scan"`` or ``"scan_to_atlas"`` (``atlas`` mode only).
        seed: the base seed.
        allow_self: also draw a subject paired with itself (``scan_to_scan`` mode only).
    """

    def __init__(
        self,
        subjects: Sequence[Mapping[str, Any]],
        transform: Callable | None = None,
        pairs_per_epoch: int | None = None,
        mode: str = "scan_to_scan",
        atlas: Mapping[str, Any] | int | None = None,
        direction: str = "atlas_to_scan",
        seed: int = 0,
        allow_self: bool = False,
    ) -> None:
        if mode not in PAIR_MODES:
            raise ValueError(f"mode must be one of {PAIR_MODES}, got {mode!r}.")
        if mode == "atlas":
            if atlas is None:
                raise ValueError("atlas must be given (a subject dict or an index) in 'atlas' mode, got None.")
            self._atlas_pairs = atlas_pairs(subjects, atlas, direction)
            default_len = len(self._atlas_pairs)
        else:
            if atlas is not None:
                raise ValueError(f"atlas is only used in 'atlas' mode, got an atlas with mode={mode!r}.")
            self._subjects = _check_subjects(subjects, "subjects", minimum=1 if allow_self else 2)
            default_len = len(self._subjects)
        if pairs_per_epoch is not None and (isinstance(pairs_per_epoch, bool) or pairs_per_epoch < 1):
            raise ValueError(f"pairs_per_epoch must be a positive int or None, got {pairs_per_epoch!r}.")
        self.mode = mode
        self.seed = int(seed)
        self.allow_self = allow_self
        self.pairs_per_epoch = int(pairs_per_epoch) if pairs_per_epoch is not None else default_len
        self.epoch = 0
        super().__init__(data=self._draw_pairs(0), transform=transform)

    def set_epoch(self, epoch: int) -> None:
        """Draw the pairs of ``epoch`` (seed ``seed + epoch``); the same epoch always gives the same pairs."""
        self.epoch = int(epoch)
        self.data = self._draw_pairs(self.epoch)

    @property
    def pairs(self) -> list[dict[str, Any]]:
        """The current epoch's pair dicts (paths, before the transform)."""
        return self.data

    def _draw_pairs(self, epoch: int) -> list[dict[str, Any]]:
        if self.mode == "atlas":
            rng = random.Random(self.seed + epoch)
            return [dict(self._atlas_pairs[k]) for k in _draw(len(self._atlas_pairs), self.pairs_per_epoch, rng)]
        return scan_to_scan_pairs(self._subjects, self.pairs_per_epoch, self.seed + epoch, self.allow_self)

    def _transform(self, index: int) -> Any:
        return self.transform(dict(self.data[index]))  # a copy: transforms must not edit the pair list


def _draw(total: int, count: int, rng: random.Random) -> Iterator[int]:
    """``count`` indices in ``[0, total)``: without replacement, starting a new round when all are used."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"num_pairs must be a non-negative int or None, got {count!r}.")
    while count > 0:
        take = min(count, total)
        yield from rng.sample(range(total), take)
        count -= take


def _check_subjects(subjects: Any, name: str, minimum: int) -> list[Mapping[str, Any]]:
    """Check a list of subject dicts with an ``image`` key and at least ``minimum`` entries."""
    if isinstance(subjects, (str, Mapping)) or not isinstance(subjects, Sequence):
        raise ValueError(f"{name} must be a list of subject dicts, got {type(subjects).__name__}.")
    if len(subjects) < minimum:
        raise ValueError(f"{name} must hold at least {minimum} subject(s), got {len(subjects)}.")
    for i, s in enumerate(subjects):
        if not isinstance(s, Mapping) or not s.get(IMAGE):
            raise ValueError(f"{name}[{i}] must be a dict with an {IMAGE!r} path, got {s!r:.120}.")
    return list(subjects)
