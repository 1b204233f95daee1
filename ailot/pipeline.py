"""The stages of a sweep as plain functions: datasets -> encoders -> rewards -> learner trials.

`tune/sweep.py` strings them together on Ray; each stage also runs in-process (the tests and
`run_local` use that path). Stages 2 and 3 are content-addressed: a second request for the same inputs
reads the cache and computes nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ailot import labellers, storage
from ailot.cache import ArrayCache, content_key
from ailot.config import DatasetConfig, SweepConfig, TrainConfig
from ailot.data.episodes import Episodes, top_n_episodes
from ailot.errors import AilotInputError
from ailot.labellers import bucket_plan, label, solves_per_compile
from ailot.provenance import git_commit, versions
from ailot.storage import StoragePath

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- 1. datasets


def load_pair(ds: DatasetConfig, progress: bool = True) -> tuple[Episodes, Episodes]:
    """Load (agent, expert), generating them first when missing and the config says how (with a progress bar
    unless `progress` is false). With `expert: same` (ds.expert == ds.agent, OTR's protocol) the expert dataset
    is the agent dataset itself, loaded once: the expert set is then its own top-N episodes."""
    from ailot.data.loading import check_compatible, load_dataset

    def load_both() -> tuple[Episodes, Episodes]:
        agent = load_dataset(ds.agent, obs_keys=ds.obs_keys, env_id=ds.env)
        if ds.expert_is_agent:
            return agent, agent
        return agent, load_dataset(ds.expert, obs_keys=ds.obs_keys, env_id=ds.env)

    try:
        agent, expert = load_both()
    except AilotInputError:
        if not ds.generate:
            raise
        from ailot.data.generate import generate_pointmaze

        log.info("datasets %s / %s not found locally: generating them (%s)", ds.agent, ds.expert, ds.generate)
        ids = generate_pointmaze(**{"progress": progress, **ds.generate})
        if ids[0] != ds.agent or not (ds.expert_is_agent or ids[1] == ds.expert):
            raise AilotInputError(f"datasets entry {ds.label!r}", f"generate made {ids}, not ({ds.agent}, {ds.expert})",
                                  "make 'agent'/'expert' match the ids the generate settings produce") from None
        agent, expert = load_both()
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
    from ailot.intents import encoder_settings

    # the settings as given, except that a changed ICVF default is named (intents.LEGACY_VALUES)
    return content_key("encoder", agent.fingerprint(), encoder_settings(intents), seed)


def cached_encoder(agent: Episodes, intents: dict, seed: int, cache_dir: StoragePath):
    """The encoder cached for (dataset, intent settings, seed) under cache_dir/encoders/<key>, or None."""
    from ailot.intents import ICVFConfig, IntentEncoder

    path = storage.join(cache_dir, "encoders", encoder_key(agent, intents, seed))
    if not storage.exists(storage.join(path, "DONE")):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = storage.fetch_dir(path, Path(tmp))
        return IntentEncoder.load(local, config=ICVFConfig.from_dict(intents), obs_dim=agent.obs_dim)


def encoder_seconds(agent: Episodes, intents: dict, seed: int, cache_dir: StoragePath) -> float | None:
    """How long the cached encoder for (dataset, intent settings, seed) took to pretrain, or None."""
    done = storage.join(cache_dir, "encoders", encoder_key(agent, intents, seed), "DONE")
    if not storage.exists(done):
        return None
    try:
        return float(json.loads(storage.read_bytes(done))["seconds"])
    except (ValueError, KeyError, TypeError):
        return None


def store_encoder(encoder, agent: Episodes, intents: dict, seed: int, cache_dir: StoragePath,
                  seconds: float, cpu_cores: int | None = None) -> StoragePath:
    """Publish `encoder` under cache_dir/encoders/<key>, its DONE marker last: a half-written encoder is never
    picked up. The marker says how long it took and, made on a CPU, on how many cores (XLA's thread count)."""
    path = storage.join(cache_dir, "encoders", encoder_key(agent, intents, seed))
    done = {"seconds": seconds} | ({"cpu_cores": cpu_cores} if cpu_cores else {})
    with tempfile.TemporaryDirectory() as tmp:
        encoder.save(Path(tmp) / "encoder")
        storage.publish_dir(Path(tmp) / "encoder", path, "DONE", json.dumps(done))
    return path


def pretrain_encoder(agent: Episodes, intents: dict, seed: int, cache_dir: StoragePath, progress: bool = True):
    """ICVF psi for (dataset, seed), cached under cache_dir/encoders/<key>."""
    from ailot.intents import ICVFConfig, pretrain

    encoder = cached_encoder(agent, intents, seed, cache_dir)
    if encoder is None:
        t0 = time.time()
        # every observation, s_T included: ICVF's own settings pick the training pairs
        encoder, _ = pretrain(agent.observations, ICVFConfig.from_dict(intents), seed=seed, progress=progress)
        store_encoder(encoder, agent, intents, seed, cache_dir, time.time() - t0)
        encoder = cached_encoder(agent, intents, seed, cache_dir)  # as every later run will read it
    return encoder


# ---------------------------------------------------------------- 3. rewards


def rewards_key(agent: Episodes, expert: Episodes | None, setting: dict, encoder_hash: str | None,
                seed: int | None = None) -> str:
    """The cache key of one setting's rewards: what its labeller declares it reads (`Labeller.cache_key`)."""
    return labellers.get(setting["labeller"]).cache_key(setting, agent, expert, encoder_hash, seed)


def relabel_settings(
    agent: Episodes,
    expert: Episodes,
    settings: list[dict],
    encoder,
    cache: ArrayCache,
    pool=None,
    progress: bool = True,
    seed: int = 0,
    expert_actions: bool = True,
) -> dict[str, dict]:
    """Rewards for every setting, computed once: {cache key: setting}. Labellers declared `on_pool` run on
    `pool` (Ray) when given; the others (and all without a pool) run here. seed: for labellers that train."""
    enc_hash = encoder.content_hash() if encoder is not None else None
    keyed = {rewards_key(agent, expert, s, enc_hash, seed): s for s in settings}
    todo = {k: s for k, s in keyed.items() if not cache.contains(k) or cache.get(k) is None}
    for s in todo.values():  # every labeller's inputs, before any of them works
        labellers.get(s["labeller"]).check_inputs(s, expert, encoder, expert_actions)
    pooled = {k: s for k, s in todo.items() if labellers.get(s["labeller"]).on_pool}
    for k, s in todo.items():
        if k not in pooled:
            t0 = time.time()
            rewards, info = label(s, agent, expert, encoder, seed=seed, progress=progress, return_info=True)
            cache.put(k, {"rewards": rewards}, meta={**_meta(agent, s, enc_hash), "seconds": time.time() - t0,
                                                     "info": info})
            log.info("%s: %d rewards in %.1fs", s["labeller"], len(rewards), time.time() - t0)
    if pooled:
        t0 = time.time()
        if pool is not None:  # the pool plans its buckets for its actors' device
            results, stats = pool.relabel(agent, expert, encoder, list(pooled.values()), progress=progress,
                                          return_info=True)
        else:
            buckets = bucket_plan(agent, expert, solves=solves_per_compile(list(pooled.values())))  # one for all
            log.info("relabelling %d setting(s) x %d transitions in this process: length buckets %s", len(pooled),
                     agent.num_transitions, list(buckets))
            results, stats = zip(*(label(s, agent, expert, encoder, buckets=buckets, progress=progress,
                                         return_info=True) for s in pooled.values()))
        seconds = time.time() - t0
        for (k, s), r, st in zip(pooled.items(), results, stats):
            summary = st.summary()
            cache.put(k, {"rewards": r}, meta={**_meta(agent, s, enc_hash), "seconds_for_batch": seconds,
                                               "sinkhorn": summary})
            log_sinkhorn(s, summary)
        log.info("relabelled %d settings x %d transitions in %.1fs", len(pooled), agent.num_transitions, seconds)
    return keyed


def rewards_for(ds: DatasetConfig, pair: tuple[Episodes, Episodes], seed: int, settings: list[dict],
                cfg: SweepConfig, *, encoder=None, pool=None, progress: bool = True) -> dict[str, str]:
    """The one chain "dataset pair -> encoder -> rewards" for (dataset, seed): the encoder when a setting needs
    one (read from the cache, pretrained there when missing), then every setting's rewards (cached, computed
    when missing, on `pool` where the labeller runs there). Returns {setting_id(s): cache key}. encoder: the
    (dataset, seed) encoder when the caller has it already."""
    agent, expert = pair
    if encoder is None and any(labellers.get(s["labeller"]).uses_encoder for s in settings):
        encoder = pretrain_encoder(agent, cfg.intents, seed, cfg.cache_dir, progress=progress)
    cache = rewards_cache(cfg)
    keyed = relabel_settings(agent, expert, settings, encoder, cache, pool=pool, progress=progress, seed=seed,
                             expert_actions=ds.expert_actions)
    by_setting = {setting_id(s): k for k, s in keyed.items()}
    return {setting_id(s): by_setting[setting_id(s)] for s in settings}


def rewards_cache(cfg: SweepConfig) -> ArrayCache:
    return ArrayCache(str(storage.join(cfg.cache_dir, "rewards")))


def setting_id(setting: dict) -> str:
    """A labeller setting as a stable string (dict keys sorted)."""
    return json.dumps(setting, sort_keys=True, default=str)


def log_sinkhorn(setting: dict, summary: dict) -> None:
    """One line per OT setting; a warning when Sinkhorn stopped unconverged on more than 5% of the problems:
    their rewards come from plans whose marginals are off by more than the threshold."""
    name = ", ".join(f"{k}={v}" for k, v in setting.items())
    text = (f"{name}: Sinkhorn converged on {summary['converged']:.0%} of {summary['problems']} problems "
            f"(iterations: median {summary['iterations_median']:.0f}, max {summary['iterations_max']:.0f})")
    if labellers.get(setting["labeller"]).uses_encoder and summary["converged"] < 0.95:  # OTR stops at 100 by design
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
    expert: Episodes | None = None,
) -> None:
    """Train one learner on (agent transitions, rewards); evaluate every eval_every steps and `report` rows.

    `restore(like)` returns (learner, rows) from a checkpoint or None; `report(row, learner)` must persist
    the row and a checkpoint of `learner` together, so a retried trial continues where it left off.
    Every learner, JAX or RLlib, comes through the same adapter (`ailot.learners.trial.build`).
    rewards_info: the rewards' Sinkhorn summary (cache meta "sinkhorn"), recorded in every row. expert: the
    expert dataset, for labellers that add its transitions (SQIL) and learners that read it (SMODICE, ...).
    """
    from ailot import learners
    from ailot.learners import trial as trial_learners

    name = trial["learner"]
    learner_cfg = learner_config(trial, cfg)
    prep = prepare_trial(trial, cfg, agent, rewards, learner_cfg, rewards_key=rewards_key, rewards_info=rewards_info,
                         expert=expert)
    setting = trial["labeller"]
    built = trial_learners.build(name, learner_cfg, trial_learners.TrialInputs(
        seed=trial["seed"], data=prep["data"], action_low=prep["action_low"], action_high=prep["action_high"],
        batch_size=cfg.train.batch_size, chunk=cfg.train.chunk, cpus=cfg.resources.cpus_per_trial,
        task_family=cfg.dataset(trial["dataset"]).task_family, trial_id=trial_id(trial), agent=agent,
        labeller_setting=setting,
        reward_setting=labellers.reward_setting(setting) if setting["labeller"] != "none" else None))
    learner, train, policy = built.learner, built.train, built.policy
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
                  rewards_info: dict[str, float] | None = None, expert: Episodes | None = None) -> dict[str, Any]:
    """What every learner's trial shares: the transitions with scaled rewards (`data`: plus the expert transitions
    a labeller adds, as SQIL's, and the expert set of learners that read it), the evaluation env (`env_spec`,
    `action_low/high`) and the row fields that do not change between evaluations (`base_row`)."""
    from ailot import learners

    ds = cfg.dataset(trial["dataset"])
    name = trial["learner"]
    setting = trial["labeller"]
    transitions = agent.to_transitions()
    data = {k: v for k, v in transitions.as_dict().items() if k in ("observations", "actions", "next_observations",
                                                                       "terminals")}
    if rewards is None or learners.reward_free(name):
        rewards = np.zeros(len(transitions), np.float32)
    learners.check_rewards(rewards)
    episode_ids = transitions.episode_ids
    added = None
    if setting["labeller"] != "none" and getattr(labellers.get(setting["labeller"]), "adds_expert_transitions", False):
        added = labellers.get(setting["labeller"]).extra_transitions(setting, _need_expert(expert, setting["labeller"]))
        rewards = np.concatenate([rewards, added["rewards"]])
        episode_ids = np.concatenate([episode_ids, episode_ids.max() + 1 + _episode_ids_of(added["terminals"])])
    scaling = learners.reward_scaling(name, ds.task_family, learner_cfg)  # a learner config may choose it
    data["rewards"] = learners.scale_rewards(rewards, episode_ids, scaling).astype(np.float32)
    if added is not None:  # scaled once with the agent data, then repeated to their share of the batches
        data = _with_added_transitions(data, added, len(transitions),
                                       float(getattr(labellers.get(setting["labeller"]), "expert_batch_fraction", 0)))
    if learners.expert_input(name) is not None:
        learners.check_expert_input(name, ds.expert_actions)
        demo = top_n_episodes(_need_expert(expert, name), int(getattr(learner_cfg, "n_experts", 1))).to_transitions()
        data.update(learners.expert_arrays(demo.observations, demo.actions if ds.expert_actions else None,
                                           demo.next_observations, demo.terminals))
        data["initial_observations"] = learners.initial_observations(transitions.observations,
                                                                     transitions.episode_ids)
    env_spec = agent.env_spec or ds.env
    if env_spec is None:
        raise AilotInputError(f"dataset {agent.dataset_id!r}", "has no evaluation environment",
                              "set datasets[].env to a gymnasium id")
    from ailot.envs import make_env

    env = make_env(env_spec)
    env_id, low, high = env.spec.id, env.action_space.low, env.action_space.high
    env.close()
    base_row = {
        "sweep": cfg.name, "trial_id": trial_id(trial), "dataset": ds.label, "dataset_id": agent.dataset_id,
        "dataset_fingerprint": agent.fingerprint(), "expert_id": ds.expert, "env_id": env_id,
        "labeller": setting["labeller"], "learner": name, "seed": trial["seed"],
        **{k: float(setting[k]) for k in ("k", "epsilon", "alpha", "tau", "n_experts") if k in setting},
        "expert_mode": setting.get("expert_mode", ""),
        "expert_actions": labellers.reads_expert_actions(setting) or learners.uses_expert_actions(name),
        "versions": json.dumps(versions()), "git_commit": git_commit(),
        "config": trial_config_json(trial, cfg, learner_cfg), "rewards_key": rewards_key or "",
        "sinkhorn_converged": (rewards_info or {}).get("converged", float("nan")),
        "sinkhorn_iterations": (rewards_info or {}).get("iterations_median", float("nan")),
    }
    return {"data": data, "env_spec": env_spec, "action_low": low, "action_high": high, "base_row": base_row}


