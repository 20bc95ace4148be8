"""Peak resident memory of this process, from the kernel's own high-water mark (Linux): shared by the benchmarks.

``reset_peak_rss`` sets the high-water mark ``VmHWM`` back to the current RSS (``/proc/self/clear_refs``, Linux >=
4.0), so ``VmHWM`` afterwards is the peak of what ran since, with nothing missed between samples.
"""

from __future__ import annotations

import ctypes


def proc_status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> int | None:
    """Reset this process's peak RSS and return the current RSS in bytes; ``None`` where that is unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return proc_status_kib("VmRSS") * 1024
    except (OSError, ValueError):
        return None


class PeakMemory:
    """``gb``: the peak resident memory of this process during a ``with`` block, above what it held when the block
    began (``None`` where the peak cannot be reset).

    Every method of ``bench_accuracy.py`` runs in its process (ANTs, Greedy and ConvexAdam through their Python
    bindings), so the increase is the method's working memory. The block begins with glibc's ``malloc_trim(0)``,
    which hands memory that earlier methods freed back to the system; what an allocator keeps anyway (PyTorch's,
    ITK's pools) lowers a later figure, never raises it.
    """

    def __init__(self) -> None:
        self.gb: float | None = None
        self._start: int | None = None

    def __enter__(self) -> PeakMemory:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
        self._start = reset_peak_rss()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is not None:
            self.gb = (proc_status_kib("VmHWM") * 1024 - self._start) / 1e9
