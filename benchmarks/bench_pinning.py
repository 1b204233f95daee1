"""A whole sweep run twice side by side, with `resources.pin_cpus` off and on, each from scratch on a new local
Ray: wall time per stage and in all, per-trial wall times, and the last normalized score of every trial.

    python benchmarks/bench_pinning.py --config tune/configs/smoke.yaml --num-cpus 2

Each run gets its own empty storage directory, so both pretrain the intent encoders, relabel and train every
trial (nothing comes from a cache). With pinning on, every ICVF task, CPU relabel actor and trial process holds
its CPUs' worth of cores (`ailot.cores`), so XLA runs that many threads in it; off, each runs a thread per core
of the machine. The two runs' scores differ a little: thread count changes XLA's summation order.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import secrets
import tempfile
import time


class StageClock(logging.Handler):
    """Timestamps of the sweep's "stage i/5" log lines."""

    def __init__(self):
        super().__init__()
        self.marks: list[tuple[str, float]] = []

    def emit(self, record):
        m = re.match(r"stage (\d)/5", record.getMessage())
        if m:
            self.marks.append((m.group(1), time.time()))


def run_once(cfg, pin: bool, num_cpus: int) -> dict:
    import ray

    from ailot import pipeline, results, sweep

    cfg = dataclasses.replace(cfg, storage=tempfile.mkdtemp(prefix=f"ailot-pin-{'on' if pin else 'off'}-"),
                              resources=dataclasses.replace(cfg.resources, pin_cpus=pin))
    pairs = {ds.label: pipeline.load_pair(ds, progress=False) for ds in cfg.datasets}
    ray.init(num_cpus=num_cpus, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="rp", dir="/tmp"),
             _node_ip_address="127.0.0.1", log_to_driver=False)
    clock = StageClock()
    logging.getLogger("ailot.sweep").addHandler(clock)
    t0 = time.time()
    try:
        sweep.run_sweep(cfg, progress=False, plots=False, pairs=pairs)
    finally:
        logging.getLogger("ailot.sweep").removeHandler(clock)
        ray.shutdown()
    total = time.time() - t0
    marks = clock.marks + [("end", t0 + total)]
    stages = {f"stage {a}": b_t - a_t for (a, a_t), (_, b_t) in zip(marks, marks[1:])}
    df = results.load(cfg.parquet_path)
    last = df.sort_values("step").groupby("trial_id").tail(1)
    last = last.assign(method=last["labeller"] + "+" + last["learner"]).set_index("method")
    return {"total": total, "stages": stages, "trial_s": last["wall_time_s"], "score": last["normalized_score"],
            "storage": cfg.storage}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="tune/configs/smoke.yaml")
    p.add_argument("--num-cpus", type=int, default=2, help="num_cpus of each local Ray")
    p.add_argument("--device-note", default="", help="free text for the report (machine, load)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("ailot.sweep").setLevel(logging.INFO)  # its stage lines time the stages
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))  # Ray reads it once: one for both runs
    from ailot.config import load_sweep_config

    cfg = load_sweep_config(args.config)
    if len(cfg.seeds) > 1:
        print("note: several seeds; per-method rows below are the last seed's")
    runs = {}
    for pin in (False, True):
        runs[pin] = run_once(cfg, pin, args.num_cpus)
        print(f"pin_cpus={pin}: {runs[pin]['total']:.0f} s in all ({runs[pin]['storage']})", flush=True)
    off, on = runs[False], runs[True]
    print(f"\n{cfg.name} ({args.config}), Ray num_cpus={args.num_cpus}; {args.device_note}\n")
    print("| | pin_cpus off (s) | pin_cpus on (s) | off / on |")
    print("|---|---:|---:|---:|")
    names = {"stage 1": "1 datasets", "stage 2": "2 ICVF encoders", "stage 3": "3 relabelling",
             "stage 4": "4 trials (Tune)", "stage 5": "5 results"}
    for key, name in names.items():
        if key in off["stages"] and key in on["stages"]:
            a, b = off["stages"][key], on["stages"][key]
            print(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f}x |")
    print(f"| **sweep** | {off['total']:.1f} | {on['total']:.1f} | {off['total'] / on['total']:.2f}x |")
    print("\n| trial | wall off (s) | wall on (s) | off / on | score off | score on |")
    print("|---|---:|---:|---:|---:|---:|")
    for method in off["trial_s"].index:
        a, b = off["trial_s"][method], on["trial_s"][method]
        print(f"| {method} | {a:.0f} | {b:.0f} | {a / b:.2f}x | {off['score'][method]:.1f} | "
              f"{on['score'][method]:.1f} |")
    a, b = off["trial_s"].sum(), on["trial_s"].sum()
    print(f"| **sum** | {a:.0f} | {b:.0f} | {a / b:.2f}x | {off['score'].mean():.1f} (mean) | "
          f"{on['score'].mean():.1f} (mean) |")


if __name__ == "__main__":
    main()
