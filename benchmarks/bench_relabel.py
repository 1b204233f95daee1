"""Transitions per second of AILOT relabelling, every path side by side on the same data and settings.

    python benchmarks/bench_relabel.py --transitions 20000                 # 2-core CPU (the default size)
    python benchmarks/bench_relabel.py --transitions 1000000 --a-episodes 300 --device-note "1x H100"

Paths (all solve the same problems: k=1, alpha 5, tau 0.5, relative epsilon 1e-2, threshold 1e-3, at most
1000 Sinkhorn iterations, one expert trajectory; `ailot.relabel` defaults otherwise, which include the
over-relaxed Sinkhorn, momentum 1.6, for (b) and (c); (a) and (a') run plain Sinkhorn as research code does):

- (a)  research-code style: a Python loop over episodes, each solved alone at its exact length by a jitted
       ott-jax function (PointCloud cost on [x_t, x_t+k] concatenations, j1 window, Sinkhorn), so every
       distinct episode length compiles anew. `--a-episodes N` times only the first N episodes and
       extrapolates per transition (said so in the table).
- (a') the same loop, every episode padded to the longest one: `ailot_rewards` with a batch of one and plain
       Sinkhorn (momentum "none"), one compile.
- (b)  `ailot.relabel.ailot_rewards_bucketed`: episodes padded to length buckets, chunks of episodes solved
       by one Sinkhorn call (vmapped when a chunk holds more than one). The reference row uses the library
       defaults (chunk_size 1 on a CPU, 8 on an accelerator; buckets from `relabel.plan_buckets`; momentum
       1.6); the other (b) rows change one of them (`--chunk-sizes`; `--min-buckets` for power-of-two buckets
       from a minimum length instead of planned ones; `--momenta`).
- (c)  `ailot.distributed.RelabelPool` on a local Ray with 1 and 2 actors (one actor per GPU when Ray sees
       GPUs; a row needing more GPUs than there are is skipped), CPU actors pinned to a core each (the library
       default, `ailot.cores`) and, as `--pin` asks, unpinned. Ray startup is excluded.

Each path runs on a cleared JAX compilation cache, then `--steady-runs` (2) more times: "first run" includes
compilation (and, for (c), actor start-up and JAX import in the actors), "steady" is the fastest later run (a
pool's actor compiles a bucket when it first gets one, which can be in the second request). Rewards of every
path are compared with the (b) reference row and with a tightly converged solution (threshold 1e-5, at most 10000
iterations; untimed), max |difference| over the transitions both computed.

Data: synthetic embeddings shaped like D4RL medium-replay (episode lengths log-uniform in [20, 1000]: many
short episodes and a long tail). The expert is a smooth random walk (AR(1) velocity) of `--expert-length`
steps; each agent episode starts at a random point of it, moves along it at a random speed and drifts off it
by its own smooth walk. All embeddings are scaled so that the mean squared agent-expert distance is 1, so
Sinkhorn sees costs of the size an intent encoder gives and a realistic spread of iteration counts.
"""

from __future__ import annotations

import os

# Set before JAX starts: on a GPU the driver and the Ray actor share the device, so neither may grab 75% of it.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import functools  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from ott.geometry import geometry, pointcloud  # noqa: E402
from ott.problems.linear import linear_problem  # noqa: E402
from ott.solvers.linear import sinkhorn  # noqa: E402

from ailot import relabel  # noqa: E402
from ailot.data.episodes import Episodes, power_of_two_sizes  # noqa: E402

# The settings every path uses (the brief of this benchmark; smoke.yaml's relative form of epsilon).
K, ALPHA, TAU = 1, 5.0, 0.5
EPSILON, RELATIVE_EPSILON = 1e-2, True
THRESHOLD, MAX_ITERATIONS = 1e-3, 1000
SOLVER = dict(k=K, alpha=ALPHA, tau=TAU, epsilon=EPSILON, relative_epsilon=RELATIVE_EPSILON, threshold=THRESHOLD,
              max_iterations=MAX_ITERATIONS)
POOL_SETTING = {"labeller": "ailot", "n_experts": 1, "momentum": relabel.MOMENTUM, **SOLVER}
# the library defaults: the (b) reference row
# min_bucket 0 stands for the planned buckets (`relabel.plan_buckets`), m > 0 for powers of two from m
REF_CHUNK, REF_MIN_BUCKET, REF_MOMENTUM = relabel.default_chunk_size(), 0, relabel.MOMENTUM
TIGHT = dict(SOLVER, threshold=1e-5, max_iterations=10_000)  # the accuracy reference (untimed)


