"""keep_freed_memory: freed large tensors stay in the process for reuse (checked in fresh subprocesses)."""

import subprocess
import sys

import pytest

import monai_vmorph.cli  # noqa: F401  (registers monai_vmorph.cli.main in sys.modules)
from monai_vmorph.runtime import keep_freed_memory

# Allocates and frees a 256 MiB tensor; prints how much of it the process still holds (MiB of resident memory).
_PROBE = """
import sys
import torch
from monai_vmorph.runtime import keep_freed_memory

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

applied = keep_freed_memory() if sys.argv[1] == "keep" else None
before = rss_mib()
x = torch.ones(64 * 2**20)  # 256 MiB, written so every page is resident
del x
print(applied, rss_mib() - before)
"""


def _probe(mode):
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    applied, held = out.stdout.split()
    return applied, float(held)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_large_tensors_are_kept_only_when_asked():
    applied, held_default = _probe("default")
    assert applied == "None" and held_default < 32  # glibc unmaps a freed 256 MiB block at once
    applied, held_kept = _probe("keep")
    assert applied == "True" and held_kept > 200  # now the block stays in the heap for the next tensor


@pytest.mark.parametrize("threshold", [0, -5, 1.5, True])
def test_keep_freed_memory_rejects_a_bad_threshold(threshold):
    with pytest.raises(ValueError, match="threshold must be a positive number of bytes"):
        keep_freed_memory(threshold)


def test_command_line_entry_point_applies_it_and_runs_main(monkeypatch):
    cli_main = sys.modules["monai_vmorph.cli.main"]  # the module (the package's ``main`` is the function)
    calls = []
    monkeypatch.setattr(cli_main, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(cli_main, "main", lambda: calls.append("main") or 0)
    assert cli_main.entry_point() == 0
    assert calls == ["keep", "main"]
