"""ailot.collect: SAC numerics, the pick rule, the five D4RL-style datasets from a tiny run on each of
Hopper, Walker2d and HalfCheetah, resuming, bad inputs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ailot.collect import (
    KINDS,
    SAC,
    CollectSettings,
    SACConfig,
    Stop,
    collect,
    dataset_id,
    load_buffer,
    pick,
    select_snapshots,
    tanh_gaussian_sample,
    update_chunk,
)
from ailot.data.loading import load_dataset
from ailot.data.reference import episodes_normalized_score
from ailot.errors import AilotInputError

# A few thousand env steps in all, small networks, few-hundred-transition datasets: seconds, not minutes.
TINY = CollectSettings(env_id="Hopper-v5", seed=0, train_steps=1200, start_steps=400, update_every=50, batch_size=64,
                       eval_every=400, eval_episodes=2, checkpoint_every=200, reference_episodes=3,
                       random_transitions=300, medium_transitions=250, expert_transitions=350,
                       sac=SACConfig(hidden_dims=(32, 32)))
STOP_AFTER = 500


# ------------------------------------------------------------------------------------------- numerics


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean, log_std = jnp.array([[0.3, -1.0]]), jnp.array([[-0.5, 0.2]])
    scale, bias = jnp.array([2.0, 0.5]), jnp.array([0.0, 1.0])
    a, logp = tanh_gaussian_sample(mean, log_std, jax.random.PRNGKey(0), scale, bias)
    y = np.asarray((a - bias) / scale, np.float64)  # in (-1, 1)
    u = np.arctanh(y)
    m, s = np.asarray(mean, np.float64), np.exp(np.asarray(log_std, np.float64))
    expected = np.sum(-0.5 * ((u - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
                      - np.log(1 - y**2) - np.log(np.asarray(scale)), -1)
    np.testing.assert_allclose(np.asarray(logp), expected, rtol=1e-4, atol=1e-4)


def _fixed_batch(n_updates: int, batch: int = 64, obs_dim: int = 5, action_dim: int = 2) -> dict:
    rng = np.random.default_rng(0)
    one = {"observations": rng.normal(size=(batch, obs_dim)), "actions": rng.uniform(-1, 1, (batch, action_dim)),
           "rewards": rng.normal(size=batch), "next_observations": rng.normal(size=(batch, obs_dim)),
           "terminals": (rng.random(batch) < 0.1).astype(float)}
    return {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n_updates, *np.shape(v))) for k, v in one.items()}


def test_sac_fixed_batch_critic_fits_and_alpha_moves_toward_target():
    """On one repeated batch the critic loss falls; alpha falls while the policy's entropy is above the target
    (-action_dim by default) and rises for a target above the largest reachable entropy (log 2^a ~ 1.4)."""
    sac0 = SAC.create(0, 5, -np.ones(2), np.ones(2), SACConfig(hidden_dims=(32, 32), critic_lr=1e-3, temp_lr=1e-3))
    assert float(sac0.target_entropy) == -2.0
    batch = _fixed_batch(1)  # [1, B, ...]: one update per dispatch, one compilation for both runs
    for target_entropy, direction in ((-2.0, -1), (5.0, 1)):
        sac = sac0.replace(target_entropy=jnp.float32(target_entropy))
        infos = []
        for _ in range(200):
            sac, info = update_chunk(sac, batch)
            infos.append(info)
        first, last = infos[0], infos[-1]
        assert float(first["entropy"]) > -2.0  # so alpha must fall toward the default target
        if direction < 0:
            assert float(last["critic_loss"]) < 0.6 * float(first["critic_loss"])
        alphas = np.array([float(i["alpha"]) for i in infos])
        assert np.all(np.sign(np.diff(alphas)) == direction)  # monotone: the sign of entropy - target never flips


# ------------------------------------------------------------------------------------------------ pick


def _evals(*pairs):
    return [{"step": step, "return_mean": ret} for step, ret in pairs]


def test_pick_expert_is_best_and_medium_nearest_a_third_among_earlier_snapshots():
    expert, medium = pick(_evals((10, 100.0), (20, 700.0), (30, 1200.0), (40, 2900.0), (50, 3000.0), (60, 1000.0)))
    assert expert["step"] == 50
    assert medium["step"] == 30  # |1200 - 1000| < |700 - 1000|; step 60 (exactly 1000) comes after the expert
    expert, medium = pick(_evals((10, 50.0), (20, 50.0), (30, 10.0)))
    assert expert["step"] == 20 and medium["step"] == 10  # ties: the later expert, the earlier medium
    expert, medium = pick(_evals((10, 500.0), (20, 100.0)))
    assert expert["step"] == medium["step"] == 10  # nothing before the expert: medium is the expert itself
    expert, medium = pick(_evals((10, 700.0), (20, 1200.0), (30, 3000.0)), medium_fraction=0.45)
    assert medium["step"] == 20  # |1200 - 1350| < |700 - 1350|


# ------------------------------------------------------------------------------------- the tiny suite

ENVS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5")
DIMS = {"Hopper-v5": (11, 3), "Walker2d-v5": (17, 6), "HalfCheetah-v5": (17, 6)}
D4RL_REFS = {"Hopper-v5": (-20.272305, 3234.3), "Walker2d-v5": (1.629008, 4592.3),
             "HalfCheetah-v5": (-280.178953, 12135.0)}
# A few hundred env steps per env, small networks, few-hundred-transition datasets: seconds per env, not minutes.
# 100-step episodes: HalfCheetah never terminates, and checkpoints (so the stop and resume) wait for an episode end.
TINY = CollectSettings(env_id="Hopper-v5", seed=0, train_steps=600, start_steps=200, update_every=50, batch_size=64,
                       max_episode_steps=100, eval_every=100, eval_episodes=2, checkpoint_every=100, select_every=200,
                       select_episodes=3, reference_episodes=3, random_transitions=300, medium_transitions=250,
                       expert_transitions=350, rollout_envs=4, sac=SACConfig(hidden_dims=(32, 32)))
STOP_AFTER = 300


@pytest.fixture(scope="module", autouse=True)
def _out_of_the_repo(tmp_path_factory):
    """Run this module in a temporary folder: MuJoCo appends a warning about HalfCheetah's model (settotalmass) to
    MUJOCO_LOG.TXT in the working directory each time the env is made."""
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(here)


def _tiny_run(env_id, root, work, whole_work):
    """TINY on `env_id` in two calls (stopped at STOP_AFTER, then resumed to the end, datasets written), and an
    uninterrupted train-only run to compare with."""
    s = dataclasses.replace(TINY, env_id=env_id)
    with pytest.raises(Stop):
        collect(s, work, root, progress=False, stop_after=STOP_AFTER)
    stopped = json.loads((work / "state.json").read_text())
    out = collect(s, work, root, progress=False)
    whole = collect(s, whole_work, root, progress=False, train_only=True)
    episodes = {kind: load_dataset(dataset_id(env_id, kind)) for kind in KINDS}
    return {"settings": s, "out": out, "stopped": stopped, "work": work, "whole": whole, "whole_work": whole_work,
            "episodes": episodes, "root": root}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`runs(env_id)`: that env's tiny run, made once per module, all in one Minari root (the ids differ by env).
    MINARI_DATASETS_PATH is restored afterwards."""
    root = tmp_path_factory.mktemp("collect_minari")
    made = {}
    old = os.environ.get("MINARI_DATASETS_PATH")

    def get(env_id):
        if env_id not in made:
            name = env_id.split("-")[0].lower()
            made[env_id] = _tiny_run(env_id, root, tmp_path_factory.mktemp(f"{name}_work"),
                                     tmp_path_factory.mktemp(f"{name}_whole"))
        return made[env_id]

    try:
        yield get
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _flat(ep, key):
    return np.concatenate([np.asarray(x) for x in getattr(ep, key)])


