"""A sweep on Ray: encoders as Ray tasks, relabelling on the actor pool, learner trials on Ray Tune.

`run_sweep(cfg)` is what `tune/sweep.py` calls after `ray.init`. Every stage reads its cache first, so a
rerun or `--resume` repeats no pretraining, relabelling or finished trial.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from ailot import compile_cache, cores, labellers, pipeline, results, storage
from ailot.cache import ArrayCache
from ailot.config import SweepConfig
from ailot.errors import AilotInputError, SweepIncomplete

log = logging.getLogger("ailot.sweep")
ROWS_FILE = "rows.json"
LEARNER_FILE = "learner.msgpack"
STATE_FILE = "state.json"  # step + sha256 of the learner file: tells a complete checkpoint from a partial one
METRICS = ("step", "normalized_score", "return_mean", "success_rate")  # what each report shows Tune


def _jax_env_for_this_worker() -> bool:
    """CPU-only JAX in workers without a GPU; on-demand GPU memory where Ray gave one; the persistent compilation
    cache either way (`ailot.compile_cache`). True with a GPU."""
    import ray

    gpu = bool(ray.get_gpu_ids())
    if gpu:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    else:
        os.environ["JAX_PLATFORMS"] = "cpu"
    compile_cache.enable()
    return gpu


def _pretrain_task(agent, intents: dict, seed: int, progress: bool, pin_cores: int = 0):
    """(encoder, the cores it was trained on: XLA's thread count, which its bytes depend on)."""
    gpu = _jax_env_for_this_worker()
    from ailot.intents import ICVFConfig, pretrain

    with cores.pinned(pin_cores, enabled=not gpu):  # the task's CPUs; XLA sizes its thread pool by them
        encoder, _ = pretrain(agent.observations, ICVFConfig.from_dict(intents), seed=seed, progress=progress)
        return encoder, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _fault_hook(tid: str, spec: str | None):
    """Fault injection for tests: AILOT_FAULT='<trial id or *>:<step>:<raise|kill>:<marker dir>' (read by the
    driver, passed to trials) makes the trial fail once when it reaches that step."""
    if not spec:
        return None
    who, at_step, how, marker_dir = spec.split(":", 3)
    if who not in ("*", tid):
        return None
    marker = Path(marker_dir) / f"fault-{tid}"

    def hook(step: int) -> None:
        if step >= int(at_step) and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(step))
            if how == "kill":
                os.kill(os.getpid(), 9)
            raise RuntimeError(f"injected fault in trial {tid} at step {step}")

    return hook


def trainable(config: dict, cfg: SweepConfig = None, agents: dict = None, experts: dict = None) -> None:
    """One Tune trial: rewards from the cache, train, evaluate, report a row + checkpoint per evaluation; on a
    CPU, pinned to as many cores as the trial has CPUs (`ailot.cores`: XLA sizes its thread pool by them)."""
    gpu = _jax_env_for_this_worker()
    with cores.pinned(cfg.resources.cpus_per_trial, enabled=cfg.resources.pin_cpus and not gpu):
        _trial(config, cfg, agents, experts or {})


def _trial(config: dict, cfg: SweepConfig, agents: dict, experts: dict) -> None:
    from ray import tune

    from ailot import learners

    config = config["t"]
    trial = config["trial"]
    agent = agents[trial["dataset"]]
    tid = pipeline.trial_id(trial)
    rewards, rewards_info = None, None
    if config["rewards_key"]:
        cache = ArrayCache(config["cache_root"])
        entry = cache.get(config["rewards_key"])
        if entry is None:
            raise RuntimeError(f"rewards {config['rewards_key']} missing from the cache; rerun the sweep")
        rewards, rewards_info = entry["rewards"], (cache.meta(config["rewards_key"]) or {}).get("sinkhorn")
    rows: list[dict] = []
    audit = config["audit_log"]

    trained_from = {"step": 0}

    def load_from(d: Path, like, saved_rows: list | None = None):
        rows[:] = saved_rows if saved_rows is not None else json.loads((d / ROWS_FILE).read_text())
        trained_from["step"] = rows[-1]["step"] if rows else 0
        return learners.load(d / LEARNER_FILE, like)

    def register(d: Path) -> None:
        """Report a checkpoint Tune never registered, rows and all: its last evaluation may have been the trial's
        last, and then no later report would hand those rows to the driver (the sweep would stay unfinished)."""
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree(d, tmp, dirs_exist_ok=True)
            tune.report({k: rows[-1][k] for k in METRICS}, checkpoint=tune.Checkpoint.from_directory(tmp))

    def restore_newer(newer: Path, like):
        log.info("trial %s: resuming from %s, newer than the checkpoint Tune registered", tid, newer)
        learner = load_from(newer, like)
        register(newer)
        return learner

    def restore(like):
        ckpt = tune.get_checkpoint()
        if ckpt is None:
            newer = _unregistered_checkpoint(-1)
            return restore_newer(newer, like) if newer is not None else None
        with ckpt.as_directory() as d:
            registered = json.loads((Path(d) / ROWS_FILE).read_text())
            newer = _unregistered_checkpoint(registered[-1]["step"] if registered else 0)
            if newer is None:
                return load_from(Path(d), like, registered)
        return restore_newer(newer, like)

    def report(row: dict, learner) -> None:
        rows.append(row)
        # the updates this process did: shows a resume repeats none
        storage.append_line(audit, json.dumps({"trial_id": tid, "from": trained_from["step"], "to": row["step"],
                                               "pid": os.getpid(), "cores": cores.running_on()}))
        trained_from["step"] = row["step"]
        with tempfile.TemporaryDirectory() as d:
            learners.save(learner, Path(d) / LEARNER_FILE)
            sha = hashlib.sha256((Path(d) / LEARNER_FILE).read_bytes()).hexdigest()
            (Path(d) / STATE_FILE).write_text(json.dumps({"step": row["step"], "learner_sha256": sha}))
            (Path(d) / ROWS_FILE).write_text(json.dumps(rows))
            tune.report({k: row[k] for k in METRICS}, checkpoint=tune.Checkpoint.from_directory(d))

    pipeline.run_trial(trial, cfg, agent, rewards, rewards_key=config["rewards_key"], rewards_info=rewards_info,
                       restore=restore, report=report, fail_hook=_fault_hook(tid, config.get("fault")),
                       expert=experts.get(trial["dataset"]))


