"""Measure the bucket plan's cost model on this machine's JAX backend and compare it with `ailot.relabel`'s constants.

    python benchmarks/calibrate_plan.py                                   # about 1 min on a 2-core CPU
    python benchmarks/calibrate_plan.py --device-note "1x H200" --out benchmarks/README.md

`relabel.plan_buckets` chooses length buckets by modelled time: `COMPILE_SECONDS` per bucket, plus per episode
`PLANNED_ITERATIONS` Sinkhorn iterations costing `fixed + per_cell * bucket * Te` each (`ITERATION_SECONDS`).
This script measures both on the default backend, with the library's default chunk size and momentum:

- solve cost: AILOT solves of exactly `PLANNED_ITERATIONS` iterations (threshold 1e-30, so no error check ever
  stops them), per episode, over bucket lengths x expert lengths; a least squares fit `F + P * T * Te` (relative
  errors) gives the plan's constants, fixed = F / PLANNED_ITERATIONS and per_cell = P / PLANNED_ITERATIONS.
  They include what an episode costs besides its iterations (the call, the cost matrix, the rewards); solves of
  3x as many iterations split the two (printed, not used by the plan).
- compile cost: the first call on a new bucket length (trace + XLA compile + one short solve) minus the same
  call once compiled, as `solve_bucketed` pays it per bucket.

It prints a table of the measurements, the fit, the library's current constants, and the plan each set of
constants gives for a medium-replay-like dataset of `--transitions` transitions.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from ailot import relabel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_relabel import episode_lengths  # noqa: E402  (medium-replay-like lengths, as benchmarked)

SHORT = relabel.PLANNED_ITERATIONS  # fixed iteration counts (multiples of ott's inner_iterations = 10)
LONG = 3 * SHORT


def problems(n: int, length: int, expert_length: int, dim: int, rng: np.random.Generator):
    """n agent episodes of `length` steps and one expert of `expert_length`, scaled so that the mean squared
    agent-expert distance is about 1 (the costs an intent encoder gives)."""
    agent = rng.normal(size=(n, length, dim)).astype(np.float32) / np.sqrt(2 * dim)
    expert = rng.normal(size=(1, expert_length, dim)).astype(np.float32) / np.sqrt(2 * dim)
    return agent, np.full(n, length, np.int32), expert, np.array([expert_length], np.int32)


def solve(args, iterations: int, chunk: int):
    """One steady, fixed-iteration AILOT call; returns (seconds, iterations run per problem)."""
    rewards, stats = relabel.ailot_rewards(*args, relative_epsilon=True, epsilon=1e-2, threshold=1e-30,
                                           max_iterations=iterations, chunk_size=chunk, return_info=True)
    return rewards, stats


def timed(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def solve_seconds(length: int, expert_length: int, chunk: int, dim: int, rng, repeats: int) -> dict[int, float]:
    """Seconds per episode of a [length, expert_length] solve of SHORT and of LONG iterations."""
    args = problems(chunk, length, expert_length, dim, rng)
    times = {}
    for iterations in (SHORT, LONG):
        _, stats = solve(args, iterations, chunk)  # compile
        ran = int(stats.n_iters.min())
        if ran != iterations:
            raise RuntimeError(f"[{length}, {expert_length}]: Sinkhorn stopped after {ran} of {iterations} "
                               "iterations (diverged?); the fit needs fixed-iteration solves")
        times[iterations] = timed(lambda n=iterations: solve(args, n, chunk)[0], repeats) / chunk
    return times


def compile_seconds(length: int, expert_length: int, chunk: int, dim: int, rng) -> float:
    """First call on a new bucket length minus the same call compiled (what `solve_bucketed` pays per bucket)."""
    args = problems(chunk, length, expert_length, dim, rng)
    args = (np.zeros_like(args[0]), np.ones(chunk, np.int32), args[2], args[3])  # `_warm_up`'s dummies

    def call():
        return relabel.ailot_rewards(*args, relative_epsilon=True, epsilon=1e-2, chunk_size=chunk)

    first = timed(call, 1)
    return first - timed(call, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="16,64,256,1024", help="bucket lengths T to measure")
    parser.add_argument("--expert-lengths", default="200,1000", help="expert lengths Te to measure")
    parser.add_argument("--compile-lengths", default="64,512", help="bucket lengths whose compile time is measured")
    parser.add_argument("--dim", type=int, default=64, help="embedding dimension d")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per point (the best is kept)")
    parser.add_argument("--transitions", type=int, default=1_000_000, help="dataset size for the plan comparison")
    parser.add_argument("--device-note", default="", help="free text for the report header")
    parser.add_argument("--out", default=None, help="also append the report to this markdown file")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    backend = "cpu" if jax.default_backend() == "cpu" else "accelerator"
    chunk = relabel.default_chunk_size()
    lengths = [int(v) for v in args.lengths.split(",")]
    expert_lengths = [int(v) for v in args.expert_lengths.split(",")]

    rows = []
    for te in expert_lengths:
        for t in lengths:
            times = solve_seconds(t, te, chunk, args.dim, rng, args.repeats)
            rows.append((t, te, times))
            print(f"solve [{t:5d}, {te:5d}]: {times[SHORT] * 1e3:8.3f} ms per episode ({SHORT} iterations), "
                  f"{times[LONG] * 1e3:8.3f} ms ({LONG})", flush=True)
    cells = np.array([t * te for t, te, _ in rows], float)
    seconds = np.array([times[SHORT] for _, _, times in rows])
    design = np.stack([np.ones_like(cells), cells], axis=1)
    # relative errors matter (small problems are as important to the plan as large ones): weight by 1 / time
    (total_fixed, total_per_cell), *_ = np.linalg.lstsq(design / seconds[:, None], np.ones_like(seconds), rcond=None)
    fitted = total_fixed + total_per_cell * cells
    fixed, per_cell = total_fixed / SHORT, total_per_cell / SHORT

    compiles = []
    for t in [int(v) for v in args.compile_lengths.split(",")]:
        compiles.append((t, compile_seconds(t, expert_lengths[-1], chunk, args.dim, rng)))
        print(f"compile [{t:5d}, {expert_lengths[-1]:5d}]: {compiles[-1][1]:.2f} s", flush=True)
    compile_mean = float(np.mean([c for _, c in compiles]))

    data = episode_lengths(args.transitions, np.random.default_rng(1))
    current = (relabel.COMPILE_SECONDS[backend], relabel.ITERATION_SECONDS[backend])
    try:
        relabel.COMPILE_SECONDS[backend] = compile_mean
        relabel.ITERATION_SECONDS[backend] = (float(fixed), float(per_cell))
        measured_plan = relabel.plan_buckets(data, max(expert_lengths), backend=backend)
    finally:
        relabel.COMPILE_SECONDS[backend], relabel.ITERATION_SECONDS[backend] = current
    current_plan = relabel.plan_buckets(data, max(expert_lengths), backend=backend)

    dev = jax.devices()[0]
    lines = [f"### Bucket-plan calibration: {dev.platform} ({getattr(dev, 'device_kind', '')}), "
             f"backend class `{backend}`, chunk size {chunk}" + (f"; {args.device_note}" if args.device_note else ""),
             "", f"`python benchmarks/calibrate_plan.py` (jax {jax.__version__}, momentum {relabel.MOMENTUM}, "
             f"d = {args.dim}, best of {args.repeats})", "",
             f"| T | Te | ms / episode ({SHORT} iterations) | fit | fit error | us / extra iteration | "
             f"ms / episode besides iterations |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for (t, te, times), f in zip(rows, fitted):
        extra = (times[LONG] - times[SHORT]) / (LONG - SHORT)
        s = times[SHORT]
        lines.append(f"| {t} | {te} | {s * 1e3:.3f} | {f * 1e3:.3f} | {(f - s) / s:+.0%} | {extra * 1e6:.2f} | "
                     f"{(s - SHORT * extra) * 1e3:.3f} |")
    lines += ["", "| constant | measured | in `ailot.relabel` |", "|---|---:|---:|",
              f"| `COMPILE_SECONDS['{backend}']` | {compile_mean:.2f} s "
              f"({', '.join(f'{c:.2f} at T={t}' for t, c in compiles)}) | {current[0]:.2f} s |",
              f"| `ITERATION_SECONDS['{backend}']` fixed | {fixed * 1e6:.2f} us | {current[1][0] * 1e6:.2f} us |",
              f"| `ITERATION_SECONDS['{backend}']` per cell | {per_cell * 1e9:.4f} ns | {current[1][1] * 1e9:.4f} ns |",
              "", f"Plan for {len(data)} medium-replay-like episodes ({data.sum()} transitions) against a "
              f"{max(expert_lengths)}-step expert:", "",
              f"- measured constants: {len(measured_plan)} buckets {list(measured_plan)}",
              f"- library constants: {len(current_plan)} buckets {list(current_plan)}", ""]
    report = "\n".join(lines)
    print("\n" + report)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + report)


if __name__ == "__main__":
    main()