@pytest.mark.parametrize("env_id", ENVS)
def test_resume_continues_from_checkpoint(runs, env_id):
    run = runs(env_id)
    stopped, state = run["stopped"], run["out"]["state"]
    s1 = stopped["step"]
    assert STOP_AFTER <= s1 < TINY.train_steps and not stopped["training_done"]
    assert state["segments"] == [[0, s1], [s1, TINY.train_steps]]  # the second call began at the checkpoint
    assert state["training_done"] and state["step"] == TINY.train_steps
    buf = load_buffer(run["work"])
    assert len(buf["observations"]) == TINY.train_steps  # no step repeated or lost
    # the resumed run is the uninterrupted run: same buffer, same snapshots
    whole = load_buffer(run["whole_work"])
    for k in buf:
        np.testing.assert_array_equal(buf[k], whole[k], err_msg=k)
    assert [x["return_mean"] for x in state["snapshots"]] == [x["return_mean"] for x in run["whole"]["snapshots"]]
    assert [x["step"] for x in state["snapshots"]] == list(range(100, 601, 100))


@pytest.mark.parametrize("env_id", ENVS)
def test_expert_and_medium_follow_the_rule_on_the_selection_evaluation(runs, env_id):
    out = runs(env_id)["out"]
    selection = out["selection"]
    assert [x["step"] for x in selection] == [200, 400, 600]  # every select_every steps, not every snapshot
    assert all(x["episodes"] == TINY.select_episodes for x in selection)
    best = max(x["return_mean"] for x in selection)
    assert out["expert"]["return_mean"] == best
    earlier = [x for x in selection if x["step"] < out["expert"]["step"]] or [out["expert"]]
    gap = min(abs(x["return_mean"] - best / 3) for x in earlier)
    assert abs(out["medium"]["return_mean"] - best / 3) == gap and out["medium"] in earlier
    assert (out["expert"], out["medium"]) == pick(selection)


