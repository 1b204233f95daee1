"""The stages of a sweep as plain functions: datasets -> encoders -> rewards -> learner trials.

`tune/sweep.py` strings them together on Ray; each stage also runs in-process (the tests and
`run_local` use that path). Stages 2 and 3 are content-addressed: a second request for the same inputs
reads the cache and computes nothing.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from ailot import storage
from ailot.cache import ArrayCache, content_key
from ailot.config import REWARD_FREE_LEARNERS, DatasetConfig, SweepConfig, TrainConfig
from ailot.data.episodes import Episodes
from ailot.errors import AilotInputError
from ailot.labellers import NEEDS_ENCODER, bucket_plan, label, reward_setting, solves_per_compile
from ailot.storage import StoragePath

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- provenance


@functools.cache
def versions() -> dict[str, str]:
    out = {}
    for pkg in ("ailot", "jax", "jaxlib", "flax", "optax", "ott-jax", "ray", "minari", "gymnasium",
                "gymnasium-robotics", "mujoco", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


@functools.cache
def git_commit(repo: Path | None = None) -> str:
    """HEAD of the checkout the package runs from, with "+dirty" when its code (ailot/, tune/) differs from it."""
    here = Path(__file__).resolve().parent if repo is None else Path(repo)

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5)

    try:
        head = git("rev-parse", "HEAD").stdout.strip()
        if not head:
            return "unknown"
        top = git("rev-parse", "--show-toplevel").stdout.strip()
        dirty = git("-C", top, "diff", "--quiet", "HEAD", "--", "ailot", "tune").returncode == 1
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------- 1. datasets


def load_pair(ds: DatasetConfig, progress: bool = True) -> tuple[Episodes, Episodes]:
    """Load (agent, expert), generating them first when missing and the config says how (with a progress bar
    unless `progress` is false)."""
    from ailot.data.loading import check_compatible, load_dataset

    try:
        agent = load_dataset(ds.agent, obs_keys=ds.obs_keys, env_id=ds.env)
        expert = load_dataset(ds.expert, obs_keys=ds.obs_keys, env_id=ds.env)
    except AilotInputError:
        if not ds.generate:
            raise
        from ailot.data.generate import generate_pointmaze

        log.info("datasets %s / %s not found locally: generating them (%s)", ds.agent, ds.expert, ds.generate)
        ids = generate_pointmaze(**{"progress": progress, **ds.generate})
        if tuple(ids) != (ds.agent, ds.expert):
            raise AilotInputError(f"datasets entry {ds.label!r}", f"generate made {ids}, not ({ds.agent}, {ds.expert})",
                                  "make 'agent'/'expert' match the ids the generate settings produce") from None
        agent = load_dataset(ds.agent, obs_keys=ds.obs_keys, env_id=ds.env)
        expert = load_dataset(ds.expert, obs_keys=ds.obs_keys, env_id=ds.env)
    check_compatible(agent, expert)
    check_env(agent, ds)
    return agent, expert


def check_env(agent: Episodes, ds: DatasetConfig) -> None:
    """The evaluation env exists and fits the data's actions and observations (once, at load)."""
    from ailot.envs import env_spec_from
    from ailot.evaluate import check_env as check_env_fits

    spec = agent.env_spec or ds.env
    what = f"dataset {agent.dataset_id!r}"
    if spec is None:
        raise AilotInputError(what, "has no evaluation environment", "set datasets[].env to a gymnasium id")
    if ds.env is not None:  # never ignored: it must exist, and agree with the environment the data names
        try:
            wanted = env_spec_from(ds.env).id
        except AilotInputError as exc:
            raise AilotInputError(f"datasets[].env of {ds.label!r}", f"{ds.env!r} is {exc.problem}", exc.fix) from None
        named = env_spec_from(agent.env_spec).id if agent.env_spec else wanted
        if named != wanted:
            raise AilotInputError(f"datasets[].env of {ds.label!r}", f"{ds.env!r} is not the environment the data "
                                  f"names ({named!r}), which evaluation uses",
                                  f"leave env out for this dataset, or set it to {named!r}")
    check_env_fits(spec, agent.action_dim, agent.obs_dim, agent.obs_keys, what=what)


# ---------------------------------------------------------------- 2. intents


def encoder_key(agent: Episodes, intents: dict, seed: int) -> str:
    return content_key("encoder", agent.fingerprint(), intents, seed)


