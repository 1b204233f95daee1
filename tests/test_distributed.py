"""The Ray relabel pool: same rewards as the single-process path, broadcast once, cache hits, actor loss."""

import threading

import numpy as np
import pytest
from conftest import local_ray

from ailot import pipeline
from ailot.cache import ArrayCache
from ailot.data.episodes import power_of_two_sizes
from ailot.data.loading import load_minari
from ailot.distributed import RelabelPool, pick_shard, plan_shards
from ailot.intents import ICVFConfig, pretrain
from ailot.labellers import bucket_plan, label, solves_per_compile

# A vmapped Sinkhorn iterates until every problem in its batch converges, so a problem batched with
# different neighbours may take extra iterations past its own threshold: equal to well within it.
RTOL = 1e-3

SETTINGS = [
    {"labeller": "ailot", "k": 1, "epsilon": 1e-2, "alpha": 5.0, "tau": 0.5, "n_experts": 1, "max_iterations": 300},
    {"labeller": "ailot", "k": 3, "epsilon": 1e-2, "alpha": 5.0, "tau": 0.5, "n_experts": 2, "max_iterations": 300},
    {"labeller": "otr", "epsilon": 1e-2, "n_experts": 1, "max_iterations": 300},
]


@pytest.fixture(scope="module")
def ray_local():
    with local_ray("rayd") as ray:
        yield ray


@pytest.fixture(scope="module")
def setup(pointmaze_umaze):
    agent, expert = load_minari(pointmaze_umaze[0]), load_minari(pointmaze_umaze[1])
    encoder, _ = pretrain(agent.states(), ICVFConfig(hidden_dims=(32, 32), num_steps=100, chunk=100,
                                                     batch_size=64), seed=0, progress=False)
    # the pool plans its buckets once for all settings; the local path, given that plan, pads alike
    buckets = bucket_plan(agent, expert, solves=solves_per_compile(SETTINGS))
    local, local_stats = zip(*(label(s, agent, expert, encoder, buckets=buckets, return_info=True)
                               for s in SETTINGS))
    return agent, expert, encoder, list(local), list(local_stats)


def test_shards_cover_every_episode_once_largest_bucket_first():
    lengths = np.array([100, 500, 130, 64, 300, 510, 70])
    shards = plan_shards(lengths, num_actors=2, sizes=power_of_two_sizes(lengths, 64))
    flat = np.concatenate(shards)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert set(shards[0].tolist()) <= {1, 5}  # the 512 bucket first


def test_settings_share_a_compilation_unless_a_static_knob_differs():
    base = {"labeller": "ailot", "k": 1, "epsilon": 1e-2, "alpha": 5.0, "tau": 0.5}
    grid = [{**base, "epsilon": e, "tau": t} for e in (1e-3, 1e-2, 1e-1) for t in (0.5, 1.0)]
    assert solves_per_compile(grid) == 6  # traced: one compilation serves all six
    assert solves_per_compile([{**s, "k": k} for s in grid for k in (1, 5)]) == 6  # k is static: two groups of 6
    assert solves_per_compile(SETTINGS) == 1  # k, n_experts and the labeller all differ


def test_idle_actor_takes_a_bucket_it_compiled_then_a_new_one_then_any():
    bucket = [512, 512, 256, 128, 128]  # shard -> its length bucket
    assert pick_shard([0, 1, 2, 3, 4], bucket, mine={128}, others={512}) == 3  # its own bucket first
    assert pick_shard([0, 1, 2, 3, 4], bucket, mine=set(), others={512}) == 2  # else one nobody compiled
    assert pick_shard([0, 1], bucket, mine={128}, others={512}) == 0  # else work rather than idle
    assert pick_shard([1, 4], bucket, mine=set(), others=set()) == 0  # fresh pool: largest first


@pytest.mark.slow
def test_pool_equals_local_and_broadcasts_once(ray_local, setup):
    agent, expert, encoder, local, local_stats = setup
    with RelabelPool(num_actors=2) as pool:
        submitted = []
        out, stats = pool.relabel(agent, expert, encoder, SETTINGS, progress=False, max_shard_transitions=800,
                                  on_submit=lambda actor, shard: submitted.append(shard), return_info=True)
        assert pool.puts == 2  # encoder and expert set, once per request, not per shard
        assert len(submitted) > 2  # several shards, so the broadcast really was shared
        assert len(pool.compiled) == 2 and all(pool.compiled.values())  # both actors worked
        # each one-CPU actor ran pinned to a core of its own (XLA sizes its thread pool by the affinity)
        cores = list(pool.last_cores.values())
        assert len(cores) == 2 and all(len(c) == 1 for c in cores) and cores[0] != cores[1]
    for got, want in zip(out, local):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-5)
    assert out[0].shape == (agent.num_transitions,)
    assert not np.allclose(out[0], out[1])  # k and N change the rewards
    # Sinkhorn diagnostics come back per episode, in episode order, as the local path gives them
    for got, want, setting in zip(stats, local_stats, SETTINGS):
        assert got.n_iters.shape == (agent.num_episodes, 1 if setting["labeller"] == "otr" else setting["n_experts"])
        np.testing.assert_array_equal(got.n_iters, want.n_iters)
        np.testing.assert_array_equal(got.converged, want.converged)
    assert len(set(stats[0].n_iters.ravel().tolist())) > 1  # iterations vary, so a shuffled order would show