@pytest.mark.parametrize("env_id", ENVS)
def test_five_datasets_load_with_shapes_and_metadata(runs, env_id):
    import minari
    from gymnasium.envs.registration import EnvSpec

    run = runs(env_id)
    out, eps = run["out"], run["episodes"]
    medium_step = out["medium"]["step"]
    sizes = {"random": 300, "medium": 250, "expert": 350, "medium-replay": medium_step, "medium-expert": 600}
    obs_dim, action_dim = DIMS[env_id]
    for kind, ep in eps.items():
        assert (ep.obs_dim, ep.action_dim) == (obs_dim, action_dim), kind
        assert sum(len(r) for r in ep.rewards) == sizes[kind], kind
        # D4RL's references for the env, so normalized scores compare with D4RL's tables
        assert (ep.ref_min_score, ep.ref_max_score) == pytest.approx(D4RL_REFS[env_id]), kind
        spec = EnvSpec.from_json(ep.env_spec)
        assert (spec.id, spec.max_episode_steps) == (env_id, 100), kind
        assert all(t[-1] or u[-1] for t, u in zip(ep.terminations, ep.truncations)), kind
    assert out["refs"] == pytest.approx(D4RL_REFS[env_id])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = json.loads(minari.load_dataset(dataset_id(env_id, "medium")).storage.metadata["ailot_collection"])
    assert meta["train_steps"] == 600 and meta["medium_transitions"] == 250 and "expert_transitions" not in meta
    assert meta["snapshots"]["medium"]["step"] == medium_step and meta["references"] == "d4rl"
    assert (meta["own_references"]["ref_min_score"], meta["own_references"]["ref_max_score"]) == pytest.approx(
        out["own_refs"])
    assert meta["stats"]["transitions"] == 250
    ref_min, ref_max = out["refs"]
    np.testing.assert_allclose(episodes_normalized_score(eps["random"], np.array([ref_min, ref_max])), [0, 100])


@pytest.mark.parametrize("env_id", ENVS)
def test_medium_expert_is_medium_then_expert(runs, env_id):
    eps = runs(env_id)["episodes"]
    assert len(eps["medium-expert"].rewards) == len(eps["medium"].rewards) + len(eps["expert"].rewards)
    for key in ("observations", "actions", "rewards", "terminations", "truncations"):
        np.testing.assert_array_equal(_flat(eps["medium-expert"], key),
                                      np.concatenate([_flat(eps["medium"], key), _flat(eps["expert"], key)]))