def cached_encoder(agent: Episodes, intents: dict, seed: int, cache_dir: StoragePath):
    """The encoder cached for (dataset, intent settings, seed) under cache_dir/encoders/<key>, or None."""
    from ailot.intents import ICVFConfig, IntentEncoder

    path = storage.join(cache_dir, "encoders", encoder_key(agent, intents, seed))
    if not storage.exists(storage.join(path, "DONE")):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = storage.fetch_dir(path, Path(tmp))
        return IntentEncoder.load(local, config=ICVFConfig.from_dict(intents), obs_dim=agent.obs_dim)


def store_encoder(encoder, agent: Episodes, intents: dict, seed: int, cache_dir: StoragePath,
                  seconds: float) -> StoragePath:
    """Publish `encoder` under cache_dir/encoders/<key>, its DONE marker last: a half-written encoder is never
    picked up."""
    path = storage.join(cache_dir, "encoders", encoder_key(agent, intents, seed))
    with tempfile.TemporaryDirectory() as tmp:
        encoder.save(Path(tmp) / "encoder")
        storage.publish_dir(Path(tmp) / "encoder", path, "DONE", json.dumps({"seconds": seconds}))
    return path


def pretrain_encoder(agent: Episodes, intents: dict, seed: int, cache_dir: StoragePath, progress: bool = True):
    """ICVF psi for (dataset, seed), cached under cache_dir/encoders/<key>."""
    from ailot.intents import ICVFConfig, pretrain

    encoder = cached_encoder(agent, intents, seed, cache_dir)
    if encoder is None:
        t0 = time.time()
        encoder, _ = pretrain(agent.states(), ICVFConfig.from_dict(intents), seed=seed, progress=progress)
        store_encoder(encoder, agent, intents, seed, cache_dir, time.time() - t0)
        encoder = cached_encoder(agent, intents, seed, cache_dir)  # as every later run will read it
    return encoder


# ---------------------------------------------------------------- 3. rewards


def rewards_key(agent: Episodes, expert: Episodes | None, setting: dict, encoder_hash: str | None) -> str:
    rs = reward_setting(setting)
    needs_expert = rs["labeller"] in ("ailot", "otr")
    return content_key(
        "rewards", agent.fingerprint(), expert.fingerprint() if needs_expert and expert else None,
        encoder_hash if rs["labeller"] in NEEDS_ENCODER else None, rs,
    )


def relabel_settings(
    agent: Episodes,
    expert: Episodes,
    settings: list[dict],
    encoder,
    cache: ArrayCache,
    pool=None,
    progress: bool = True,
) -> dict[str, dict]:
    """Rewards for every setting, computed once: {cache key: setting}. Uses `pool` (Ray) when given."""
    enc_hash = encoder.content_hash() if encoder is not None else None
    keyed = {rewards_key(agent, expert, s, enc_hash): s for s in settings}
    todo = {k: s for k, s in keyed.items() if not cache.contains(k) or cache.get(k) is None}
    ot = {k: s for k, s in todo.items() if s["labeller"] in ("ailot", "otr")}
    for k, s in todo.items():
        if k not in ot:
            cache.put(k, {"rewards": label(s, agent, expert, encoder)}, meta=_meta(agent, s, enc_hash))
    if ot:
        t0 = time.time()
        if pool is not None:  # the pool plans its buckets for its actors' device
            results, stats = pool.relabel(agent, expert, encoder, list(ot.values()), progress=progress,
                                          return_info=True)
        else:
            buckets = bucket_plan(agent, expert, solves=solves_per_compile(list(ot.values())))  # one for all
            log.info("relabelling %d setting(s) x %d transitions in this process: length buckets %s", len(ot),
                     agent.num_transitions, list(buckets))
            results, stats = zip(*(label(s, agent, expert, encoder, buckets=buckets, progress=progress,
                                         return_info=True) for s in ot.values()))
        seconds = time.time() - t0
        for (k, s), r, st in zip(ot.items(), results, stats):
            summary = st.summary()
            cache.put(k, {"rewards": r}, meta={**_meta(agent, s, enc_hash), "seconds_for_batch": seconds,
                                               "sinkhorn": summary})
            log_sinkhorn(s, summary)
        log.info("relabelled %d settings x %d transitions in %.1fs", len(ot), agent.num_transitions, seconds)
    return keyed


def log_sinkhorn(setting: dict, summary: dict) -> None:
    """One line per OT setting; a warning when Sinkhorn stopped unconverged on more than 5% of the problems:
    their rewards come from plans whose marginals are off by more than the threshold."""
    name = ", ".join(f"{k}={v}" for k, v in setting.items())
    text = (f"{name}: Sinkhorn converged on {summary['converged']:.0%} of {summary['problems']} problems "
            f"(iterations: median {summary['iterations_median']:.0f}, max {summary['iterations_max']:.0f})")
    if setting["labeller"] == "ailot" and summary["converged"] < 0.95:  # OTR stops at 100 iterations by design
        log.warning("%s; the rest stopped unconverged: raise epsilon (or set relative_epsilon) or max_iterations",
                    text)
    else:
        log.info("%s", text)