@pytest.mark.slow
def test_killed_actor_is_replaced_and_rewards_identical(ray_local, setup):
    import ray

    agent, expert, encoder, local, _ = setup
    with RelabelPool(num_actors=2) as pool:
        killed = threading.Event()

        def kill_first(actor, shard):
            if not killed.is_set():
                killed.set()
                ray.kill(actor)  # dies with its shard in flight

        out = pool.relabel(agent, expert, encoder, SETTINGS[:1], progress=False, max_shard_transitions=800,
                           on_submit=kill_first)
        assert pool.replacements >= 1
    np.testing.assert_allclose(out[0], local[0], rtol=RTOL, atol=1e-5)


@pytest.mark.slow
def test_a_shard_that_keeps_killing_actors_fails_the_request(ray_local, setup, monkeypatch):
    from ailot import distributed

    agent, expert, encoder, _, _ = setup
    # XLA aborts at start-up on XLA_FLAGS that do not start with "--": every actor dies on its first shard
    monkeypatch.setattr(distributed, "_actor_env", lambda *a: {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "not-a-flag"})
    with RelabelPool(num_actors=1, max_shard_failures=2) as pool:
        with pytest.raises(RuntimeError, match="took down 2 actors in a row"):
            pool.relabel(agent, expert, encoder, SETTINGS[:1], progress=False)
        assert pool.replacements == 1  # one replacement tried, then the request failed instead of looping


def test_cpu_actors_keep_to_their_cpus(monkeypatch):
    from ailot.distributed import _actor_env

    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    one = _actor_env(False, 1)
    assert one["JAX_PLATFORMS"] == "cpu"
    assert one["XLA_FLAGS"].split() == ["--xla_dump_to=/tmp/x", "--xla_cpu_multi_thread_eigen=false"]
    assert "XLA_FLAGS" not in _actor_env(False, 4)  # several CPUs: XLA's own threading
    assert _actor_env(True) == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}


@pytest.mark.slow
def test_second_request_hits_the_cache(ray_local, setup, tmp_path):
    agent, expert, encoder, _, _ = setup
    cache = ArrayCache(str(tmp_path))

    class CountingPool:
        calls = 0

        def relabel(self, *args, **kw):
            CountingPool.calls += 1
            with RelabelPool(num_actors=1) as pool:
                return pool.relabel(*args, **kw)

    keyed = pipeline.relabel_settings(agent, expert, SETTINGS[:1], encoder, cache, pool=CountingPool(),
                                      progress=False)
    assert CountingPool.calls == 1
    pipeline.relabel_settings(agent, expert, SETTINGS[:1], encoder, cache, pool=CountingPool(), progress=False)
    assert CountingPool.calls == 1  # nothing recomputed
    key = next(iter(keyed))
    assert cache.get(key)["rewards"].shape == (agent.num_transitions,)
    summary = cache.meta(key)["sinkhorn"]  # what the trials' rows report (sinkhorn_converged, _iterations)
    assert summary["problems"] == agent.num_episodes and 0 < summary["converged"] <= 1
    assert 10 <= summary["iterations_median"] <= summary["iterations_max"] <= SETTINGS[0]["max_iterations"]


def test_default_pool_size_follows_pinning(ray_local):
    with RelabelPool() as pool:
        assert not pool.use_gpus and pool.num_actors == 2  # one pinned actor per CPU (2 here)
    with RelabelPool(pin_cpus=False) as pool:
        assert pool.num_actors == 1  # unpinned, each actor runs a thread per core: one per 2 CPUs


@pytest.mark.slow
def test_two_node_cluster_shards_land_on_both_nodes_and_survive_a_killed_actor(setup):
    """Last in this module: it shuts the module's local Ray down for a cluster of its own."""
    import ray
    from ray.cluster_utils import Cluster

    agent, expert, encoder, local, _ = setup
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    try:
        cluster.add_node(num_cpus=1, resources={"worker": 1})
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        with RelabelPool(num_actors=2) as pool:
            nodes = set(ray.get([a.node_id.remote() for a in pool.actors]))
            out = pool.relabel(agent, expert, encoder, SETTINGS[:1], progress=False, max_shard_transitions=800)
            killed = []  # then an actor killed mid-request on this multi-node cluster: replaced, same rewards

            def kill_first(actor, shard):
                if not killed:
                    killed.append(ray.get(actor.node_id.remote()))
                    ray.kill(actor)

            again = pool.relabel(agent, expert, encoder, SETTINGS[:1], progress=False, max_shard_transitions=800,
                                 on_submit=kill_first)
            assert pool.replacements >= 1 and killed
        assert len(nodes) == 2
        np.testing.assert_allclose(out[0], local[0], rtol=RTOL, atol=1e-5)
        np.testing.assert_allclose(again[0], local[0], rtol=RTOL, atol=1e-5)
    finally:
        ray.shutdown()
        cluster.shutdown()