@pytest.mark.parametrize("env_id", ENVS)
def test_medium_replay_is_the_buffer_up_to_the_medium_snapshot(runs, env_id):
    run = runs(env_id)
    m = run["out"]["medium"]["step"]
    ep = run["episodes"]["medium-replay"]
    buf = load_buffer(run["work"])
    f32 = {k: v[:m].astype(np.float32) for k, v in buf.items()}  # ailot's Episodes hold float32
    np.testing.assert_array_equal(np.concatenate([o[:-1] for o in ep.observations]), f32["observations"])
    np.testing.assert_array_equal(np.concatenate([o[1:] for o in ep.observations]), f32["next_observations"])
    np.testing.assert_array_equal(_flat(ep, "actions"), f32["actions"])
    np.testing.assert_array_equal(_flat(ep, "rewards"), f32["rewards"])
    np.testing.assert_array_equal(_flat(ep, "terminations"), buf["terminations"][:m])
    ends = np.flatnonzero(buf["terminations"][:m] | buf["truncations"][:m])  # the buffer's episodes, cut at m
    if len(ends) == 0 or ends[-1] != m - 1:
        ends = np.append(ends, m - 1)
    np.testing.assert_array_equal(np.cumsum([len(r) for r in ep.rewards]) - 1, ends)


