"""JAX's persistent compilation cache, on in every ailot process that compiles: sweep trials, ICVF tasks, relabel
actors and the driver. A fresh trial process then loads the learner's update, its evaluation policy and ICVF's
step from disk instead of compiling them again. On the 2-core test machine a new process's IQL create + first
200-update chunk took 16-20 s + 8 s cold and 6 s + 2 s with the cache warm, and the trained parameters were the
same bit for bit (the cached executable is the compiled one).

Node-local by default: `~/.cache/ailot/jax` (under XDG_CACHE_HOME where set), resolved on each node, so cluster
workers need nothing shipped. AILOT_COMPILATION_CACHE=<dir> moves it, AILOT_COMPILATION_CACHE=off turns it off; a
JAX_COMPILATION_CACHE_DIR the user set already wins.
"""

from __future__ import annotations

import os
from pathlib import Path

SETTING = "AILOT_COMPILATION_CACHE"
# compilations shorter than this are not worth a file (JAX's default is 1 s; most of ailot's take 0.2-5 s)
MIN_COMPILE_TIME_S = 0.1
# a bound turns on JAX's least-recently-used eviction, whose writes hold a file lock (without one, two processes
# can write the same entry at once; a torn entry then fails to load, with a warning, and is compiled again)
MAX_SIZE_BYTES = 2 * 1024**3


def directory() -> str | None:
    """Where this process's compilations are cached, or None when the cache is off."""
    chosen = os.environ.get(SETTING, "").strip()
    if chosen.lower() in ("off", "0", "false", "none"):
        return None
    if chosen:
        return str(Path(chosen).expanduser())
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    return str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ailot" / "jax")


def enable() -> str | None:
    """Point JAX at the cache (idempotent; before or after `import jax`, as long as before the compilations it
    should serve). Returns the directory, or None when off."""
    where = directory()
    if where is None:
        return None
    import jax

    if jax.config.jax_compilation_cache_dir != where:
        jax.config.update("jax_compilation_cache_dir", where)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        jax.config.update("jax_compilation_cache_max_size", MAX_SIZE_BYTES)
    return where
