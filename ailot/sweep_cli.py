"""The sweep's command line, `ailot sweep` and `python tune/sweep.py` alike: datasets -> intent encoders ->
relabelled rewards -> learner trials -> Parquet.

    ailot sweep --config tune/configs/smoke.yaml                     # local Ray starts by itself
    ray job submit --working-dir . -- python tune/sweep.py --config tune/configs/<name>.yaml
    ailot sweep --config ... --resume                                # continue an interrupted sweep
    ailot sweep --config ... --dry-run                               # what it would run; no Ray, no training
    ailot sweep --config ... --seeds 0,1 --datasets pointmaze-umaze  # a part of the grid (rows merge in later)
    ailot sweep --config ... --labellers ailot,otr --learners iql     # another part: some methods only

Pretraining and relabelling are content-addressed under <storage>/<name>/cache, so they run once per
unique input; finished trials are never rerun on --resume.

Exit status: 0 every trial finished; 1 trials failed for good (named, after the other rows are written); 2 bad input
(one line, before any work); 130 interrupted (rows finished so far written; the --resume command printed).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
import time

from ailot.errors import AilotInputError, DatasetMissing

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
    p.add_argument("--dry-run", action="store_true",
                   help="print the trials, encoders and reward settings the config expands to (and which are cached or "
                        "complete), then stop: no Ray, no training, no dataset generated")
    p.add_argument("--seeds", default=None,
                   help="run only these of the config's seeds, e.g. 0,1 (rows merge with the other seeds' later)")
    p.add_argument("--datasets", default=None, help="run only these of the config's datasets (names, comma-separated)")
    p.add_argument("--labellers", default=None,
                   help="run only these of the config's labellers, e.g. ailot,otr (learners that take no reward, BC "
                        "and the whole-algorithm baselines, still run unless --learners leaves them out)")
    p.add_argument("--learners", default=None, help="run only these of the config's learners, e.g. iql")
    p.add_argument("--no-report", action="store_true", help="skip writing the report (ailot report) at the end")
    return p.parse_args(argv)


def _names(flag: str, given: str, known: list[str], cfg_name: str) -> list[str]:
    names = [n.strip() for n in given.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise AilotInputError(flag, f"names {unknown or 'nothing'} not in config {cfg_name!r}",
                              f"use some of: {', '.join(known)}")
    return names


def part_of(cfg, datasets: str | None, seeds: str | None, labellers: str | None = None,
            learners: str | None = None):
    """The config restricted to some of its datasets, seeds, labellers and learners: the same trials (same ids
    and rows), fewer of them, so a sweep can be run in parts across sessions or machines."""
    import dataclasses

    if datasets is not None:
        names = _names("--datasets", datasets, [d.label for d in cfg.datasets], cfg.name)
        cfg = dataclasses.replace(cfg, datasets=tuple(d for d in cfg.datasets if d.label in names))
    if seeds is not None:
        try:
            wanted = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise AilotInputError("--seeds", f"got {seeds!r}", "give seeds as integers, e.g. 0,1") from None
        unknown = [s for s in wanted if s not in cfg.seeds]
        if unknown or not wanted:
            raise AilotInputError("--seeds", f"{unknown or 'nothing'} not among config {cfg.name!r}'s seeds",
                                  f"use some of: {', '.join(map(str, cfg.seeds))}")
        cfg = dataclasses.replace(cfg, seeds=tuple(s for s in cfg.seeds if s in wanted))
    if labellers is not None:
        names = _names("--labellers", labellers, list(cfg.labellers), cfg.name)
        cfg = dataclasses.replace(cfg, labellers={k: v for k, v in cfg.labellers.items() if k in names})
    if learners is not None:
        names = _names("--learners", learners, list(cfg.learners), cfg.name)
        cfg = dataclasses.replace(cfg, learners={k: v for k, v in cfg.learners.items() if k in names})
    return cfg


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
    try:
        ray.init(**ray_init_kwargs(args))
    except ConnectionError as exc:  # e.g. the cluster went away since check_address
        raise AilotInputError("Ray address", f"could not be joined ({str(exc).splitlines()[0]})",
                              "start the cluster (ray start --head) or correct --address / RAY_ADDRESS") from None


def check_address(address: str, what: str, temp_dir: str | None = None) -> None:
    """A cluster address must answer, checked in seconds before the datasets load (ray.init stalls for over a
    minute on an unreachable one, then raises a traceback)."""
    import socket

    if address == "local":  # ray.init starts a new local Ray
        return
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address

        found = canonicalize_bootstrap_address("auto", temp_dir)
        if found is None:
            raise AilotInputError(what, "is 'auto' but no running Ray was found on this machine",
                                  "start one (ray start --head) or give its host:port")
        address = found
    hostport = address.split("://", 1)[-1].rstrip("/")  # ray://host:10001 (Ray Client) or host:port (GCS)
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise AilotInputError(what, f"{address!r} is not host:port", "give e.g. 10.0.0.1:6379 (ray start prints it)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as exc:
        raise AilotInputError(what, f"nothing answers at {host}:{port} ({exc.strerror or exc})",
                              "start the cluster (ray start --head) or correct the address") from None


ADDRESS_TIMEOUT_S = 5.0


@contextlib.contextmanager
def stoppable():
    """SIGINT and SIGTERM both stop the sweep the graceful way (rows written, exit 130): a sweep started in the
    background (`cmd &`, nohup) inherits SIGINT ignored, and job managers (ray job stop, Kubernetes, Slurm) send
    SIGTERM. The handlers before are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    forward_sigterm()
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def forward_sigterm() -> None:
    """SIGTERM as SIGINT: whatever handles SIGINT at that moment (Tune's, during the trials) handles it. Called
    again after ray.init, which installs its own SIGTERM handler (a plain exit, no rows written)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(os.getpid(), signal.SIGINT))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        with stoppable():
            return run(args)
    except AilotInputError as exc:
        print_error(f"error: {exc}")
        return 2
    except KeyboardInterrupt:  # before or between the trials (Tune handles SIGINT during them)
        print_error(f"error: interrupted before the trials finished. Fix: resume with {resume_command(args)} (encoders "
                    "and rewards already made are cached)")
        return 130


def print_error(line: str) -> None:
    """One write with its newline: Ray's log thread prints workers' lines to the same stream, and between
    print's two writes (text, then newline) one of them can land mid-line."""
    sys.stdout.flush()  # what was printed before it comes before it
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def resume_command(args) -> str:
    """The command that resumes this run: the same part of the grid (--seeds, ...) on the same storage and Ray."""
    parts = ["python", "tune/sweep.py", "--config", args.config]
    for flag, value in (("--storage", args.storage), ("--address", args.address), ("--num-cpus", args.num_cpus),
                        ("--datasets", args.datasets), ("--seeds", args.seeds), ("--labellers", args.labellers),
                        ("--learners", args.learners)):
        if value is not None:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(p) for p in [*parts, "--resume"])