@pytest.mark.parametrize("env_id", ENVS)
def test_rerun_redoes_nothing(runs, env_id, monkeypatch):
    from minari.storage import get_dataset_path

    import ailot.collect as collect_module

    run = runs(env_id)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(run["root"]))
    stamps = {k: os.path.getmtime(get_dataset_path(dataset_id(env_id, k))) for k in KINDS}
    monkeypatch.setattr(collect_module, "_evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    out = collect(run["settings"], run["work"], run["root"], progress=False)
    assert out["state"]["segments"] == run["out"]["state"]["segments"]
    assert {k: os.path.getmtime(get_dataset_path(dataset_id(env_id, k))) for k in KINDS} == stamps


def test_interrupted_selection_evaluates_only_what_is_missing(runs, tmp_path, monkeypatch):
    import shutil

    import ailot.collect as collect_module

    run = runs("Hopper-v5")
    work = tmp_path / "work"
    shutil.copytree(run["work"], work)
    done = json.loads((work / "selection.json").read_text())
    del done["400"]  # as if stopped after evaluating two of the three snapshots
    (work / "selection.json").write_text(json.dumps(done))
    calls = []
    real = collect_module._evaluate
    monkeypatch.setattr(collect_module, "_evaluate", lambda *a, **k: calls.append(a[4]) or real(*a, **k))
    state = json.loads((work / "state.json").read_text())
    sac = SAC.create(0, 11, -np.ones(3), np.ones(3), run["settings"].sac)
    again = select_snapshots(run["settings"], work, state, sac, progress=False, log=lambda _: None)
    assert len(calls) == 1
    assert again == run["out"]["selection"]  # the same seeds: the same returns as the first time


def test_overwrite_keeps_training_and_selection_unless_training_changes(runs, tmp_path, monkeypatch):
    import shutil

    import ailot.collect as collect_module

    run = runs("Hopper-v5")
    work, root = tmp_path / "work", tmp_path / "minari"
    shutil.copytree(run["work"], work)
    segments = run["out"]["state"]["segments"]
    monkeypatch.setattr(collect_module, "_evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    collect(run["settings"], work, root, progress=False)  # new root: the datasets from the same run
    other_pick = dataclasses.replace(run["settings"], medium_fraction=0.6)
    with pytest.raises(AilotInputError, match="other settings"):
        collect(other_pick, work, root, progress=False)
    out = collect(other_pick, work, root, progress=False, overwrite=True)
    assert out["state"]["segments"] == segments  # neither retrained nor re-evaluated
    assert (out["expert"], out["medium"]) == pick(run["out"]["selection"], 0.6)
    monkeypatch.undo()
    retrain = dataclasses.replace(other_pick, eval_episodes=1)
    with pytest.raises(AilotInputError, match="other settings"):
        collect(retrain, work, root, progress=False)
    assert collect(retrain, work, root, progress=False, overwrite=True)["state"]["segments"] == [[0, 600]]


@pytest.mark.parametrize("change, what", [
    (dict(env_id="NoSuchEnv-v0"), "NoSuchEnv-v0"),
    (dict(env_id="CartPole-v1"), "CartPole-v1"),
    (dict(train_steps=0), "train_steps"),
    (dict(medium_transitions=-5), "medium_transitions"),
    (dict(start_steps=5000), "start_steps"),
    (dict(select_every=150), "select_every"),
    (dict(select_episodes=0), "select_episodes"),
    (dict(max_episode_steps=0), "max_episode_steps"),
    (dict(references="mine"), "references"),
    (dict(medium_fraction=1.5), "medium_fraction"),
    (dict(env_id="InvertedPendulum-v5"), "InvertedPendulum-v5"),  # no D4RL references: needs references='own'
])
def test_bad_inputs_fail_before_work(tmp_path, change, what):
    with pytest.raises(AilotInputError, match=what) as info:
        collect(dataclasses.replace(TINY, **change), tmp_path / "work", tmp_path / "minari", progress=False)
    assert "Fix:" in str(info.value)
    assert not (tmp_path / "work").exists()


def test_collected_data_runs_through_the_sweep_stages(runs, tmp_path, monkeypatch):
    """medium-replay -> ICVF psi -> AILOT / OTR rewards against the expert dataset -> IQL -> normalized scores."""
    from ailot.cache import ArrayCache
    from ailot.config import sweep_config_from_dict
    from ailot.pipeline import load_pair, pretrain_encoder, relabel_settings, run_trial

    tiny_run = runs("Hopper-v5")

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny_run["root"]))
    ids = tiny_run["out"]["ids"]
    cfg = sweep_config_from_dict({
        "name": "collected", "storage": str(tmp_path),
        "datasets": [{"name": "hopper-mr", "agent": ids["medium-replay"], "expert": ids["expert"],
                      "task_family": "locomotion"}],
        "intents": {"hidden_dims": [16, 16], "num_steps": 40, "chunk": 20},
        "labellers": {"ailot": {}, "otr": {}},
        "learners": {"iql": {"hidden_dims": [16, 16]}},
        "train": {"steps": 40, "eval_every": 20, "eval_episodes": 2, "eval_envs": 2},
    })
    agent, expert = load_pair(cfg.datasets[0])
    assert (agent.ref_min_score, agent.ref_max_score) == pytest.approx(tiny_run["out"]["refs"])
    encoder = pretrain_encoder(agent, cfg.intents, 0, tmp_path, progress=False)
    cache = ArrayCache(str(tmp_path / "cache"))
    keyed = relabel_settings(agent, expert, cfg.labeller_settings(), encoder, cache, progress=False)
    assert sorted(s["labeller"] for s in keyed.values()) == ["ailot", "otr"]
    for key, setting in keyed.items():
        rewards = cache.get(key)["rewards"]
        assert rewards.shape == (agent.num_transitions,) and np.isfinite(rewards).all() and rewards.std() > 0
        if setting["labeller"] == "ailot":
            assert (rewards > 0).all() and (rewards <= setting["alpha"] + 1e-6).all()
        rows = []
        trial = {"dataset": "hopper-mr", "learner": "iql", "seed": 0, "labeller": setting}
        sinkhorn = cache.meta(key)["sinkhorn"]
        assert sinkhorn["problems"] == agent.num_episodes and 0 <= sinkhorn["converged"] <= 1
        run_trial(trial, cfg, agent, rewards, rewards_info=sinkhorn,
                  report=lambda row, learner, rows=rows: rows.append(row))
        assert [r["step"] for r in rows] == [20, 40]
        assert all(r["sinkhorn_converged"] == sinkhorn["converged"] for r in rows)
        assert all(r["sinkhorn_iterations"] == sinkhorn["iterations_median"] for r in rows)
        lo, hi = tiny_run["out"]["refs"]
        for r in rows:
            assert r["env_id"] == "Hopper-v5" and r["labeller"] == setting["labeller"]
            assert r["normalized_score"] == pytest.approx(100 * (r["return_mean"] - lo) / (hi - lo))


