"""Relabelling on Ray: a pool of actors (one per GPU, else one per CPU slot) sharing a broadcast encoder.

The encoder and the expert set are `ray.put` once and passed to every task by reference. Agent trajectories
are cut into shards of one length bucket each (largest buckets first, so the long solves start early and
every actor compiles once per bucket); an actor embeds its shard once and solves every requested setting on
it. A shard whose actor dies is re-run on a replacement actor (a shard that takes down `max_shard_failures`
actors fails the request instead). The driver reassembles rewards in transition order. `ailot.labellers.label`
is the single-process path that gives the same rewards.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import numpy as np

from ailot import labellers
from ailot.data.episodes import Episodes, fit_bucket
from ailot.labellers import bucket_plan, expert_trajectories, solve_setting, solves_per_compile

log = logging.getLogger(__name__)


def _actor_env(use_gpu: bool, cpus: float = 1.0) -> dict[str, str]:
    if use_gpu:
        # one process per device; let JAX grow memory instead of grabbing 75% of the GPU up front
        return {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    env = {"JAX_PLATFORMS": "cpu"}
    if cpus < 2:
        # no Eigen threads in dots (faster one-episode solves: 3.06 s vs 4.26 s for the 10k-transition benchmark
        # on 2 cores); XLA's own thread pool ignores this and follows the affinity (`ailot.cores`)
        env["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false"]))
    return env


class RelabelWorker:
    """Holds nothing between calls but its compiled functions; one per device. A CPU actor pins itself to
    `pin_cpus` cores of its machine (`ailot.cores`) before JAX starts, so that XLA runs that many threads."""

    def __init__(self, pin_cpus: float = 0):
        from ailot import compile_cache, cores

        compile_cache.enable()
        self.cores = cores.claim(int(pin_cpus)) if pin_cpus >= 1 else []

    def release_cores(self) -> None:
        from ailot import cores

        cores.release()

    def device(self) -> str:
        import jax

        return str(jax.devices()[0])

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def solve(
        self,
        shard: list[np.ndarray],
        encoder,
        experts_by_n: dict[int, list[np.ndarray]],
        settings: list[dict[str, Any]],
        buckets: tuple[int, ...],
    ) -> dict[str, Any]:
        """Embed the shard once, then rewards for every setting: {"rewards": [setting][traj] -> [T], "stats":
        [setting] -> SinkhornStats of the shard's trajectories}."""
        prepared: dict[tuple, list[np.ndarray]] = {}  # (labeller, n or None) -> trajectories, prepared once

        def prepare(cls, key, trajs):
            if (cls.name, key) not in prepared:
                prepared[cls.name, key] = cls.prepare(trajs, encoder)
            return prepared[cls.name, key]

        out, stats = [], []
        for setting in settings:
            cls = labellers.get(setting["labeller"])
            n = int(setting.get("n_experts", 1))
            trajs, experts = prepare(cls, None, shard), prepare(cls, n, experts_by_n[n])
            rewards, info = solve_setting(setting, trajs, experts, buckets=buckets, return_info=True)
            out.append(rewards)
            stats.append(info)
        import ray

        return {"rewards": out, "stats": stats, "node_id": ray.get_runtime_context().get_node_id(),
                "pid": os.getpid(), "cores": self.cores}


def plan_shards(lengths: np.ndarray, num_actors: int, sizes, max_shard_transitions: int = 0) -> list[np.ndarray]:
    """Episode indices per shard: one length bucket (of the bucket lengths `sizes`) per shard, big buckets split
    so all actors get work. Largest buckets come first so the slowest solves start early.
    """
    lengths = np.asarray(lengths)
    buckets = np.array([fit_bucket(int(t), sizes) for t in lengths])
    total = int(lengths.sum())
    cap = max_shard_transitions or max(1, total // max(1, 2 * num_actors))
    shards = []
    for b in sorted(set(buckets.tolist()), reverse=True):
        idx = np.flatnonzero(buckets == b)
        per = max(1, cap // b)
        shards += [idx[i: i + per] for i in range(0, len(idx), per)]
    return shards


def pick_shard(queue: list[int], bucket: list[int], mine: set[int], others: set[int]) -> int:
    """Position in `queue` of the shard an idle actor takes: the first of a bucket it has compiled, else of one
    no other actor has, else the first (work beats an idle actor). A bucket costs each actor one compile."""
    for wanted in (lambda b: b in mine, lambda b: b not in others):
        for pos, shard_id in enumerate(queue):
            if wanted(bucket[shard_id]):
                return pos
    return 0


class RelabelPool:
    """A pool of Ray actors for relabelling. Use as a context manager; `ray.init` must have been called."""

    def __init__(self, num_actors: int = 0, use_gpus: bool | None = None, cpus_per_actor: float = 1.0,
                 max_shard_failures: int = 3, pin_cpus: bool = True):
        import ray

        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.use_gpus = gpus > 0 if use_gpus is None else use_gpus
        if num_actors <= 0:
            # pinned CPU actors each use their own cores; unpinned, each runs XLA threads on every core
            per_actor = max(1.0, cpus_per_actor) if pin_cpus else 2.0
            num_actors = gpus if self.use_gpus else max(1, int(resources.get("CPU", 1) // per_actor))
        self.num_actors = num_actors
        self._options = dict(
            num_gpus=1 if self.use_gpus else 0,
            num_cpus=cpus_per_actor,
            runtime_env={"env_vars": _actor_env(self.use_gpus, cpus_per_actor)},
            scheduling_strategy="SPREAD",
        )
        self._pin = cpus_per_actor if pin_cpus and not self.use_gpus else 0  # whole cores per CPU actor
        self._cls = ray.remote(RelabelWorker)
        self.actors = [self._new_actor() for _ in range(num_actors)]
        self.compiled: dict[int, set[int]] = {}  # id(actor) -> bucket lengths it has solved (compiled for)
        self.replacements = 0
        self.max_shard_failures = max_shard_failures  # actors one shard may take down before the request fails
        self.puts = 0  # objects put in the store (encoder, expert set): once per request
        self.last_cores: dict[int, list[int]] = {}  # pid -> cores pinned ([]: unpinned), actors of the last request

    def _new_actor(self):
        return self._cls.options(**self._options).remote(self._pin)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def shutdown(self) -> None:
        import ray

        # free the actors' cores before they go (a killed process lets go a moment later), so the trials
        # started next find them free
        with contextlib.suppress(ray.exceptions.RayError):
            ray.get([a.release_cores.remote() for a in self.actors], timeout=10)
        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def relabel(
        self,
        agent: Episodes,
        expert: Episodes | None,
        encoder,
        settings: list[dict[str, Any]],
        *,
        buckets: tuple[int, ...] | None = None,
        max_shard_transitions: int = 0,
        progress: bool = True,
        on_submit=None,
        return_info: bool = False,
    ):
        """Rewards [M] (transition order) for each OT setting, computed across the pool; with return_info, also
        each setting's `relabel.SinkhornStats` over the episodes (episode order).

        buckets: the padded lengths (`ailot.labellers.bucket_plan`; None plans them for these settings)."""
        import ray
        from tqdm.auto import tqdm

        if not settings:
            return []
        states = agent.states()
        ns = sorted({int(s.get("n_experts", 1)) for s in settings})
        experts_by_n = {n: expert_trajectories(expert, n) for n in ns}
        encoder_ref = ray.put(encoder)
        experts_ref = ray.put(experts_by_n)
        self.puts += 2
        if buckets is None:
            buckets = bucket_plan(agent, expert, solves=solves_per_compile(settings),
                                  backend="accelerator" if self.use_gpus else "cpu")  # the actors' device
        shards = plan_shards(agent.lengths, self.num_actors, buckets, max_shard_transitions)
        log.info("relabelling %d setting(s) x %d transitions: length buckets %s, %d shards on %d actors",
                 len(settings), agent.num_transitions, list(buckets), len(shards), self.num_actors)
        results: list[dict[str, Any] | None] = [None] * len(shards)
        pending: dict[Any, tuple[int, Any]] = {}
        queue = list(range(len(shards)))
        idle = list(self.actors)

        def submit(actor, shard_id):
            ref = actor.solve.remote([states[i] for i in shards[shard_id]], encoder_ref, experts_ref, settings,
                                     tuple(buckets))
            pending[ref] = (shard_id, actor)
            if on_submit is not None:
                on_submit(actor, shard_id)

        bucket = [fit_bucket(int(agent.lengths[idx].max()), buckets) for idx in shards]

        def next_shard(actor) -> int:
            mine = self.compiled.setdefault(id(actor), set())
            others = set().union(*(b for a, b in self.compiled.items() if a != id(actor)))
            return queue.pop(pick_shard(queue, bucket, mine, others))

        failures: dict[int, int] = {}  # shard -> actors lost on it
        bar = tqdm(total=int(agent.lengths.sum()), desc="relabel", unit="tr", disable=not progress)
        while queue or pending:
            while queue and idle:
                actor = idle.pop()
                shard_id = next_shard(actor)
                self.compiled[id(actor)].add(bucket[shard_id])
                submit(actor, shard_id)
            done, _ = ray.wait(list(pending), num_returns=1)
            ref = done[0]
            shard_id, actor = pending.pop(ref)
            try:
                out = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as err:
                failures[shard_id] = failures.get(shard_id, 0) + 1
                if failures[shard_id] >= self.max_shard_failures:
                    bar.close()
                    raise RuntimeError(
                        f"relabel shard {shard_id} ({len(shards[shard_id])} episodes of bucket {bucket[shard_id]}) "
                        f"took down {failures[shard_id]} actors in a row, so it is not retried again; the "
                        f"actor logs under Ray's session directory say why (out of memory, a bad XLA_FLAGS, ...). "
                        f"Last error: {err}") from err
                log.warning("relabel actor died on shard %d; re-running it on a replacement actor", shard_id)
                self.actors.remove(actor)
                self.compiled.pop(id(actor), None)
                replacement = self._new_actor()
                self.actors.append(replacement)
                self.replacements += 1
                idle.append(replacement)
                queue.insert(0, shard_id)
                continue
            results[shard_id] = out
            idle.append(actor)
            bar.update(int(agent.lengths[shards[shard_id]].sum()))
        bar.close()
        self.last_cores = {out["pid"]: out["cores"] for out in results}
        per_traj: list[list[np.ndarray | None]] = [[None] * agent.num_episodes for _ in settings]
        for shard_id, idx in enumerate(shards):
            for s in range(len(settings)):
                for i, r in zip(idx, results[shard_id]["rewards"][s]):
                    per_traj[s][i] = r
        rewards = [np.concatenate(p).astype(np.float32) for p in per_traj]
        if not return_info:
            return rewards
        from ailot.relabel import SinkhornStats

        stats = [SinkhornStats.gather([out["stats"][s] for out in results], shards) for s in range(len(settings))]
        return rewards, stats
