"""glibc's malloc tuned for a server that runs for days: the app calls `tune_allocator()` before it starts.

With its defaults, a threaded Python server on glibc keeps growing: each request thread may get an arena of
its own (up to 8 per core), and after a large block is freed glibc raises its mmap threshold (up to 32 MB),
so later images, arrays and uploads are carved from those arenas, whose freed pieces are rarely whole pages
that can be given back. The soak (benchmarks/soak.py, 30 minutes, 10 clients) measured +125 MB of resident
memory after its warm-up with the defaults, and +50.5 MB with two arenas and a fixed 1 MB mmap threshold
(blocks that large are mapped on their own and returned to the system when freed).

An operator's MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ in the environment win: those are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's malloc.h
M_ARENA_MAX = -8
ARENAS = 2  # requests hold Python's lock for most of their work: more arenas buy no speed, only memory
MMAP_THRESHOLD = 1 << 20

SETTINGS = {"MALLOC_ARENA_MAX": (M_ARENA_MAX, ARENAS), "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, MMAP_THRESHOLD)}


def tune_allocator() -> dict[str, int]:
    """Set glibc's arena count and mmap threshold (what the environment does not set); returns what was set.
    Elsewhere (macOS, musl) nothing is set."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    done = {}
    for env, (param, value) in SETTINGS.items():
        if env not in os.environ and mallopt(param, value) == 1:
            done[env] = value
    return done