def test_collect_report_tables_what_was_made(runs, tmp_path, monkeypatch, capsys):
    """`ailot collect-report`: one training row per env with its timed speed and the pick the datasets were made
    from, one row per dataset with the sizes and scores stored at writing; a folder that is no run is refused."""
    from ailot.cli import main as ailot_main
    from ailot.collect_report import D4RL_MEDIUM_SCORE, read_run

    made = [runs(env_id) for env_id in ENVS]
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(made[0]["root"]))
    out = tmp_path / "collection"
    assert ailot_main(["collect-report", *(str(r["work"]) for r in made), "--out", str(out)]) == 0
    text = (out / "collection.md").read_text()
    assert (out / "sac_curves.png").stat().st_size > 10_000
    for run in made:
        env_id, result = run["settings"].env_id, run["out"]
        timed = read_run(run["work"])["timed"]
        # the two training calls (stopped, then resumed) are both timed, over every step
        assert timed["steps"] == TINY.train_steps and timed["seconds"] > 0
        e, m = result["expert"], result["medium"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {env_id} |"))
        assert f"| {e['step']:,}: {e['return_mean']:.0f} +- {e['return_std']:.0f} |" in row
        assert f"| {m['step']:,}: {m['return_mean']:.0f} ({e['return_mean'] / 3:.0f}) |" in row
        for kind in KINDS:
            st = result["stats"][kind]
            line = next(x for x in text.splitlines() if x.startswith(f"| {dataset_id(env_id, kind)} |"))
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[1:5] == [f"{st['transitions']:,}", f"{st['episodes']:,}", f"{st['return_mean']:.1f}",
                                  f"{st['normalized_score_mean']:.1f}"]
            name = env_id.split("-")[0].lower()
            assert cells[5] == (f"about {D4RL_MEDIUM_SCORE[name]:.0f}" if kind == "medium" else "")
    capsys.readouterr()
    assert ailot_main(["collect-report", str(tmp_path)]) == 2
    assert "no state.json" in capsys.readouterr().err


def test_a_recipe_rebuilds_the_five_datasets_bit_for_bit_training_sac_only_up_to_medium(runs, tmp_path, monkeypatch):
    """`--save-recipe` after a collection, `--from-recipe` elsewhere (a new Minari root, an empty work dir): the
    same five datasets, byte for byte, with SAC trained again only up to the medium snapshot."""
    from ailot.collect_report import read_run

    run = runs("Hopper-v5")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(run["root"]))  # restored after the test (collect sets it)
    s, medium = run["settings"], run["out"]["medium"]
    recipe = tmp_path / "recipe"
    collect(s, run["work"], run["root"], progress=False, save_recipe=recipe)
    made = sorted(str(p.relative_to(recipe)) for p in recipe.rglob("*") if p.is_file())
    actors = sorted({run["out"]["medium"]["file"], run["out"]["expert"]["file"]})
    assert made == sorted(["recipe.json", "references.json", "selection.json", "state.json", *actors])
    original = {kind: load_dataset(dataset_id(s.env_id, kind)).fingerprint() for kind in KINDS}

    work = tmp_path / "work"
    rebuilt = collect(s, work, tmp_path / "minari", progress=False, recipe=recipe)
    assert rebuilt["same_as_recipe"] == dict.fromkeys(KINDS, True)
    assert {kind: load_dataset(dataset_id(s.env_id, kind)).fingerprint() for kind in KINDS} == original
    replay = json.loads((work / "replay" / "state.json").read_text())
    assert medium["step"] <= replay["step"] < s.train_steps  # not the whole run: up to the medium snapshot
    assert (rebuilt["medium"]["step"], rebuilt["expert"]["step"]) == (medium["step"], run["out"]["expert"]["step"])
    # collect-report reads a recipe as it reads the work dir it came from
    ours, theirs = read_run(recipe), read_run(run["work"])
    for key in ("env_id", "snapshots", "selection", "references", "timed"):
        assert ours[key] == theirs[key], key

    with pytest.raises(AilotInputError, match=r"recipe .*was trained with other settings: .*'seed': 0.*Fix:"):
        collect(dataclasses.replace(s, seed=1), tmp_path / "work1", tmp_path / "minari1", progress=False,
                recipe=recipe)
    with pytest.raises(AilotInputError, match="made dataset 'medium' with other settings"):
        collect(dataclasses.replace(s, medium_transitions=99), tmp_path / "work2", tmp_path / "minari2",
                progress=False, recipe=recipe)
    with pytest.raises(AilotInputError, match="has no recipe.json"):
        collect(s, tmp_path / "work3", tmp_path / "minari3", progress=False, recipe=tmp_path)


