"""Many pairs: ``evaluate`` resumes a killed run where it stopped, ``--shard K/N`` splits the list, ``--merge`` gives
the summary of one run."""

import csv
import json
from pathlib import Path

import pytest

import monai_vmorph.cli.evaluate as evaluate_module
from monai_vmorph.cli.batch import parse_shard, shard_indices
from monai_vmorph.cli.errors import CLIError

ROOT = Path(__file__).resolve().parents[2]
BRAIN_2D = ROOT / "data" / "brain_2d"
ORIGINAL = evaluate_module.register_listed_pair
NAMES = ["colin27_z+0", "icbm09a_z+0", "icbm09c_z+10", "icbm09a_z+10", "colin27_z+10"]


def _pairs_csv(path: Path, count: int = 4) -> Path:
    rows = [("moving", "fixed", "moving_label", "fixed_label")]
    for moving in NAMES[1 : count + 1]:
        files = [("imagesTr", moving), ("imagesTr", NAMES[0]), ("labelsTr", moving), ("labelsTr", NAMES[0])]
        rows.append(tuple(str(BRAIN_2D / d / f"{n}_0000.nii.gz") for d, n in files))
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return path


def _table(out: Path) -> list[dict]:
    with (out / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def _summary(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("seconds")
    return summary


class _Counting:
    """``register_listed_pair`` that counts its calls and raises KeyboardInterrupt (Ctrl-C) at call ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls, self.stop_at = 0, stop_at

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return ORIGINAL(*args, **kwargs)


def test_shards_are_disjoint_deterministic_and_cover_the_list():
    shards = [shard_indices(10, (k, 3)) for k in (1, 2, 3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert shard_indices(4, None) == [0, 1, 2, 3] and shard_indices(2, (3, 3)) == []
    assert parse_shard(" 2 / 8 ") == (2, 8) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "2", "a/b", "-1/3"):
        with pytest.raises(CLIError, match="K/N"):
            parse_shard(bad)


@pytest.mark.slow
def test_a_killed_evaluate_resumes_and_shards_merge_into_the_summary_of_one_run(cli, weights_2d, monkeypatch, tmp_path):
    pairs = _pairs_csv(tmp_path / "pairs.csv")
    common = ["--pairs", pairs, "--weights", weights_2d, "--fast", "--quiet"]
    code, _, err = cli("evaluate", *common, "--out-dir", tmp_path / "one")
    assert code == 0, err

    # Ctrl-C while the third pair registers: the first two are kept, no summary; the same command does the rest
    killed = _Counting(stop_at=3)
    monkeypatch.setattr(evaluate_module, "register_listed_pair", killed)
    code, _, err = cli("evaluate", *common, "--out-dir", tmp_path / "resumed")
    assert code == 130 and "interrupted" in err
    assert len(list((tmp_path / "resumed" / "pairs").glob("*.json"))) == 2
    assert not (tmp_path / "resumed" / "metrics.csv").exists()
    again = _Counting()
    monkeypatch.setattr(evaluate_module, "register_listed_pair", again)
    code, _, err = cli("evaluate", *common, "--out-dir", tmp_path / "resumed")
    assert code == 0, err
    assert again.calls == 2  # only the pairs that were not done
    assert _table(tmp_path / "resumed") == _table(tmp_path / "one")
    assert _summary(tmp_path / "resumed") == _summary(tmp_path / "one")

    # a job array of two tasks into one folder, then the merge
    sharded = tmp_path / "sharded"
    counts = []
    for k in (1, 2):
        counter = _Counting()
        monkeypatch.setattr(evaluate_module, "register_listed_pair", counter)
        code, stdout, err = cli("evaluate", *common, "--out-dir", sharded, "--shard", f"{k}/2")
        assert code == 0 and f"shard {k}/2: 2 pairs" in stdout, err
        counts.append(counter.calls)
        assert not (sharded / "metrics.csv").exists()
    assert counts == [2, 2]
    nothing = _Counting(stop_at=1)  # the merge registers nothing
    monkeypatch.setattr(evaluate_module, "register_listed_pair", nothing)
    code, _, err = cli("evaluate", *common, "--out-dir", sharded, "--merge")
    assert code == 0, err
    assert _table(sharded) == _table(tmp_path / "one") and _summary(sharded) == _summary(tmp_path / "one")

    # what is refused, in one line: a merge with a shard missing, other settings, --merge with --shard
    partial = tmp_path / "partial"
    monkeypatch.setattr(evaluate_module, "register_listed_pair", _Counting())
    assert cli("evaluate", *common, "--out-dir", partial, "--shard", "1/2")[0] == 0
    code, _, err = cli("evaluate", *common, "--out-dir", partial, "--merge")
    assert code == 2 and "2 of 4 pairs have no result" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("evaluate", *common, "--out-dir", partial, "--affine", "rigid")
    assert code == 2 and "other settings (affine differ)" in err
    code, _, err = cli("evaluate", *common, "--out-dir", partial, "--merge", "--shard", "1/2")
    assert code == 2 and "without --shard" in err
