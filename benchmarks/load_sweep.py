"""Load: a sweep of many tiny trials (default 200: IQL [8, 8], 20 updates, one 1-episode evaluation each; zero and
true rewards x 100 seeds) on a new local Ray. Checks that every trial's row arrived (exactly one per trial and
step) and prints the wall time and the driver's peak RSS.

    python benchmarks/load_sweep.py --trials 200 --num-cpus 2
    python benchmarks/load_sweep.py --trials 40 --compare-reuse     # trial processes reused vs one per trial

Needs the tiny generated UMaze pair (made here, in --minari-root, when missing). Each Tune trial is its own
actor process (JAX import + compilation + a 300-step evaluation episode), so the time is dominated by per-trial
startup, not by training; `tests/test_faults.py::test_many_tiny_trials_all_complete` is the small in-suite version.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200, help="even: seeds = trials / 2, x (zero, true) labellers")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--storage", default=None, help="results directory (default: a new temp dir)")
    p.add_argument("--minari-root", default=str(Path(tempfile.gettempdir()) / "ailot-load-minari"))
    p.add_argument("--no-reuse-actors", action="store_true", help="a new trial process per trial")
    p.add_argument("--compare-reuse", action="store_true",
                   help="run the sweep twice, with and without reused trial processes, and print the ratio")
    args = p.parse_args(argv)
    if args.compare_reuse:
        runs = {reuse: sweep_once(args, reuse) for reuse in (False, True)}
        if not all(runs.values()):
            return 1
        print(f"reused trial processes: {runs[False] / runs[True]:.2f}x faster ({runs[False]:.0f}s -> "
              f"{runs[True]:.0f}s for {args.trials} trials)")
        return 0
    return 0 if sweep_once(args, not args.no_reuse_actors) else 1


def sweep_once(args, reuse_actors: bool) -> float:
    """Run the sweep on a new local Ray; print what arrived; return the wall time (0 when rows are missing)."""
    os.environ["MINARI_DATASETS_PATH"] = args.minari_root
    import ray
    from conftest import TINY_UMAZE

    from ailot import pipeline, results, sweep
    from ailot.config import sweep_config_from_dict
    from ailot.data.generate import generate_pointmaze

    agent_id, expert_id = generate_pointmaze(root=args.minari_root, **TINY_UMAZE)
    storage = tempfile.mkdtemp(prefix="ailot-load-") if args.storage is None or args.compare_reuse else args.storage
    cfg = sweep_config_from_dict({
        "name": "load",
        "storage": storage,
        "datasets": [{"name": "umaze", "agent": agent_id, "expert": expert_id, "task_family": "maze2d"}],
        "labellers": {"zero": {}, "true": {}},
        "learners": {"iql": {"hidden_dims": [8, 8]}},
        "seeds": list(range(args.trials // 2)),
        "train": {"steps": 20, "eval_every": 20, "eval_episodes": 1, "eval_envs": 1, "chunk": 20, "batch_size": 32},
        "resources": {"cpus_per_trial": 1, "max_failures": 1, "reuse_actors": reuse_actors},
    })
    n = len(cfg.trials())
    ray_tmp = tempfile.mkdtemp(prefix="rl", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, _temp_dir=ray_tmp, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    t0 = time.time()
    try:
        sweep.run_sweep(cfg, progress=False, plots=False)
    finally:
        ray.shutdown()
    seconds = time.time() - t0
    df = results.load(cfg.parquet_path)
    expected = {(pipeline.trial_id(t), s) for t in cfg.trials() for s in pipeline.eval_steps(cfg.train)}
    got = set(zip(df["trial_id"], df["step"].astype(int)))
    dup = int(df.duplicated(results.KEY).sum())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} trials (reuse_actors={reuse_actors}): {df['trial_id'].nunique()} with results, {len(df)} rows "
          f"({len(expected - got)} missing, {dup} duplicated) in {seconds:.0f}s ({seconds / n:.1f}s per trial); "
          f"driver peak RSS {rss_mb:.0f} MB")
    return seconds if got == expected and not dup else 0.0


if __name__ == "__main__":
    raise SystemExit(main())
