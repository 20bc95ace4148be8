"""Process-wide CPU settings for monai-vmorph's own programs; nothing here runs on import.

A library should not change how its host process allocates memory, so these are called only by entry points
that own the process: the ``monai-vmorph`` command line (and, by choice, a user's own script).
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Let glibc's ``malloc`` serve blocks up to ``threshold`` bytes from its heap and keep freed memory for reuse.

    PyTorch takes every CPU tensor from ``malloc``. glibc hands blocks above its mmap threshold (at most 32 MiB by
    default) straight to the kernel and unmaps them on ``free``, so every new large activation (a 16-channel
    96x112x96 float32 feature map is 66 MB) is page-faulted in afresh: about 40 ms each on a 2-core VM, as much
    as a convolution. With this setting, freed blocks stay in the heap and the next forward pass reuses them;
    a 96x112x96 registration runs about 17 % faster (``BENCHMARKS.md``). The process keeps its peak memory
    instead of returning it, which is what a registration or training program wants anyway. It is the same
    effect as the ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables, or preloading
    jemalloc/tcmalloc as PyTorch's CPU tuning guide suggests.

    Args:
        threshold: the largest block (bytes) served from the heap; freed memory is returned to the system only
            above twice this much free space at the top of the heap.

    Returns:
        ``True`` when applied; ``False`` where the C library is not glibc (macOS, Windows, musl) and nothing
        changed.
    """
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise ValueError(f"threshold must be a positive number of bytes, got {threshold!r}.")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim = min(2 * threshold, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, min(threshold, 2**31 - 1))) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
