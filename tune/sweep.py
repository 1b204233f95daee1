"""Run an AILOT sweep: datasets -> intent encoders -> relabelled rewards -> learner trials -> Parquet.

    python tune/sweep.py --config tune/configs/smoke.yaml            # local Ray starts by itself
    ray job submit --working-dir . -- python tune/sweep.py --config tune/configs/<name>.yaml
    python tune/sweep.py --config ... --resume                       # continue an interrupted sweep

Pretraining and relabelling are content-addressed under <storage>/<name>/cache, so they run once per
unique input; finished trials are never rerun on --resume.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

# Allow `python tune/sweep.py` from a checkout without installing (ray job submit --working-dir .).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ailot.errors import AilotInputError

log = logging.getLogger("ailot.sweep")


LOOPBACK = "127.0.0.1"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # one line, like the AilotInputError path in main(), instead of argparse's usage block + error
        self.exit(2, f"error: {message}. Fix: run e.g. python tune/sweep.py --config tune/configs/smoke.yaml "
                     "(--help lists the flags)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="sweep YAML, e.g. tune/configs/smoke.yaml")
    p.add_argument("--resume", action="store_true", help="continue the sweep in its storage directory")
    p.add_argument("--storage", default=None, help="override the config's storage directory/URI")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a new local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a new local Ray")
    p.add_argument("--ray-temp-dir", default=None, help="temp/session directory for a new local Ray")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard with a new local Ray")
    p.add_argument("--dashboard-host", default=LOOPBACK,
                   help="address the local dashboard binds to (default 127.0.0.1: reach it through an SSH tunnel; "
                        "0.0.0.0 exposes it, and the job API, to the network)")
    p.add_argument("--dashboard-port", type=int, default=8265, help="port of the local dashboard")
    p.add_argument("--no-plots", action="store_true", help="skip writing figures")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def ray_init_kwargs(args) -> dict:
    """The ray.init arguments: an existing cluster's address, or a new local Ray for this sweep only whose
    node and dashboard bind to loopback unless --dashboard-host says otherwise."""
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        return {"address": address, "log_to_driver": True}
    if args.dashboard_host != LOOPBACK:
        log.warning("the Ray dashboard (and its job API) will listen on %s: anyone who can reach that address "
                    "can run code here; prefer the default and an SSH tunnel (cluster/README.md)", args.dashboard_host)
    return {
        "num_cpus": args.num_cpus,
        "include_dashboard": args.dashboard,
        "dashboard_host": args.dashboard_host,
        "dashboard_port": args.dashboard_port,
        "_node_ip_address": LOOPBACK,
        "_temp_dir": args.ray_temp_dir,
        "log_to_driver": True,
    }


def init_ray(args) -> None:
    import ray

    if ray.is_initialized():
        return
    ray.init(**ray_init_kwargs(args))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return run(args)
    except AilotInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args) -> int:
    import dataclasses

    from ailot.config import load_sweep_config

    # Everything a user can get wrong fails here, before Ray starts: the config (learner and ICVF settings
    # included), then the datasets and their evaluation environments.
    cfg = load_sweep_config(args.config)
    if args.storage:
        cfg = dataclasses.replace(cfg, storage=args.storage)
    from ailot import pipeline
    from ailot import sweep as stages

    t0 = time.time()
    pairs = {ds.label: pipeline.load_pair(ds, progress=not args.quiet) for ds in cfg.datasets}
    init_ray(args)
    summary = stages.run_sweep(cfg, resume=args.resume, progress=not args.quiet, plots=not args.no_plots,
                               pairs=pairs)
    print(summary)
    print(f"sweep {cfg.name!r} finished in {time.time() - t0:.0f}s; results: {cfg.parquet_path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