COMMITTED_RECIPES = sorted((Path(__file__).resolve().parents[1] / "results" / "collection" / "recipes").glob("*/"))


@pytest.mark.parametrize("recipe", COMMITTED_RECIPES, ids=lambda p: p.name)
def test_a_committed_recipe_is_whole_and_made_with_the_default_settings(recipe):
    """`ailot collect --env <env> --seed 0 --from-recipe <it>` (the command the missing-dataset error gives) must
    accept it: the default settings, both actors, and a fingerprint for each of the five datasets."""
    from ailot.collect_recipe import read_recipe

    env_id = json.loads((recipe / "recipe.json").read_text())["env_id"]
    assert recipe.name == f"{env_id.lower()}-s0"
    made = read_recipe(recipe, CollectSettings(env_id=env_id, seed=0))
    assert sorted(made["fingerprints"]) == sorted(KINDS) and all(len(f) == 64 for f in made["fingerprints"].values())
    assert made["medium"]["step"] < made["expert"]["step"]


# ------------------------------------------------------------------------------------------- XLA's thread count

_ONE_UPDATE = """
import hashlib, sys
import numpy as np, jax.numpy as jnp, flax.serialization
from ailot import collect
if sys.argv[1] == "hold":
    collect.cores.hold_exactly(1)
rng = np.random.default_rng(0)
one = {"observations": rng.normal(size=(256, 17)), "actions": rng.uniform(-1, 1, (256, 6)),
       "rewards": rng.normal(size=256), "next_observations": rng.normal(size=(256, 17)),
       "terminals": (rng.random(256) < 0.1).astype(float)}
sac = collect.SAC.create(0, 17, -np.ones(6), np.ones(6), collect.SACConfig())
sac, _ = collect.update_chunk(sac, {k: jnp.asarray(v, jnp.float32)[None] for k, v in one.items()})
print(hashlib.sha256(flax.serialization.to_bytes(sac.actor.params)).hexdigest())
"""


def _one_sac_update(how: str, prefix: tuple[str, ...] = ()) -> str:
    out = subprocess.run([*prefix, sys.executable, "-c", _ONE_UPDATE, how], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[-1]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset"), reason="needs 2 cores, taskset")
def test_hold_exactly_sets_xla_thread_count_which_changes_sac_numerics():
    """Why a collection pins itself to XLA_CORES cores: one SAC update of the default networks on one XLA thread is
    not the same bytes as on two; `cores.hold_exactly(1)` before JAX starts gives exactly the one-core bytes
    (those of a process started on one core), so the same count gives the same data on any machine."""
    one_core = _one_sac_update("plain", ("taskset", "-c", "0"))
    held = _one_sac_update("hold")
    two_cores = _one_sac_update("plain", ("taskset", "-c", "0,1"))
    assert held == one_core
    assert two_cores != one_core