def run(args) -> int:
    import dataclasses

    from ailot import storage
    from ailot.config import load_sweep_config
    from ailot.errors import SweepIncomplete

    # Everything a user can get wrong fails here, before Ray starts: flags, the config (learner and ICVF settings
    # included), storage and cache, the cluster address, another run of the sweep, then the datasets and their
    # evaluation environments.
    if args.num_cpus is not None and args.num_cpus < 1:
        raise AilotInputError("--num-cpus", f"is {args.num_cpus}: a local Ray without CPUs can run no trial",
                              "give at least 1, or leave the flag out to use every core")
    cfg = load_sweep_config(args.config)
    if args.storage is not None:
        if not args.storage.strip():
            raise AilotInputError("--storage", "is empty", "give a directory path or URI, or leave the flag out to use "
                                  f"the config's storage ({cfg.storage!r})")
        storage.check_scheme(args.storage, "--storage")
        cfg = dataclasses.replace(cfg, storage=args.storage)
    geometry_of = (cfg.datasets[0].label, cfg.seeds[0])  # the whole config's, whatever part of it runs
    cfg = part_of(cfg, args.datasets, args.seeds, args.labellers, args.learners)
    from ailot import pipeline
    from ailot import sweep as stages

    if args.dry_run:
        pairs, how = {}, []
        for ds in cfg.datasets:  # what is there; nothing is generated
            try:
                pairs[ds.label] = pipeline.load_pair(dataclasses.replace(ds, generate=None), progress=False)
            except AilotInputError as exc:
                if not (ds.generate or isinstance(exc, DatasetMissing)):
                    raise  # there but unreadable: the run would stop on it too
                pairs[ds.label] = (None, None)
                how.append(f"    {ds.label}: " + ("the sweep generates it (config 'generate')" if ds.generate else
                                                  f"{exc.what} is not here; {exc.fix}"))
        print(stages.format_plan(cfg, stages.plan(cfg, pairs)))
        if how:
            print("  datasets not made yet, how:\n" + "\n".join(how))
        return 0
    stages.check_paths(cfg, "--storage" if args.storage is not None else "config key 'storage'")
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_address(address, "--address" if args.address else "RAY_ADDRESS", args.ray_temp_dir)
    with stages.run_lock(cfg):
        t0 = time.time()
        pairs = {ds.label: pipeline.load_pair(ds, progress=not args.quiet) for ds in cfg.datasets}
        stages.check_sizes(cfg, pairs)
        init_ray(args)
        forward_sigterm()
        try:
            summary = stages.run_sweep(cfg, resume=args.resume, progress=not args.quiet, plots=not args.no_plots,
                                       pairs=pairs, fixed_cluster=not address, geometry_of=geometry_of)
        except SweepIncomplete as exc:
            print(exc.summary)
            if exc.interrupted:
                print_error(f"error: sweep {cfg.name!r} {exc}. Fix: resume with {resume_command(args)}")
                return 130
            print_error(f"error: sweep {cfg.name!r}: {exc}. Fix: correct what made them fail (Ray's logs hold the "
                        f"tracebacks), then rerun the sweep: finished trials are kept, not rerun")
            return 1
    print(summary)
    print(f"sweep {cfg.name!r} finished in {time.time() - t0:.0f}s; results: {cfg.parquet_path}")
    if not args.no_report:
        write_report(cfg)
    return 0


def write_report(cfg) -> None:
    """The report of the results file; against the published results/<sweep>.parquet when this run is not it."""
    from ailot import report, storage

    published = storage.join("results", f"{cfg.name}.parquet")
    reference = published if storage.exists(published) and str(storage.absolute(published)) != str(
        storage.absolute(cfg.parquet_path)) else None
    try:
        paths = report.write_report(cfg.parquet_path, reference=reference)
    except AilotInputError as exc:  # e.g. no rows yet: the sweep itself succeeded
        log.warning("no report: %s", exc)
        return
    print(f"report: {paths[0]} and {paths[1]}" + (f" (compared with {reference})" if reference else ""))
