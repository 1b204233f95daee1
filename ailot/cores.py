"""Pin a Ray worker process to as many CPU cores as Ray gave it, so that its JAX uses that many.

XLA's CPU client sizes its thread pool by the process's CPU affinity. Neither Ray's `num_cpus` nor
`XLA_FLAGS` (`intra_op_parallelism_threads=1`, `--xla_cpu_multi_thread_eigen=false`) limits it, so every
one-CPU actor, task or trial on a node runs a thread per core of the node, and N of them oversubscribe the
node N times. Measured on a 2-core machine (benchmarks/README.md): two IQL trainings side by side ran 198
updates/s each unpinned and 266 each pinned to one core apiece; two Sinkhorn solvers ran 2x slower side by
side than alone unpinned, and as fast as alone pinned. The thread count also changes XLA's summation order, so
a process runs on exactly its count of cores whether or not they are free: its numbers then depend on its
config, not on what else the machine was doing.

Cores are claimed with exclusive `flock`s on one file per core in a machine-wide directory
(`$AILOT_CORE_CLAIMS`, default `<tmp>/ailot-core-claims-<uid>`), so the processes of every Ray node and
every sweep on one machine take disjoint cores; the kernel drops a claim when its holder dies, so a killed
actor never leaves a core taken. A process that finds too few free cores shares cores already claimed (the
free ones first, then others chosen by its pid, so that such processes spread out). One in a container limited
by a CPU quota rather than a cpuset runs unpinned (other containers' claims are invisible, so pinning could
stack them on the same cores).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile

log = logging.getLogger(__name__)

_held: dict[int, int] = {}  # core -> fd of its claim file, for this process
_original: set[int] | None = None  # the affinity before the claim
_shared: list[int] = []  # cores this process runs on without a claim (too few were free)


def claims_dir() -> str:
    return os.environ.get("AILOT_CORE_CLAIMS") or os.path.join(tempfile.gettempdir(),
                                                                f"ailot-core-claims-{os.getuid()}")


def held() -> list[int]:
    """The cores this process holds a claim on (empty: none; it may still share others', `running_on`)."""
    return sorted(_held)


def running_on() -> list[int]:
    """The cores this process is pinned to, claimed or shared (empty: not pinned)."""
    return sorted(set(_held) | set(_shared))


def _set_affinity(cores: set[int]) -> None:
    # sched_setaffinity(0) changes only the calling thread; threads started later inherit from their creator,
    # and Ray has started some already, so set every thread of the process
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that exited meanwhile
            os.sched_setaffinity(int(tid), cores)


def cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup allows this process (a container's CPU limit), None when unlimited."""
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]  # cgroup v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())  # cgroup v1
        return None if quota < 0 else quota / int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
    except (OSError, ValueError):
        return None


def claim(n: int) -> list[int]:
    """Run this process on exactly `n` cores of this machine: claim `n` free ones, else share some that others
    hold (`_shared`); returns the cores it now runs on. [] (no pinning) for n < 1, n at least the cores this
    process may use, a CPU quota without a cpuset, or a platform that cannot pin. A process that runs on cores
    already (a reused worker) keeps them."""
    global _original
    if _held or _shared:
        return running_on()
    if n < 1 or not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return []
    allowed = sorted(os.sched_getaffinity(0))
    if n >= len(allowed):
        return []  # the whole machine: nothing to gain
    quota = cpu_quota()
    if quota is not None and quota < len(allowed):
        # a container limited by CPU time, not by a cpuset: containers on one node do not see each other's
        # claims (each has its own /tmp), so pinning could stack them on the same cores
        log.info("CPU quota of %.1f CPUs over %d visible cores: running unpinned", quota, len(allowed))
        return []
    directory = claims_dir()
    os.makedirs(directory, exist_ok=True)
    for core in allowed:
        fd = os.open(os.path.join(directory, f"core-{core}"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _held[core] = fd
        if len(_held) == n:
            break
    _original = set(allowed)
    if len(_held) < n:
        # the free cores this process claimed, then taken ones from a pid-chosen place
        taken = [c for c in allowed if c not in _held]
        start = os.getpid() % len(taken)
        _shared[:] = (taken[start:] + taken[:start])[:n - len(_held)]
        log.info("only %d of the %d cores this process needs are free in %s; it shares cores %s", len(_held), n,
                 directory, sorted(_shared))
    _set_affinity(set(_held) | set(_shared))
    return running_on()


def hold_exactly(n: int) -> int:
    """`claim(n)` for a process that is not a Ray worker (`ailot collect`), so that XLA, which sizes its CPU thread
    pool by the cores when it starts, uses `n` threads: its numerics depend on that count. Returns the number of
    cores the process may now use (fewer than `n` on a smaller machine). Too late once JAX has started its CPU
    client."""
    if not hasattr(os, "sched_setaffinity"):
        return os.cpu_count() or 1
    claim(n)
    return len(os.sched_getaffinity(0))


def release() -> None:
    """Give the claimed cores back and restore the affinity the process had."""
    global _original
    if _original is not None:
        _set_affinity(_original)
        _original = None
    for fd in _held.values():
        os.close(fd)  # closing the file drops its flock
    _held.clear()
    _shared.clear()


@contextlib.contextmanager
def pinned(cpus: float, enabled: bool = True):
    """Pin to `cpus` cores (whole ones; a fraction of a core is not pinned) for the duration of the block;
    yields the cores it runs on. Inside a process that runs on cores already, keeps them and leaves them."""
    if not enabled or cpus < 1 or _held or _shared:
        yield running_on()
        return
    cores = claim(int(cpus))
    try:
        yield cores
    finally:
        if cores:
            release()
