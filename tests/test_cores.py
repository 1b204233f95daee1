"""Pinning worker processes to cores: disjoint claims across processes, JAX's threads on the claimed core (or on
a shared one when none is free: the thread count stays), claims freed on release and on death."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ailot import cores

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                                reason="needs Linux affinity and at least 2 cores")

# Claims cores, prints {"cores", "affinity" of every thread}, then waits for a line on stdin (so tests can hold
# the claim while another process tries), optionally runs JAX first, then releases.
# JAX starts in a thread that existed before the claim, as a Ray worker's threads do.
CLAIMANT = textwrap.dedent("""
    import json, os, sys, threading
    os.environ["JAX_PLATFORMS"] = "cpu"
    from ailot import cores
    claimed = threading.Event()

    def use_jax():
        claimed.wait()
        if sys.argv[2] == "jax":
            import jax.numpy as jnp
            (jnp.ones((256, 256)) @ jnp.ones((256, 256))).block_until_ready()

    worker = threading.Thread(target=use_jax)
    worker.start()
    got = cores.claim(int(sys.argv[1]))
    claimed.set()
    worker.join()
    threads = {}
    for t in os.listdir("/proc/self/task"):
        try:
            threads[t] = sorted(os.sched_getaffinity(int(t)))
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    print(json.dumps({"cores": got, "threads": threads, "held": cores.held()}), flush=True)
    sys.stdin.readline()
    cores.release()
    print(json.dumps({"after_release": sorted(os.sched_getaffinity(0))}), flush=True)
""")


@pytest.fixture
def claims(tmp_path, monkeypatch):
    monkeypatch.setenv("AILOT_CORE_CLAIMS", str(tmp_path))
    return tmp_path


def start(n: int = 1, run: str = "none") -> tuple[subprocess.Popen, dict]:
    p = subprocess.Popen([sys.executable, "-c", CLAIMANT, str(n), run], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    return p, json.loads(p.stdout.readline())


def finish(p: subprocess.Popen) -> dict:
    out, _ = p.communicate("go\n", timeout=60)
    return json.loads(out.strip().splitlines()[-1])


def test_claims_are_disjoint_and_every_jax_thread_is_pinned(claims):
    first, a = start(1, "jax")
    second, b = start(1)
    try:
        assert len(a["cores"]) == len(b["cores"]) == 1
        assert a["cores"] != b["cores"]  # two one-CPU workers on one machine get different cores
        # JAX started its threads after the claim: all of them (and Python's) run on the claimed core only
        assert len(a["threads"]) > 1 and all(aff == a["cores"] for aff in a["threads"].values())
        assert all(aff == b["cores"] for aff in b["threads"].values())
        third, c = start(1, "jax")  # both cores of a 2-core machine are taken: shares one, still one XLA thread
        if len(os.sched_getaffinity(0)) == 2:
            assert c["cores"] in (a["cores"], b["cores"]) and all(aff == c["cores"] for aff in c["threads"].values())
            assert c["held"] == [] and a["held"] == a["cores"]  # it claims nothing: a fourth would share too
        finish(third)
    finally:
        released = finish(first)
        finish(second)
    assert released["after_release"] == sorted(os.sched_getaffinity(0))  # the original affinity is back


def test_a_dead_holder_frees_its_core(claims):
    first, a = start(1)
    assert a["cores"] == [min(os.sched_getaffinity(0))]  # claims go to the lowest free core
    first.kill()  # no release: the kernel drops the flock with the process
    first.wait()
    second, b = start(1)
    try:
        assert b["cores"] == a["cores"]  # free again (a core still held would have sent it to the next one)
    finally:
        finish(second)


def test_pinned_only_for_whole_cores_short_of_the_machine(claims):
    n = len(os.sched_getaffinity(0))
    with cores.pinned(0.5) as got:
        assert got == [] and len(os.sched_getaffinity(0)) == n  # a fraction of a core is not pinned
    with cores.pinned(n) as got:
        assert got == []  # all of the machine: nothing to pin
    with cores.pinned(1, enabled=False) as got:
        assert got == []
    with cores.pinned(1) as got:
        assert len(got) == 1 and os.sched_getaffinity(0) == set(got) and cores.held() == got
        assert (claims / f"core-{got[0]}").exists()
        with cores.pinned(1) as inner:
            assert inner == got  # nested: keeps the outer claim
        assert cores.held() == got
    assert cores.held() == [] and len(os.sched_getaffinity(0)) == n


def test_a_cpu_quota_without_a_cpuset_is_not_pinned(claims, monkeypatch):
    # a container with a CPU limit sees all the node's cores but not the other containers' claims
    n = len(os.sched_getaffinity(0))
    monkeypatch.setattr(cores, "cpu_quota", lambda: n - 1.0)
    assert cores.claim(1) == [] and len(os.sched_getaffinity(0)) == n and cores.held() == []
    monkeypatch.setattr(cores, "cpu_quota", lambda: float(n))  # a quota as large as the cpuset: pinned
    try:
        assert len(cores.claim(1)) == 1 and len(os.sched_getaffinity(0)) == 1
    finally:
        cores.release()
    assert len(os.sched_getaffinity(0)) == n
