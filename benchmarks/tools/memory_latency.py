"""Latency of one dependent memory read, by working-set size: what a cold user costs.

    python benchmarks/tools/memory_latency.py [MB ...]      # default: 1 4 16 64 256
    python benchmarks/tools/memory_latency.py --small-pages 64   # without huge pages

A launch for a user the CPU caches have not seen makes two reads that depend on each
other — the user's slot in the key table (the id's hash names it), then the user's record
(the slot names it). This chases a random cycle through an array, one 8-byte read per
cache line, so every read waits for the one before, as those two do. numpy asks for huge
pages on arrays of 4 MB or more (as it does for the engine's tables), so beyond the TLB's
reach the figure is the memory's own latency. benchmarks/README.md (the growth target) uses it to
bound the single launch at 100,000 servers.
"""

import sys
import time

import numpy as np
from numba import njit


@njit(cache=False)
def _chase(a, k):
    x = 0
    for _ in range(k):
        x = a[x]
    return x


def latency_ns(megabytes: float, reads: int = 3_000_000, seed: int = 1) -> float:
    """Mean ns per dependent read over a random cycle through ``megabytes`` of memory."""
    lines = max(2, int(megabytes * 2**20) // 64)
    order = np.random.default_rng(seed).permutation(lines)
    a = np.zeros(lines * 8, dtype=np.int64)  # one entry used per 64-byte line
    a[order * 8] = np.roll(order, -1) * 8
    _chase(a, min(reads, lines))  # compile, and fault every page in
    t = time.perf_counter()
    _chase(a, reads)
    return (time.perf_counter() - t) / reads * 1e9


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--small-pages" in args:  # numpy then leaves large arrays on 4 KiB pages
        args.remove("--small-pages")
        core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
        core.multiarray._set_madvise_hugepage(False)
    sizes = [float(x) for x in args] or [1, 4, 16, 64, 256]
    for mb in sizes:
        print(f"{mb:8g} MB: {latency_ns(mb):6.1f} ns per dependent read")