def trials_read_expert(cfg: SweepConfig) -> bool:
    """Whether some trial of `cfg` reads the expert set itself (a labeller that adds expert transitions, or a
    learner with an expert input), so the sweep must hand the expert episodes to the trials."""
    from ailot import learners

    return any(learners.expert_input(n) is not None for n in cfg.learners) or any(
        getattr(labellers.get(n), "adds_expert_transitions", False) for n in cfg.labellers)


def _need_expert(expert: Episodes | None, who: str) -> Episodes:
    if expert is None:
        raise AilotInputError(repr(who), "reads the expert set but was given none",
                              "pass the expert episodes (the sweep hands them to every trial)")
    return expert


def _episode_ids_of(terminals: np.ndarray) -> np.ndarray:
    """Episode ids [E] of contiguous transitions whose episodes end where `terminals` is set or at the end."""
    ends = np.asarray(terminals, bool)
    return np.concatenate([[0], np.cumsum(ends[:-1])]).astype(np.int64) if len(ends) else np.zeros(0, np.int64)


def _with_added_transitions(data: dict[str, np.ndarray], added: dict[str, np.ndarray], num_agent: int,
                            fraction: float) -> dict[str, np.ndarray]:
    """Agent transitions followed by the added ones (their rewards already scaled in `data`), the added ones
    repeated so they make about `fraction` of uniform batches (SQIL samples half its batch from the
    demonstrations; 0: once each)."""
    n_added = len(added["rewards"])
    repeats = max(1, round(fraction / (1 - fraction) * num_agent / n_added)) if 0 < fraction < 1 else 1
    out = {}
    for k in ("observations", "actions", "next_observations", "terminals"):
        out[k] = np.concatenate([data[k], np.tile(np.asarray(added[k], data[k].dtype),
                                                  (repeats,) + (1,) * (data[k].ndim - 1))])
    out["rewards"] = np.concatenate([data["rewards"][:num_agent], np.tile(data["rewards"][num_agent:], repeats)])
    return out


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