# ---------------------------------------------------------------------------------------------------- data


def episode_lengths(total: int, rng: np.random.Generator, low: int = 20, high: int = 1000) -> np.ndarray:
    """Lengths log-uniform in [low, high] summing exactly to total (the last one trimmed, never below 2)."""
    lengths: list[int] = []
    while sum(lengths) < total:
        lengths.append(int(round(np.exp(rng.uniform(np.log(low), np.log(high))))))
    lengths[-1] -= sum(lengths) - total
    if lengths[-1] < 2 and len(lengths) > 1:
        lengths[-2] += lengths.pop()
    return np.array(lengths, dtype=np.int64)


def smooth_walk(start: np.ndarray, length: int, rng: np.random.Generator, momentum: float = 0.9) -> np.ndarray:
    """[length, d]: x_t = x_t-1 + v_t, v_t = momentum * v_t-1 + unit Gaussian noise."""
    noise = rng.normal(size=(length, start.shape[0]))
    v = np.empty_like(noise)
    v[0] = noise[0]
    for t in range(1, length):
        v[t] = momentum * v[t - 1] + noise[t]
    return start + np.cumsum(v, axis=0) - v[0]


def synthetic(transitions: int, dim: int, expert_length: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(agent trajectories [T_i, d], expert trajectory [Te, d]) float32, mean squared agent-expert distance 1.

    Each agent episode follows the expert path from a random start at a random speed (0.5x-2x) and drifts off
    it by its own smooth walk, as replay data revisit the expert's states with worse policies. Sinkhorn then
    needs a spread of iterations (median ~60, some problems hit the 1000 cap at the defaults), close to what
    the README reports for psi embeddings; free random walks around the expert converge in ~20 and flatter.
    """
    rng = np.random.default_rng(seed)
    expert = smooth_walk(np.zeros(dim), expert_length, rng)
    spread = np.sqrt(np.mean(np.sum((expert - expert.mean(0)) ** 2, -1)))  # size of the expert walk
    agent = []
    for t in episode_lengths(transitions, rng):
        pos = np.clip(rng.integers(expert_length) + np.exp(rng.uniform(np.log(0.5), np.log(2.0))) * np.arange(t),
                      0, expert_length - 1)
        lo = np.floor(pos).astype(np.int64)
        w = (pos - lo)[:, None]
        on_path = (1 - w) * expert[lo] + w * expert[np.minimum(lo + 1, expert_length - 1)]
        drift = smooth_walk(np.zeros(dim), int(t), rng)
        agent.append(on_path + 0.5 * spread * drift / max(float(np.linalg.norm(drift[-1])), 1e-6))
    sample = np.concatenate(agent)[rng.integers(transitions, size=min(transitions, 2000))]
    msd = np.mean(relabel.sq_dists(jnp.asarray(sample), jnp.asarray(expert)))
    scale = 1.0 / np.sqrt(float(msd))
    return [(a * scale).astype(np.float32) for a in agent], (expert * scale).astype(np.float32)


def to_episodes(trajs: list[np.ndarray], name: str, expert: bool = False) -> Episodes:
    """Episodes holding `trajs` exactly where the labellers read them.

    Agent rewards are per transition, on `states()` (observations without the last row): each trajectory gets
    one extra final observation. An expert set is read whole (`expert_trajectories` takes every observation),
    so an expert trajectory of Te states is stored as Te observations and Te - 1 transitions.
    """
    obs = list(trajs) if expert else [np.concatenate([t, t[-1:]]) for t in trajs]
    n = [len(o) - 1 for o in obs]
    return Episodes(observations=obs, actions=[np.zeros((t, 1), np.float32) for t in n],
                    rewards=[np.zeros(t, np.float32) for t in n], terminations=[np.zeros(t, bool) for t in n],
                    truncations=[np.zeros(t, bool) for t in n], dataset_id=name)


class IdentityEncoder:
    """Stands in for the intent encoder: the synthetic data already are embeddings."""

    def embed(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32)


# ------------------------------------------------------------------------------------------------- paths


@functools.partial(jax.jit, static_argnames=("k", "threshold", "max_iterations"))
def research_solve(x, y, epsilon, alpha, tau, *, k, threshold, max_iterations):
    """(a): one unpadded episode x [Ta, d] vs one expert y [Te, d], written the way research code does it.

    Traced anew for every (Ta, Te): each distinct episode length is its own XLA compilation.
    """
    ta, te = x.shape[0], y.shape[0]
    xk = jnp.concatenate([x, x[jnp.minimum(jnp.arange(ta) + k, ta - 1)]], axis=-1)  # [x_t, x_min(t+k, Ta-1)]
    yk = jnp.concatenate([y, y[jnp.minimum(jnp.arange(te) + k, te - 1)]], axis=-1)
    cost = pointcloud.PointCloud(xk, yk).cost_matrix  # squared Euclidean on the concatenations
    j1 = jnp.argmin(cost[0])  # expert state nearest the agent's first state
    window = jnp.arange(te) >= j1
    a = jnp.full(ta, 1.0 / ta)
    b = jnp.where(window, 1.0 / (te - j1), 0.0)
    eps = epsilon * jnp.sum(jnp.where(window[None, :], cost, 0.0)) / (ta * (te - j1))  # relative to the mean
    geom = geometry.Geometry(cost_matrix=cost, epsilon=eps)
    out = sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations)(
        linear_problem.LinearProblem(geom, a=a, b=b))
    reward = alpha * jnp.exp(-tau * ta * jnp.sum(out.matrix * cost, axis=1))
    return reward, out.n_iters, out.converged


def path_a(agent, expert, episodes: int):
    rewards, iters, conv = [], [], []
    for x in agent[:episodes]:
        r, n, c = research_solve(x, expert, EPSILON, ALPHA, TAU, k=K, threshold=THRESHOLD,
                                 max_iterations=MAX_ITERATIONS)
        rewards.append(np.asarray(r))
        iters.append(int(n))
        conv.append(bool(c))
    return rewards, {"n_iters": np.array(iters), "converged": np.array(conv)}


def path_a2(agent, expert):
    tmax = max(len(x) for x in agent)
    kw = {k: v for k, v in SOLVER.items()}
    rewards = []
    for x in agent:
        padded = np.zeros((1, tmax, x.shape[1]), np.float32)
        padded[0, : len(x)] = x
        r = relabel.ailot_rewards(padded, [len(x)], expert[None], [len(expert)], chunk_size=1, momentum="none",
                                  **kw)
        rewards.append(r[0, : len(x)])
    return rewards, {}


def bucket_sizes(agent, min_bucket: int) -> tuple[int, ...] | None:
    return power_of_two_sizes([len(x) for x in agent], min_bucket) if min_bucket else None


def buckets_label(agent, expert, min_bucket: int) -> str:
    if min_bucket:
        return f"powers of two from {min_bucket}"
    return f"planned {list(relabel.plan_buckets([len(x) for x in agent], len(expert)))}"


def path_b(agent, expert, chunk_size: int, min_bucket: int, momentum=REF_MOMENTUM):
    return relabel.ailot_rewards_bucketed(agent, [expert], chunk_size=chunk_size,
                                          buckets=bucket_sizes(agent, min_bucket),
                                          momentum=momentum, **SOLVER), {}


# ---------------------------------------------------------------------------------------------- harness


@dataclass
class Row:
    path: str
    transitions: int
    first_s: float | None = None
    steady_s: float | None = None
    rewards: np.ndarray | None = None  # flat, transition order (a prefix of the data for (a) with --a-episodes)
    note: str = ""
    info: dict = field(default_factory=dict)


STEADY_RUNS = 2  # --steady-runs


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def timed_steady(fn):
    """(output, seconds) of the fastest of STEADY_RUNS calls: an actor of a pool compiles a bucket when it first
    gets one, which can be in the second call, so one repeat is not yet the steady state for 2 actors."""
    runs = [timed(fn) for _ in range(STEADY_RUNS)]
    return runs[-1][0], min(t for _, t in runs)


def run_local(name: str, fn, transitions: int, note: str = "") -> Row:
    """Run fn from a cleared compilation cache, then STEADY_RUNS more times: (first run incl. compile, steady)."""
    jax.clear_caches()
    (rewards, info), first = timed(fn)
    _, steady = timed_steady(fn)
    print(f"  {name}: first {first:.2f} s, steady {steady:.2f} s", flush=True)
    return Row(name, transitions, first, steady, np.concatenate(rewards), note, info)


def run_pool(agent_eps: Episodes, expert_eps: Episodes, num_actors: int, transitions: int, pin: bool = True) -> Row:
    import ray

    from ailot.distributed import RelabelPool

    name = f"(c) RelabelPool, {num_actors} actor{'s' if num_actors > 1 else ''}{'' if pin else ', unpinned'}"
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus and num_actors > gpus:
        print(f"  {name}: skipped, Ray sees {gpus} GPU(s)", flush=True)
        return Row(name, transitions, note=f"skipped: {gpus} GPU(s), one actor per GPU")
    t0 = time.perf_counter()
    # actors start asynchronously: their start-up is counted in the first request
    with RelabelPool(num_actors=num_actors, pin_cpus=pin) as pool:
        def request():
            return pool.relabel(agent_eps, expert_eps, IdentityEncoder(), [POOL_SETTING], progress=False)

        first_out = request()
        first = time.perf_counter() - t0
        out, steady = timed_steady(request)
        device = "GPU" if pool.use_gpus else "CPU"
        cores = list(pool.last_cores.values())
    print(f"  {name}: first {first:.2f} s, steady {steady:.2f} s, cores {cores}", flush=True)
    assert np.array_equal(first_out[0].shape, out[0].shape)
    pinning = f"pinned to cores {', '.join(map(str, cores))}" if all(cores) else f"cores {cores} ([]: unpinned)"
    return Row(name, transitions, first, steady, out[0], f"{device} actors {pinning}; first request incl. start-up")


def start_ray(num_cpus: int) -> str:
    import ray

    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))  # Ray reads it once, before init
    tmp = tempfile.mkdtemp(prefix="rayb", dir="/tmp")
    with warnings.catch_warnings():
        # Ray starts its daemons by fork + exec (subprocess), which Python flags once JAX has threads; the child
        # execs at once, so the deadlock the warning describes cannot happen here.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=tmp, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
    return tmp


# ------------------------------------------------------------------------------------------------ report


def parse_momentum(text: str):
    return text if text in ("none", "adaptive") else float(text)


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def max_diff(rewards: np.ndarray | None, ref: np.ndarray | None) -> float | None:
    if rewards is None or ref is None:
        return None
    return float(np.max(np.abs(rewards - ref[: len(rewards)])))  # (a) may cover only the first episodes


def table(rows: list[Row], tight: np.ndarray | None) -> str:
    ref = next((r for r in rows if r.path.startswith("(b)") and "reference" in r.path), None)
    a = next((r for r in rows if r.path.startswith("(a)") and r.first_s), None)
    a_rate = a.transitions / a.first_s if a else None
    lines = ["| path | transitions | first run (s) | steady (s) | tr/s first run | tr/s steady | "
             "first-run speed-up vs (a) | max abs diff vs (b) | max abs diff vs tight | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        rate_first = r.transitions / r.first_s if r.first_s else None
        rate_steady = r.transitions / r.steady_s if r.steady_s else None
        speed = rate_first / a_rate if (rate_first and a_rate) else None
        diff = max_diff(r.rewards, None if ref is None else ref.rewards)
        lines.append(f"| {r.path} | {r.transitions} | {fmt(r.first_s, '.2f')} | {fmt(r.steady_s, '.2f')} | "
                     f"{fmt(rate_first, ',.0f')} | {fmt(rate_steady, ',.0f')} | "
                     f"{'1.00x' if r is a else (fmt(speed, '.2f') + 'x' if speed else 'n/a')} | "
                     f"{fmt(diff, '.2e')} | {fmt(max_diff(r.rewards, tight), '.2e')} | {r.note} |")
    return "\n".join(lines)


def main() -> None:
    global STEADY_RUNS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=20_000,
                        help="agent transitions (default 20000 for a 2-core CPU; GPU figures use 1000000)")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension d")
    parser.add_argument("--expert-length", type=int, default=1000, help="steps of the one expert trajectory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--a-episodes", type=int, default=0,
                        help="time (a) on the first N episodes only and extrapolate per transition (0: all)")
    parser.add_argument("--paths", default="a,a2,b,c", help="comma-separated subset of a,a2,b,c")
    parser.add_argument("--chunk-sizes", default="1,8,32", help="(b) rows: chunk_size values, planned buckets")
    parser.add_argument("--min-buckets", default="64,256",
                        help="(b) rows: power-of-two buckets from each of these lengths instead of planned ones")
    parser.add_argument("--momenta", default="none",
                        help="(b) rows: more Sinkhorn momentum values (none, adaptive, or a weight in (0, 2))")
    parser.add_argument("--no-tight", action="store_true", help="skip the tightly converged accuracy reference")
    parser.add_argument("--actors", default="1,2", help="(c) rows: actor counts")
    parser.add_argument("--steady-runs", type=int, default=STEADY_RUNS,
                        help="calls after the first; steady = the fastest of them")
    parser.add_argument("--pin", default="on,off", help="(c) rows: CPU actors pinned to their cores (ailot.cores) "
                        "or not ('on', 'off' or both)")
    parser.add_argument("--ray-cpus", type=int, default=2, help="num_cpus of the local Ray for (c)")
    parser.add_argument("--device-note", default="", help="free text for the report header (machine, load)")
    parser.add_argument("--out", default=None, help="also append the report to this markdown file")
    args = parser.parse_args()
    if args.steady_runs < 1:
        parser.error("--steady-runs must be at least 1")
    STEADY_RUNS = args.steady_runs
    paths = {p.strip() for p in args.paths.split(",") if p.strip()}
    unknown = paths - {"a", "a2", "b", "c"}
    if unknown:
        parser.error(f"unknown paths {sorted(unknown)}; use a subset of a,a2,b,c")

    agent, expert = synthetic(args.transitions, args.dim, args.expert_length, args.seed)
    lengths = np.array([len(x) for x in agent])
    total = int(lengths.sum())
    header = [
        f"AILOT relabelling: {total} transitions in {len(agent)} episodes (lengths {lengths.min()}-{lengths.max()}, "
        f"median {int(np.median(lengths))}, {len(set(lengths.tolist()))} distinct), d={args.dim}, one expert of "
        f"{len(expert)} steps, seed {args.seed}",
        f"settings: k={K} alpha={ALPHA} tau={TAU} epsilon={EPSILON} relative={RELATIVE_EPSILON} "
        f"threshold={THRESHOLD} max_iterations={MAX_ITERATIONS}",
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.device_count()} device), "
        f"{os.cpu_count()} CPUs visible" + (f"; {args.device_note}" if args.device_note else ""),
    ]
    print("\n".join(header), flush=True)
    rows: list[Row] = []
    if "a" in paths:
        n_eps = min(args.a_episodes or len(agent), len(agent))
        n_tr = int(lengths[:n_eps].sum())
        note = "" if n_eps == len(agent) else (
            f"first {n_eps} of {len(agent)} episodes ({len(set(lengths[:n_eps].tolist()))} distinct lengths): "
            f"extrapolated per transition")
        row = run_local("(a) per-episode jit, exact lengths", functools.partial(path_a, agent, expert, n_eps), n_tr,
                        note)
        it, conv = row.info["n_iters"], row.info["converged"]
        header.append(f"(a) Sinkhorn: median {int(np.median(it))} iterations, max {int(it.max())}, "
                      f"{int(conv.sum())}/{len(conv)} converged")
        rows.append(row)
    if "a2" in paths:
        rows.append(run_local(f"(a') per-episode, padded to {lengths.max()}", functools.partial(path_a2, agent, expert),
                              total))
    if "b" in paths:
        reference = (REF_CHUNK, REF_MIN_BUCKET, REF_MOMENTUM)
        combos = [reference]
        combos += [(int(c), REF_MIN_BUCKET, REF_MOMENTUM) for c in args.chunk_sizes.split(",") if c]
        combos += [(REF_CHUNK, int(m), REF_MOMENTUM) for m in args.min_buckets.split(",") if m]
        combos += [(REF_CHUNK, REF_MIN_BUCKET, parse_momentum(m)) for m in args.momenta.split(",") if m]
        for combo in dict.fromkeys(combos):  # the reference first, each combination once
            chunk, mb, mom = combo
            ref = " [reference]" if combo == reference else ""
            rows.append(run_local(f"(b) chunk {chunk}, {buckets_label(agent, expert, mb)}, momentum {mom}{ref}",
                                  functools.partial(path_b, agent, expert, chunk, mb, mom), total))
    if "c" in paths:
        import ray

        tmp = start_ray(args.ray_cpus)
        try:
            agent_eps = to_episodes(agent, "synthetic-agent")
            expert_eps = to_episodes([expert], "synthetic-expert", expert=True)
            for pin in (v == "on" for v in args.pin.split(",") if v):
                for n in (int(v) for v in args.actors.split(",") if v):
                    rows.append(run_pool(agent_eps, expert_eps, n, total, pin))
        finally:
            ray.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)
    tight = None
    if not args.no_tight:
        print("  tight reference (threshold 1e-5, untimed)", flush=True)
        tight = np.concatenate(relabel.ailot_rewards_bucketed(agent, [expert], **TIGHT))
    report = "\n".join(["", *[f"- {h}" for h in header], "", table(rows, tight), ""])
    print(report, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(report)


if __name__ == "__main__":
    main()