def _complete_step(d: Path) -> int | None:
    """The step of a checkpoint directory whose files are all present and intact, else None."""
    try:
        state = json.loads((d / STATE_FILE).read_text())
        rows = json.loads((d / ROWS_FILE).read_text())
        intact = hashlib.sha256((d / LEARNER_FILE).read_bytes()).hexdigest() == state["learner_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return int(state["step"]) if intact and rows and rows[-1]["step"] == state["step"] else None


def _unregistered_checkpoint(registered_step: int) -> Path | None:
    """A complete checkpoint of this trial on (local) storage past the one Tune restored, or None.

    A function trainable persists its checkpoint inside `tune.report`, before the driver has taken the result;
    a driver interrupted (SIGINT) or a worker lost in between leaves a checkpoint Tune never registered, and
    Tune's restore would repeat the updates since the registered one. Only local storage is scanned."""
    try:
        import pyarrow.fs
        from ray.train._internal.session import get_session

        storage = get_session().storage
        if not isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
            return None
        trial_dir = Path(storage.trial_fs_path)
    except Exception:  # an internal Ray API: without it, Tune's own restore is still correct
        return None
    best = None
    for d in trial_dir.glob("checkpoint_*"):
        step = _complete_step(d)
        if step is not None and step > registered_step and (best is None or step > best[0]):
            best = (step, d)
    return best[1] if best else None


def _request_resources(bundles: list[dict]) -> None:
    """Ask the autoscaler for these bundles, replacing any earlier request ([] withdraws it); a no-op without one."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=bundles)


def _request_gpus(n: int) -> None:
    """Ask the autoscaler for n one-GPU bundles (0 withdraws the request)."""
    _request_resources([{"GPU": 1, "CPU": 1}] * n)


class _LazyPool:
    """The relabel pool, started on its first request."""

    def __init__(self, make):
        self.make, self.pool = make, None

    def relabel(self, *args, **kwargs):
        if self.pool is None:
            self.pool = self.make()
        return self.pool.relabel(*args, **kwargs)

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _relabel_pool(cfg: SweepConfig):
    """The relabel actor pool; with resources.relabel_gpus, after asking the autoscaler for those GPUs ahead
    (a cluster that starts with no GPU worker would otherwise relabel on CPU actors)."""
    import ray

    from ailot.distributed import RelabelPool

    want = cfg.resources.relabel_gpus
    if want:
        _request_gpus(want)
        log.info("  asked the autoscaler for %d GPU(s) for relabelling; waiting up to %.0fs", want,
                 cfg.resources.scale_timeout_s)
        deadline = time.time() + cfg.resources.scale_timeout_s
        while ray.cluster_resources().get("GPU", 0) < want and time.time() < deadline:
            time.sleep(2.0)
        have = int(ray.cluster_resources().get("GPU", 0))
        if have < want:
            log.warning("  only %d of %d GPU(s) arrived in %.0fs; relabelling on what is there", have, want,
                        cfg.resources.scale_timeout_s)
        pool = (RelabelPool(min(want, have)) if have else
                RelabelPool(cfg.resources.relabel_actors, use_gpus=False, pin_cpus=cfg.resources.pin_cpus))
    else:
        pool = RelabelPool(cfg.resources.relabel_actors, pin_cpus=cfg.resources.pin_cpus)
    log.info("  relabel pool: %d actors (%s)", pool.num_actors, "GPU" if pool.use_gpus else "CPU")
    return pool


# ---------------------------------------------------------------- checks before any work


def check_paths(cfg: SweepConfig, storage_what: str = "config key 'storage'") -> None:
    """The storage and cache can take files (local paths are probed, URI schemes checked): refused before the
    datasets are loaded or Ray starts, not with a traceback after pretraining."""
    storage.check_writable(cfg.storage, storage_what)
    if cfg.cache:
        storage.check_writable(cfg.cache, "config key 'cache'")
    for source in cfg.reuse_paths:
        if not storage.exists(source):  # not an error: that sweep may not have run here (yet); its trials run here
            log.warning("reuse_from: %s does not exist: no trial is taken from it", source)


def check_sizes(cfg: SweepConfig, pairs: dict) -> None:
    """Batches that the loaded datasets can fill (right after loading, before Ray starts)."""
    for label, (agent, _) in pairs.items():
        n = agent.num_transitions
        if cfg.train.batch_size > n:
            raise AilotInputError("config key 'train.batch_size'", f"{cfg.train.batch_size:,} is larger than dataset "
                                  f"{label!r} ({n:,} transitions)", f"give train.batch_size <= {n:,}")


def _fits(bundle: dict[str, float], resources: dict[str, float]) -> bool:
    return all(resources.get(k, 0) >= v for k, v in bundle.items() if v)


def _amount(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}s" for k in ("CPU", "GPU"))


def check_schedulable(cfg: SweepConfig, fixed: bool | None = None) -> bool:
    """Some node of the cluster can run a trial ({CPU: cpus_per_trial, GPU: gpus_per_trial}), an ICVF task
    (cpus_per_encoder) and the one-CPU relabel actors; else Tune would wait forever. A fixed-size Ray (`fixed`;
    None: one this process started) is refused at once; a cluster that may grow is asked for such a node and given
    resources.scale_timeout_s. True when the autoscaler was asked (and the node came): the caller withdraws the
    request at the end."""
    import ray

    res = cfg.resources
    need = {"CPU": max(1.0, res.cpus_per_trial, res.encoder_cpus), "GPU": res.gpus_per_trial}
    key = ("resources.gpus_per_trial" if res.gpus_per_trial else "resources.cpus_per_encoder"
           if res.encoder_cpus > res.cpus_per_trial else "resources.cpus_per_trial")
    who = "an ICVF task" if key.endswith("encoder") else "a trial"

    def nodes() -> list[dict[str, float]]:
        return [n["Resources"] for n in ray.nodes() if n.get("Alive")]

    def largest() -> dict[str, float]:
        return max(nodes(), key=lambda r: (r.get("GPU", 0) >= need["GPU"], r.get("CPU", 0)), default={})

    if any(_fits(need, r) for r in nodes()):
        return False
    if fixed is None:
        node = getattr(ray._private.worker, "_global_node", None)  # started by ray.init() here, not connected to
        fixed = bool(getattr(node, "head", False))
    if fixed:
        raise AilotInputError(f"config key {key!r}", f"{who} needs {_amount(need)}, but this fixed-size local Ray's "
                              f"largest node has {_amount(largest())}, so no trial could ever start",
                              "lower resources.cpus_per_trial / cpus_per_encoder / gpus_per_trial, or give Ray more "
                              "(--num-cpus, a GPU machine, or --address of a cluster that has them)")
    log.warning("no node has %s for %s (largest: %s); asked the autoscaler for one, waiting up to %.0fs "
                "(resources.scale_timeout_s)", _amount(need), who, _amount(largest()), res.scale_timeout_s)
    # kept until the sweep ends, so that the node does not go idle before stage 2 or 4 asks for it
    _request_resources([{k: v for k, v in need.items() if v}])
    deadline = time.time() + res.scale_timeout_s
    while time.time() < deadline:
        time.sleep(min(2.0, res.scale_timeout_s))
        if any(_fits(need, r) for r in nodes()):
            log.info("  a node with %s joined", _amount(need))
            return True
    _request_resources([])
    raise AilotInputError(f"config key {key!r}", f"{who} needs {_amount(need)}, and in {res.scale_timeout_s:.0f}s "
                          f"no node that large joined the cluster (largest: {_amount(largest())})",
                          "lower resources.cpus_per_trial / cpus_per_encoder / gpus_per_trial, or add a node type that "
                          "large to the cluster (or raise resources.scale_timeout_s if it is slow to start)")


LOCK_FILE = "sweep.lock"
_HELD: dict[str, list] = {}  # lock path -> [open file, depth]: reentrant within this process


@contextlib.contextmanager
def run_lock(cfg: SweepConfig):
    """An exclusive lock on the sweep's run directory (<storage>/<name>/sweep.lock) for as long as the block runs:
    a second sweep of the same name and storage is refused, naming the process that holds it. The kernel drops
    an flock when its process dies, so a killed sweep leaves no stale lock. Object stores cannot lock: warned."""
    import fcntl
    import socket

    fs, p = fsspec.core.url_to_fs(str(storage.absolute(cfg.run_dir)))
    if not isinstance(fs, LocalFileSystem):
        log.warning("storage %s is not a local filesystem: no lock can be taken there; make sure no other run of "
                    "sweep %r writes to it at the same time", cfg.storage, cfg.name)
        yield
        return
    path = str(Path(p) / LOCK_FILE)
    if path in _HELD:
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
        return
    Path(p).mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown process"
        f.close()
        raise AilotInputError(f"sweep {cfg.name!r} in {p}", f"is being run by another process ({holder})",
                              "wait for that run to end (or stop it), or give this one another --storage or name") \
            from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    f.flush()
    _HELD[path] = [f, 1]
    try:
        yield
    finally:
        _HELD[path][1] -= 1
        if not _HELD[path][1]:
            del _HELD[path]
            f.close()  # releases the flock; the file stays (removing it would race a waiting process)


# ---------------------------------------------------------------- the sweep


def run_sweep(cfg: SweepConfig, *, resume: bool = False, progress: bool = True, plots: bool = True,
              pairs: dict | None = None, fixed_cluster: bool | None = None,
              geometry_of: tuple[str, int] | None = None) -> str:
    """`pairs` ({label: (agent, expert)} from pipeline.load_pair) lets the caller load and check the data
    before starting Ray; without it they are loaded here. `fixed_cluster`: whether Ray can grow (None: fixed when
    this process started it), which decides between refusing and waiting when no node fits a trial.
    `geometry_of`: the (dataset, seed) whose encoder makes the Fig. 8 check, by default cfg's first; a run of a part
    of a config's grid passes the whole config's, so that no part overwrites the check with another encoder's.

    Returns the summary table. Raises SweepIncomplete, after writing every finished row, when trials failed for
    good or were left unfinished (interrupted)."""
    check_paths(cfg)
    with run_lock(cfg):
        # before any pretraining or relabelling: a trial no node can hold would otherwise wait forever in stage 4
        asked = check_schedulable(cfg, fixed_cluster)
        try:
            return _run_sweep(cfg, resume=resume, progress=progress, plots=plots, pairs=pairs,
                              geometry_of=geometry_of or (cfg.datasets[0].label, cfg.seeds[0]))
        finally:
            if asked:
                _request_resources([])  # the trials are over: the node asked for may go


def _run_sweep(cfg: SweepConfig, *, resume: bool, progress: bool, plots: bool, pairs: dict | None,
               geometry_of: tuple[str, int]) -> str:
    import ray
    from ray import tune

    from ailot.sweep_rows import RowsOnTrialEnd, quiet_about_unstarted_trials

    run_dir = storage.absolute(cfg.run_dir)
    cache = pipeline.rewards_cache(cfg)
    storage.makedirs(run_dir)
    log.info("JAX compilation cache: %s", compile_cache.enable() or "off")

    # 1. datasets (generated here when missing and the config says how)
    log.info("stage 1/5: datasets")
    if pairs is None:
        pairs = {ds.label: pipeline.load_pair(ds, progress=progress) for ds in cfg.datasets}
    check_sizes(cfg, pairs)
    for label, (agent, expert) in pairs.items():
        log.info("  %s: %d episodes, %d transitions (expert %s: %d episodes)", label, agent.num_episodes,
                 agent.num_transitions, expert.dataset_id, expert.num_episodes)

    # 2. intent encoders, once per (dataset, seed), as Ray tasks
    encoders: dict[tuple[str, int], Any] = {}
    used = cfg.used_labeller_settings()  # a BC-only sweep needs no encoder and no rewards
    if any(labellers.get(s["labeller"]).uses_encoder for s in used):
        log.info("stage 2/5: intent encoders (ICVF) for %d dataset x seed pairs", len(pairs) * len(cfg.seeds))
        todo = []
        for label, (agent, _) in pairs.items():
            for seed in cfg.seeds:
                # a cached encoder must match this sweep's settings and data
                cached = pipeline.cached_encoder(agent, cfg.intents, seed, cfg.cache_dir)
                if cached is not None:
                    encoders[label, seed] = cached
                else:
                    todo.append((label, seed))
        gpu = ray.cluster_resources().get("GPU", 0) > 0
        # a fixed count, however many encoders there are: XLA's numerics follow it (resources.cpus_per_encoder)
        cpus = 1 if gpu else cfg.resources.encoder_cpus
        if todo:
            log.info("  pretraining %d encoder(s), %g CPU(s) each%s", len(todo), cpus, " and a GPU" if gpu else "")
        task = ray.remote(num_cpus=cpus, num_gpus=1 if gpu else 0)(_pretrain_task)
        pending, agent_refs = {}, {}
        pin = cpus if cfg.resources.pin_cpus else 0
        for label, seed in todo:
            agent_refs[label] = agent_refs.get(label) or ray.put(pairs[label][0])
            pending[task.remote(agent_refs[label], cfg.intents, seed, progress, pin)] = (label, seed, time.time())
        for ref, (label, seed, t0) in pending.items():
            agent = pairs[label][0]
            encoder, n_cores = ray.get(ref)
            path = pipeline.store_encoder(encoder, agent, cfg.intents, seed, cfg.cache_dir, time.time() - t0,
                                          cpu_cores=None if gpu else n_cores)
            encoders[label, seed] = pipeline.cached_encoder(agent, cfg.intents, seed, cfg.cache_dir)
            log.info("  encoder for %s seed %d saved to %s", label, seed, path)
        _write_geometry(cfg, pairs, encoders, geometry_of)
    else:
        log.info("stage 2/5: no trial trains on rewards in intent space: no encoder needed")

    # 3. rewards for every distinct setting, on the actor pool, cached
    log.info("stage 3/5: relabelling %d labeller settings", len(used))

    # a restored Tune experiment may hold a trial that reads its rewards again: then every setting is made
    restoring = resume and tune.Tuner.can_restore(str(storage.join(run_dir, "tune", "trials")))
    keys: dict[tuple, str] = {} if restoring else _settled_settings(cfg, pairs, encoders)
    if keys:
        log.info("  %d (dataset, seed, setting) rewards skipped: every trial on them is already complete", len(keys))
    pool = _LazyPool(lambda: _relabel_pool(cfg))  # started only if some labeller on the pool has work
    try:
        for label, pair in pairs.items():
            for seed in cfg.seeds:
                settings = [s for s in used if (label, seed, pipeline.setting_id(s)) not in keys]
                by_setting = pipeline.rewards_for(cfg.dataset(label), pair, seed, settings, cfg,
                                                  encoder=encoders.get((label, seed)), pool=pool, progress=progress)
                for setting, key in by_setting.items():
                    keys[label, seed, setting] = key
                log.info("  %s seed %d: rewards of %d settings ready", label, seed, len(by_setting))
    finally:
        pool.shutdown()
        if cfg.resources.relabel_gpus:
            _request_gpus(0)  # drop the request: idle GPU workers may go

    # 4. learner trials on Tune
    trials = cfg.trials()
    log.info("stage 4/5: %d learner trials", len(trials))
    audit_log = storage.join(run_dir, "updates.jsonl")
    param_trials = []
    for t in trials:
        s = t["labeller"]
        key = None if s["labeller"] == "none" else keys[t["dataset"], t["seed"], pipeline.setting_id(s)]
        param_trials.append({"trial": t, "rewards_key": key, "cache_root": cache.root, "audit_log": str(audit_log),
                             "fault": os.environ.get("AILOT_FAULT")})
    agents = {label: pair[0] for label, pair in pairs.items()}
    # the expert datasets travel to the trials only where a labeller adds their transitions or a learner reads them
    experts = {label: pair[1] for label, pair in pairs.items()} if pipeline.trials_read_expert(cfg) else {}
    tune_path = str(storage.join(run_dir, "tune"))
    experiment = str(storage.join(tune_path, "trials"))
    # a trial whose rows are already in the results file, made the same way, is not rerun
    todo, reused, borrowed = _drop_completed(cfg, param_trials, agents)
    if len(borrowed):  # into the file at once: kept whatever happens to this run
        results.merge_into(cfg.parquet_path, borrowed)
        log.info("  their %d rows copied into %s", len(borrowed), cfg.parquet_path)
        reused = results.merge([reused, borrowed])
    fn = tune.with_resources(
        tune.with_parameters(trainable, cfg=cfg, agents=agents, experts=experts),
        {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial},
    )
    outcome = _Outcome({pipeline.trial_id(p["trial"]) for p in todo})
    rows_writer = RowsOnTrialEnd(str(cfg.parquet_path), checkpoint_rows)
    if resume and tune.Tuner.can_restore(experiment):
        log.info("  resuming the trials in %s", experiment)
        with quiet_about_unstarted_trials():
            restored = tune.Tuner.restore(experiment, trainable=fn, resume_errored=True)
            # the run config comes back from the experiment's pickle: its callbacks are this run's, not that run's
            restored._local_tuner.get_run_config().callbacks = [rows_writer]
            _fit(restored, outcome, cfg.train.steps)
        # trials this config gained after that experiment started are not in it: they run next
        todo = [p for p in todo if pipeline.trial_id(p["trial"]) not in outcome.seen]
    if todo and not outcome.stopped:
        tuner = tune.Tuner(
            fn,
            param_space={"t": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(max_concurrent_trials=cfg.resources.max_concurrent_trials or None,
                                        reuse_actors=cfg.resources.reuse_actors),
            run_config=tune.RunConfig(
                name="trials", storage_path=tune_path, verbose=1 if progress else 0,
                failure_config=tune.FailureConfig(max_failures=cfg.resources.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[rows_writer],
            ),
        )
        _fit(tuner, outcome, cfg.train.steps)

    # 5. results: one row per (trial, evaluation) from each trial's latest checkpoint, merged into the results file:
    # rows already there stay (a resumed, regrown or reordered run never removes a finished row)
    log.info("stage 5/5: results")
    new = results.merge(outcome.frames)
    in_file = results.merge_into(cfg.parquet_path, new)
    df = results.merge([reused, new])  # this config's trials: the summary and figures
    path = cfg.parquet_path
    log.info("  %d rows from %d trials written to %s (%d rows in the file)", len(df),
             df["trial_id"].nunique() if len(df) else 0, path, len(in_file))
    if plots and len(df):
        geometry = results.read_geometry(results.geometry_path(cfg.parquet_path))
        for p in results.write_figures(df, cfg.figures_dir, geometry):
            log.info("  figure %s", p)
    summary = results.format_summary(results.summarize(df))
    unfinished = outcome.unfinished()
    if outcome.failed or unfinished:
        raise SweepIncomplete(list(outcome.failed.values()), unfinished, interrupted=bool(unfinished),
                              written=f"the {len(df)} rows of finished evaluations are in {path}", summary=summary)
    return summary


class _Outcome:
    """What the Tune runs of one sweep left: rows per trial, trials finished, failed for good, or neither."""

    def __init__(self, expected: set[str]):
        self.expected = set(expected)  # the trials to run; a restored experiment's are added as they are seen
        self.frames: list[pd.DataFrame] = []
        self.finished: set[str] = set()
        self.failed: dict[str, str] = {}  # trial id -> '<trial id> (<what>): <error>'
        self.seen: set[str] = set()
        self.stopped = False  # a Tune run returned with trials neither finished nor failed: it was interrupted

    def unfinished(self) -> list[str]:
        """Neither finished nor failed: the run was interrupted (Tune had not even created some of them)."""
        return sorted(self.expected - self.finished - set(self.failed))


def checkpoint_rows(checkpoint) -> list[dict]:
    """The rows a trial checkpoint holds, one per evaluation so far ([] for no checkpoint)."""
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as d:
        return json.loads((Path(d) / ROWS_FILE).read_text())


def _fit(tuner, outcome: _Outcome, steps: int) -> None:
    never_started = False
    for result in tuner.fit():  # Tune returns here on SIGINT too, with the trials it had not finished
        trial = ((result.config or {}).get("t") or {}).get("trial")
        if not trial:  # Tune keeps a trial's config with its results: this one never reported (it is in todo)
            never_started = True
            continue
        tid = pipeline.trial_id(trial)
        outcome.seen.add(tid)
        outcome.expected.add(tid)
        rows = checkpoint_rows(result.checkpoint)
        if rows:
            outcome.frames.append(pd.DataFrame(rows))
        if result.error is not None:
            what = f"{trial['labeller']['labeller']} + {trial['learner']}, seed {trial['seed']}"
            outcome.failed[tid] = f"{tid} ({what}): {_error_line(result.error)}"
            log.warning("trial %s failed for good: %s", tid, _error_line(result.error))
        elif rows and rows[-1]["step"] >= steps:
            outcome.finished.add(tid)
    outcome.stopped = never_started or bool(outcome.seen - outcome.finished - set(outcome.failed))


def _error_line(error: BaseException) -> str:
    """The trial's own exception in one line (Ray wraps it in RayTaskError / TuneError with a traceback)."""
    cause = getattr(error, "cause", None)
    error = cause if isinstance(cause, BaseException) else error
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return (type(error).__name__ + (f": {lines[-1]}" if lines else ""))[:300]


def _settled_settings(cfg: SweepConfig, pairs: dict, encoders: dict | None = None) -> dict[tuple, str]:
    """{(dataset, seed, setting id): rewards key} of the settings whose every trial is already complete (in the
    results file or a `reuse_from` file): their rewards are not made again, as on a fresh machine resuming a sweep
    whose reward cache stayed behind. A setting in intent space counts only where `encoders` ({(dataset, seed):
    encoder}) holds its encoder, since its key names the encoder's weights: on a fresh machine the encoder is
    pretrained again (minutes), the relabelling (OT over every transition) is not."""
    used = cfg.used_labeller_settings()
    keys = {}
    for label, (agent, expert) in pairs.items():
        for seed in cfg.seeds:
            encoder = (encoders or {}).get((label, seed))
            enc_hash = encoder.content_hash() if encoder is not None else None  # hashes the weights: once
            for s in used:
                in_intent_space = labellers.get(s["labeller"]).uses_encoder
                if not in_intent_space or enc_hash is not None:
                    keys[label, seed, pipeline.setting_id(s)] = pipeline.rewards_key(
                        agent, expert, s, enc_hash if in_intent_space else None, seed)
    param_trials = []
    for t in cfg.trials():
        key = (t["dataset"], t["seed"], pipeline.setting_id(t["labeller"]))
        if key in keys:
            param_trials.append({"trial": t, "rewards_key": keys[key]})
    if not param_trials:
        return {}
    todo, _, _ = _drop_completed(cfg, param_trials, {label: pair[0] for label, pair in pairs.items()}, quiet=True)
    still_open = {(p["trial"]["dataset"], p["trial"]["seed"], pipeline.setting_id(p["trial"]["labeller"]))
                  for p in todo}
    return {k: key for k, key in keys.items() if k not in still_open}


def _drop_completed(cfg: SweepConfig, param_trials: list[dict], agents: dict,
                    quiet: bool = False) -> tuple[list[dict], pd.DataFrame, pd.DataFrame]:
    """The trials still to run; the rows of those already complete in the results file; and the rows of those
    complete in a `reuse_from` sweep's file, made the same way (config, data fingerprint, rewards key), that this
    file lacks."""
    steps = pipeline.eval_steps(cfg.train)
    expected = {pipeline.trial_id(p["trial"]): {
        "steps": steps, "config": pipeline.trial_config_json(p["trial"], cfg), "rewards_key": p["rewards_key"] or "",
        "dataset_fingerprint": agents[p["trial"]["dataset"]].fingerprint()} for p in param_trials}
    done: set[str] = set()
    reused = pd.DataFrame()
    if storage.exists(cfg.parquet_path):
        prior = results.load(cfg.parquet_path)
        done = results.completed_trials(prior, expected)
        if done and not quiet:
            log.info("  %d of %d trials already complete in %s: their rows are kept, they are not rerun", len(done),
                     len(param_trials), cfg.parquet_path)
        reused = prior[prior["trial_id"].isin(list(done))]
    borrowed = []
    for source in cfg.reuse_paths:
        if not storage.exists(source):
            continue
        other = results.load(source)
        got = results.completed_trials(other, {t: e for t, e in expected.items() if t not in done})
        if got and not quiet:
            log.info("  %d trials complete in %s with the same config, data and rewards (reuse_from): they are not "
                     "rerun", len(got), source)
        if got:
            borrowed.append(other[other["trial_id"].isin(list(got))])
            done |= got
    todo = [p for p in param_trials if pipeline.trial_id(p["trial"]) not in done]
    return todo, reused, results.merge(borrowed)


def _write_geometry(cfg: SweepConfig, pairs, encoders, geometry_of: tuple[str, int]) -> None:
    """The paper's Fig. 8 check for the (dataset, seed) `geometry_of` (the whole config's first), saved beside the
    results. A sweep run in parts writes it only in the part that trains that encoder."""
    from ailot.intents import GEOMETRY_HORIZONS, intent_geometry

    label, seed = geometry_of
    if (label, seed) not in encoders:
        log.info("  intent geometry: this part of the grid has no encoder for %s seed %d (the config's first); "
                 "%s is left as it is", label, seed, results.geometry_path(cfg.parquet_path))
        return
    agent = pairs[label][0]
    encoder = encoders[label, seed]
    states = agent.states()[:200]
    geometry = intent_geometry(states, encoder.embed, max_k=max(GEOMETRY_HORIZONS))
    by_horizon = geometry.attrs["r2_by_horizon"]
    path = results.write_geometry(geometry, results.geometry_path(cfg.parquet_path))
    lines = "; ".join(f"k <= {h}: psi {r.get('psi', float('nan')):.3f}, raw {r['raw']:.3f}"
                      for h, r in by_horizon.items())
    log.info("  intent geometry, R^2 of a line through the mean squared distance (%s) written to %s", lines, path)


def plan(cfg: SweepConfig, pairs: dict) -> dict[str, Any]:
    """What `run_sweep(cfg)` would do, without Ray or any training: the trials, the encoders and reward settings
    they need, and which of those are cached or already complete (`--dry-run`). pairs: {label: (agent, expert)},
    or (None, None) for a dataset not made yet."""
    used = cfg.used_labeller_settings()
    needs_encoder = any(labellers.get(s["labeller"]).uses_encoder for s in used)
    cache = pipeline.rewards_cache(cfg)
    encoders = {"needed": 0, "cached": 0}
    rewards = {"needed": 0, "cached": 0}
    keys: dict[tuple, str | None] = {}
    cached_encoders: dict[tuple[str, int], Any] = {}
    for label, (agent, expert) in pairs.items():
        for seed in cfg.seeds:
            encoder = None
            if needs_encoder:
                encoders["needed"] += 1
                encoder = pipeline.cached_encoder(agent, cfg.intents, seed, cfg.cache_dir) if agent else None
                encoders["cached"] += encoder is not None
                if encoder is not None:
                    cached_encoders[label, seed] = encoder
            enc_hash = encoder.content_hash() if encoder is not None else None  # hashes the weights: once
            for s in used:
                rewards["needed"] += 1
                known = agent is not None and (encoder is not None or not labellers.get(s["labeller"]).uses_encoder)
                key = pipeline.rewards_key(agent, expert, s, enc_hash, seed) if known else None
                keys[label, seed, pipeline.setting_id(s)] = key
                rewards["cached"] += key is not None and cache.contains(key)
    settled = _settled_settings(cfg, {label: pair for label, pair in pairs.items() if pair[0] is not None},
                                cached_encoders)
    rewards["needed"] -= len(settled)
    rewards["cached"] -= sum(cache.contains(key) for key in settled.values())
    rewards["settled"] = len(settled)
    trials = cfg.trials()
    param_trials = [{"trial": t, "rewards_key": None if t["labeller"]["labeller"] == "none" else
                     keys[t["dataset"], t["seed"], pipeline.setting_id(t["labeller"])]} for t in trials]
    ready = [p for p in param_trials if pairs[p["trial"]["dataset"]][0] is not None and (
        p["rewards_key"] is not None or p["trial"]["labeller"]["labeller"] == "none")]
    # quiet: the summary counts them against every trial, not only those whose inputs are known yet
    _, reused, borrowed = _drop_completed(cfg, ready, {label: agent for label, (agent, _) in pairs.items() if agent},
                                          quiet=True)
    taken = set(borrowed["trial_id"]) if len(borrowed) else set()
    complete = (set(reused["trial_id"]) if len(reused) else set()) | taken
    by_method: dict[str, list[int]] = {}
    for t in trials:
        name = t["labeller"]["labeller"] + "+" + t["learner"] if t["labeller"]["labeller"] != "none" else t["learner"]
        counts = by_method.setdefault(name, [0, 0])
        counts[0] += 1
        counts[1] += pipeline.trial_id(t) in complete
    missing = [label for label, (agent, _) in pairs.items() if agent is None]
    # their data or encoder is not here yet, so neither is the fingerprint or rewards key to match their rows by
    ready_ids = {pipeline.trial_id(p["trial"]) for p in ready}
    waiting = [t for t in trials if pipeline.trial_id(t) not in ready_ids]
    return {"trials": len(trials), "complete": len(complete), "reusable": len(taken), "encoders": encoders,
            "rewards": rewards, "methods": by_method, "missing_datasets": missing,
            "finished_waiting": len(_finished_by_config(cfg, waiting)), "waiting": len(waiting),
            "parquet": str(cfg.parquet_path), "cpus_per_trial": cfg.resources.cpus_per_trial,
            "gpus_per_trial": cfg.resources.gpus_per_trial}


def _finished_by_config(cfg: SweepConfig, trials: list[dict]) -> set[str]:
    """Trials whose finished rows (same trial config, every evaluation) are in the results file or a `reuse_from`
    file, whatever data and rewards made them: for trials whose data is not made or whose encoder is not pretrained
    yet, complete once those are there and match the rows'."""
    steps = pipeline.eval_steps(cfg.train)
    expected = {pipeline.trial_id(t): {"steps": steps, "config": pipeline.trial_config_json(t, cfg)} for t in trials}
    found: set[str] = set()
    for source in (cfg.parquet_path, *cfg.reuse_paths):
        if expected and storage.exists(source):
            found |= results.completed_trials(results.load(source), expected, compare=("config",))
    return found


def format_plan(cfg: SweepConfig, p: dict[str, Any]) -> str:
    complete = f"{p['complete'] - p['reusable']} already complete in {p['parquet']}" + (
        f", {p['reusable']} to be taken from reuse_from" if p["reusable"] else "")
    lines = [f"sweep {cfg.name!r}: {p['trials']} trials ({complete}), "
             f"{len(cfg.datasets)} dataset(s) x {len(cfg.seeds)} seed(s); each trial {p['cpus_per_trial']:g} CPU"
             + (f" + {p['gpus_per_trial']:g} GPU" if p["gpus_per_trial"] else ""),
             f"  encoders (ICVF): {p['encoders']['needed']} needed, {p['encoders']['cached']} cached",
             f"  reward settings: {p['rewards']['needed']} needed (dataset x seed x setting), "
             f"{p['rewards']['cached']} cached" + (f"; {p['rewards']['settled']} more not needed: every trial on them "
                                                   "is complete" if p["rewards"].get("settled") else "")]
    if p["missing_datasets"]:
        lines.append(f"  datasets not made yet: {', '.join(p['missing_datasets'])} (their encoders and rewards "
                     "cannot be cached yet)")
    if p["finished_waiting"]:
        lines.append(f"  {p['finished_waiting']} of the {p['waiting']} trials whose data or encoder is not here yet "
                     "have finished rows with the same config (here or in reuse_from): complete, their rewards not "
                     "made, once the data is made and the encoder pretrained again, if those match the rows'")
    lines.append("  trials per method (complete / all):")
    lines += [f"    {name:28s} {done:4d} / {n}" for name, (n, done) in p["methods"].items()]
    return "\n".join(lines)