def _meta(agent: Episodes, setting: dict, enc_hash: str | None) -> dict:
    return {"dataset_id": agent.dataset_id, "fingerprint": agent.fingerprint(), "setting": setting,
            "encoder": enc_hash, "created": time.time()}


# ---------------------------------------------------------------- 4. learn + evaluate


def trial_id(trial: dict) -> str:
    return content_key("trial", trial["dataset"], trial["learner"], trial["seed"], trial["labeller"])[:12]


def eval_steps(train: TrainConfig) -> list[int]:
    steps = list(range(train.eval_every, train.steps + 1, train.eval_every))
    return steps if steps and steps[-1] == train.steps else steps + [train.steps]


def learner_config(trial: dict[str, Any], cfg: SweepConfig):
    from ailot import learners

    name = trial["learner"]
    # the cosine lr decay spans this trial's updates unless the config says otherwise
    overrides = {"max_steps": cfg.train.steps, **(cfg.learners.get(name) or {})}
    return learners.make_config(name, overrides, task_family=cfg.dataset(trial["dataset"]).task_family)


def trial_config_json(trial: dict[str, Any], cfg: SweepConfig, learner_cfg=None) -> str:
    """Everything that determines a trial's training and evaluation besides its data and rewards (the
    results' `config` column): equal JSON + fingerprint + rewards key = the same trial."""
    learner_cfg = learner_config(trial, cfg) if learner_cfg is None else learner_cfg
    return json.dumps({"trial": trial, "learner_config": _jsonable(learner_cfg), "train": cfg.train.__dict__},
                      default=str)


def run_trial(
    trial: dict[str, Any],
    cfg: SweepConfig,
    agent: Episodes,
    rewards: np.ndarray | None,
    *,
    rewards_key: str | None = None,
    rewards_info: dict[str, float] | None = None,
    restore: Callable[[Any], Any] | None = None,
    report: Callable[[dict, Any], None],
    fail_hook: Callable[[int], None] | None = None,
) -> None:
    """Train one learner on (agent transitions, rewards); evaluate every eval_every steps and `report` rows.

    `restore(like)` returns (learner, rows) from a checkpoint or None; `report(row, learner)` must persist
    the row and a checkpoint of `learner` together, so a retried trial continues where it left off.
    RLlib learners (`rllib_*`) come from ailot.learners.rllib.trial_learner and go through the same loop.
    rewards_info: the rewards' Sinkhorn summary (cache meta "sinkhorn"), recorded in every row.
    """
    from ailot import learners

    name = trial["learner"]
    learner_cfg = learner_config(trial, cfg)
    prep = prepare_trial(trial, cfg, agent, rewards, learner_cfg, rewards_key=rewards_key, rewards_info=rewards_info)
    if name.startswith("rllib_"):
        from ailot.learners.rllib import trial_learner

        learner, train, policy = trial_learner(trial, cfg, agent, prep, learner_cfg)
    else:
        import jax.numpy as jnp

        learner = learners.get_learner(name).create(trial["seed"], agent.obs_dim, agent.action_dim, learner_cfg,
                                                   action_low=prep["action_low"], action_high=prep["action_high"])
        device_data = {k: jnp.asarray(v) for k, v in prep["data"].items()}

        def train(learner, n: int):
            learner, info = learners.train(learner, device_data, n, cfg.train.batch_size,
                                           chunk=min(cfg.train.chunk, n))
            return learner, {k: float(v[-1]) for k, v in info.items()}  # means over the last chunk

        def policy(learner):
            return functools.partial(learners.act, learner)

    restored = restore(learner) if restore else None
    if restored is not None:
        learner = restored
    rewards = prep["data"]["rewards"]
    bound = learners.value_bound(rewards, getattr(learner_cfg, "discount", None))
    # Constant rewards (zero reward): every action is equally good, so a critic's offset cannot steer the policy.
    checked_bound = bound if rewards.size and np.ptp(rewards) > 0 else None
    t0 = time.time()
    for target in eval_steps(cfg.train):
        step = int(learner.step)
        if step >= target:
            continue  # already done before a restore
        if fail_hook is not None:
            fail_hook(step)
        learner, info = train(learner, target - step)
        warn_if_overestimating(info, checked_bound, trial, int(learner.step))
        report(evaluation_row(policy(learner), int(learner.step), prep, trial, cfg, agent, t0,
                              train_info={**info, "value_bound": bound}), learner)


