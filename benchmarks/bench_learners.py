"""Updates per second of the learners (default networks, batch 256): the scan-chunked `train` (one dispatch
per chunk) against a Python loop of one jitted `update` per step, side by side.

    python benchmarks/bench_learners.py --steps 500
    python benchmarks/bench_learners.py --steps 500 --learners smodice dwbc iq_learn bc_expert   # expert readers
    python benchmarks/bench_learners.py --steps 200 --learners iql --rllib    # + RLlib's IQL (torch), same data

Synthetic data with HalfCheetah's dimensions (obs 17, actions 6) and a 1000-transition expert set (one
expert episode, the DESIGN's top-1), which only the learners with an `expert_input` read. SMODICE is timed in
both phases: `smodice:disc` (its first disc_steps updates train only the discriminator) and `smodice` (V and
policy). Compile time is excluded (each path is run once before timing).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from ailot import learners
from ailot.learners import base


def synthetic_data(n: int, obs_dim: int, action_dim: int, seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    data = {
        "observations": rng.normal(size=(n, obs_dim)),
        "actions": rng.uniform(-1, 1, (n, action_dim)),
        "rewards": rng.normal(size=n),
        "next_observations": rng.normal(size=(n, obs_dim)),
        "terminals": (rng.random(n) < 0.01).astype(np.float64),
    }
    data.update(base.expert_arrays(rng.normal(size=(1000, obs_dim)), rng.uniform(-1, 1, (1000, action_dim)),
                                   rng.normal(size=(1000, obs_dim)), np.zeros(1000)))
    return {k: jax.device_put(v.astype(np.float32)) for k, v in data.items()}


def time_scan(learner, data, steps: int, batch: int, chunk: int) -> float:
    learners.train(learner, data, min(chunk, steps), batch, chunk=min(chunk, steps))  # compile
    t0 = time.perf_counter()
    out, _ = learners.train(learner, data, steps, batch, chunk=chunk)
    jax.block_until_ready(out)
    return steps / (time.perf_counter() - t0)


def time_loop(learner, data, steps: int, batch: int) -> float:
    data = base.prepare_data(learner, data)  # the arrays `train` samples for this learner
    warm, b = learners.sample_batch(learner, data, batch)  # compile both jitted calls
    jax.block_until_ready(warm.update(b))
    t0 = time.perf_counter()
    for _ in range(steps):
        learner, b = learners.sample_batch(learner, data, batch)
        learner, _ = learner.update(b)
    jax.block_until_ready(learner)
    return steps / (time.perf_counter() - t0)


def time_rllib(name: str, data, steps: int, batch: int, obs_dim: int, action_dim: int) -> float:
    """Updates/s of RLlib's learner for `name` (ailot.learners.rllib, torch, the papers' settings) on the same
    transitions, sampled uniformly as the sweep's RLlib trials do."""
    from ray.rllib.core.columns import Columns

    from ailot.learners.rllib import RLlibLearner, rllib_algo_config

    settings = learners.make_config(f"rllib_{name}", {"max_steps": steps})
    algo = rllib_algo_config(settings, obs_dim, -np.ones(action_dim), np.ones(action_dim), batch, seed=0)
    learner = RLlibLearner(settings, algo, 0)
    columns = {Columns.OBS: "observations", Columns.ACTIONS: "actions", Columns.REWARDS: "rewards",
               Columns.NEXT_OBS: "next_observations"}
    arrays = {c: np.asarray(data[k], np.float32) for c, k in columns.items()}
    arrays[Columns.TERMINATEDS] = np.asarray(data["terminals"], bool)
    arrays[Columns.TRUNCATEDS] = np.zeros(len(arrays[Columns.OBS]), bool)
    learner.train(arrays, 2)  # warm-up
    t0 = time.perf_counter()
    learner.train(arrays, steps)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="timed updates per path and learner")
    parser.add_argument("--chunk", type=int, default=None, help="updates per scan dispatch (default: --steps)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learners", nargs="+", default=["iql", "diffusion_ql"], choices=sorted(learners.LEARNERS))
    parser.add_argument("--dataset-size", type=int, default=100_000)
    parser.add_argument("--rllib", action="store_true",
                        help="also time RLlib's IQL/BC where those are benchmarked (needs the rllib extra)")
    args = parser.parse_args()
    chunk = args.chunk or args.steps
    obs_dim, action_dim = 17, 6
    data = synthetic_data(args.dataset_size, obs_dim, action_dim)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device), "
          f"batch {args.batch_size}, {args.steps} steps, chunk {chunk}, default networks")
    rows = []
    for name in args.learners:
        cfg = learners.make_config(name)
        learner = learners.get_learner(name).create(0, obs_dim, action_dim, cfg)
        variants = [(name, learner)]
        if name == "smodice":  # time the discriminator phase and, from step disc_steps on, the V/policy phase
            variants = [("smodice:disc", learner), (name, learner.replace(step=jnp.int32(cfg.disc_steps)))]
        for label, start in variants:
            scan = time_scan(start, data, args.steps, args.batch_size, chunk)
            loop = time_loop(start, data, args.steps, args.batch_size)
            rows.append((label, scan, loop))
    print(f"{'learner':<14}{'scan upd/s':>12}{'loop upd/s':>12}{'scan/loop':>11}")
    for name, scan, loop in rows:
        print(f"{name:<14}{scan:>12.1f}{loop:>12.1f}{scan / loop:>10.2f}x")
    if args.rllib:
        for name, scan, _ in [r for r in rows if r[0] in ("iql", "bc")]:
            rl = time_rllib(name, data, args.steps, args.batch_size, obs_dim, action_dim)
            print(f"rllib_{name:<8}{rl:>12.1f} upd/s (torch, one update per call); ailot scan is {scan / rl:.1f}x")


if __name__ == "__main__":
    main()