def warn_if_overestimating(info: dict[str, float], bound: float | None, trial: dict[str, Any], step: int) -> None:
    """Log when the critic's estimates pass the largest return the rewards allow (learners.value_bound): the
    values diverge upwards, and the policy drifts towards wherever they are most inflated (README, IQL on maze2d)."""
    from ailot import learners

    over = learners.overestimates(info, bound)
    if over:
        found = ", ".join(f"{k} {v:.1f}" for k, v in over.items())
        log.warning("trial %s (%s + %s, seed %s) at %d updates: %s above max(r) / (1 - discount) = %.1f; the "
                    "critic overestimates and later evaluations may decay", trial_id(trial),
                    trial["labeller"]["labeller"], trial["learner"], trial["seed"], step, found, bound)


def prepare_trial(trial: dict[str, Any], cfg: SweepConfig, agent: Episodes, rewards: np.ndarray | None,
                  learner_cfg: Any, rewards_key: str | None = None,
                  rewards_info: dict[str, float] | None = None) -> dict[str, Any]:
    """What every learner's trial shares: the transitions with scaled rewards (`data`), the evaluation env
    (`env_spec`, `action_low/high`) and the row fields that do not change between evaluations (`base_row`)."""
    from ailot import learners

    ds = cfg.dataset(trial["dataset"])
    name = trial["learner"]
    transitions = agent.to_transitions()
    if rewards is None or name in REWARD_FREE_LEARNERS:
        rewards = np.zeros(len(transitions), np.float32)
    learners.check_rewards(rewards)
    scaled = learners.scale_rewards(rewards, transitions.episode_ids, learners.reward_scaling(name, ds.task_family))
    data = {**transitions.as_dict(), "rewards": scaled.astype(np.float32)}
    data = {k: data[k] for k in ("observations", "actions", "rewards", "next_observations", "terminals")}
    env_spec = agent.env_spec or ds.env
    if env_spec is None:
        raise AilotInputError(f"dataset {agent.dataset_id!r}", "has no evaluation environment",
                              "set datasets[].env to a gymnasium id")
    from ailot.envs import make_env

    env = make_env(env_spec)
    env_id, low, high = env.spec.id, env.action_space.low, env.action_space.high
    env.close()
    setting = trial["labeller"]
    base_row = {
        "sweep": cfg.name, "trial_id": trial_id(trial), "dataset": ds.label, "dataset_id": agent.dataset_id,
        "dataset_fingerprint": agent.fingerprint(), "expert_id": ds.expert, "env_id": env_id,
        "labeller": setting["labeller"], "learner": name, "seed": trial["seed"],
        **{k: float(setting[k]) for k in ("k", "epsilon", "alpha", "tau", "n_experts") if k in setting},
        "expert_mode": setting.get("expert_mode", ""),
        "versions": json.dumps(versions()), "git_commit": git_commit(),
        "config": trial_config_json(trial, cfg, learner_cfg), "rewards_key": rewards_key or "",
        "sinkhorn_converged": (rewards_info or {}).get("converged", float("nan")),
        "sinkhorn_iterations": (rewards_info or {}).get("iterations_median", float("nan")),
    }
    return {"data": data, "env_spec": env_spec, "action_low": low, "action_high": high, "base_row": base_row}


def evaluation_row(policy: Callable, step: int, prep: dict[str, Any], trial: dict[str, Any], cfg: SweepConfig,
                   agent: Episodes, t0: float, train_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate `policy` ((observations, key) -> actions) after `step` updates: one result row, with the
    training metrics `train_info` as JSON."""
    from ailot.data.reference import normalized_score
    from ailot.evaluate import evaluate

    result = evaluate(
        policy, prep["env_spec"], num_episodes=cfg.train.eval_episodes, num_envs=cfg.train.eval_envs,
        seed=1_000_003 * trial["seed"] + step, obs_keys=agent.obs_keys,
    )
    return {
        **prep["base_row"], "step": int(step), "return_mean": result.return_mean,
        "return_std": result.return_std,
        "normalized_score": float(normalized_score(result.return_mean, agent.ref_min_score, agent.ref_max_score)),
        "success_rate": float(result.successes.mean()), "eval_episodes": len(result.returns),
        "wall_time_s": time.time() - t0, "timestamp": time.time(),
        "train_info": json.dumps(train_info or {}, sort_keys=True),
    }


def _jsonable(cfg) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    try:
        return dict(cfg)
    except (TypeError, ValueError):
        return str(cfg)
