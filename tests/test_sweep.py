"""The sweep end to end on a local Ray: 4 tiny trials, one injected failure, then --resume repeats nothing."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import local_ray

from ailot import pipeline, results
from ailot.config import sweep_config_from_dict
from ailot.errors import AilotInputError


@pytest.fixture(scope="module")
def ray_local():
    with local_ray("rayt") as ray:
        yield ray


def tiny_config(storage, agent_id, expert_id, **over):
    return sweep_config_from_dict({**{
        "name": "tiny",
        "storage": str(storage),
        "datasets": [{"name": "umaze", "agent": agent_id, "expert": expert_id, "task_family": "maze2d"}],
        "intents": {"hidden_dims": [32, 32], "num_steps": 200, "chunk": 100, "batch_size": 64},
        "labellers": {"ailot": {"k": 2}, "zero": {}},
        "learners": {"iql": {"hidden_dims": [32, 32]}},
        "seeds": [0, 1],
        "train": {"steps": 200, "eval_every": 100, "eval_episodes": 2, "eval_envs": 2, "chunk": 100,
                  "batch_size": 64},
        "resources": {"cpus_per_trial": 1, "max_failures": 2, "relabel_actors": 1},
    }, **over})


def read_audit(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.slow
def test_sweep_retries_from_checkpoint_and_resume_repeats_nothing(ray_local, pointmaze_umaze, tmp_path,
                                                                  monkeypatch):
    from ailot import sweep

    agent_id, expert_id = pointmaze_umaze
    cfg = tiny_config(tmp_path / "results", agent_id, expert_id)
    trials = cfg.trials()
    assert len(trials) == 4
    victim = pipeline.trial_id(next(t for t in trials if t["labeller"]["labeller"] == "ailot"))
    monkeypatch.setenv("AILOT_FAULT", f"{victim}:100:raise:{tmp_path / 'faults'}")

    summary = sweep.run_sweep(cfg, progress=False, plots=True)
    assert (tmp_path / "faults" / f"fault-{victim}").exists()  # the fault really fired
    df = results.load(cfg.parquet_path)
    assert len(df) == 4 * 2 and df["trial_id"].nunique() == 4
    assert not df.duplicated(["trial_id", "step"]).any()
    assert sorted(df["step"].unique()) == [100, 200]
    assert df["normalized_score"].notna().all() and "ailot+iql" in summary
    # each row says how well Sinkhorn converged for its rewards (NaN where no OT ran)
    ot = df["labeller"] == "ailot"
    assert df.loc[ot, "sinkhorn_converged"].between(0, 1).all() and (df.loc[ot, "sinkhorn_iterations"] >= 10).all()
    assert df.loc[~ot, ["sinkhorn_converged", "sinkhorn_iterations"]].isna().all().all()
    # training metrics ride with each row: IQL's value maxima and the bound they are checked against
    # (maze2d rewards scaled to [0, 1] -> 1 / (1 - 0.99); zero rewards -> 0)
    for labeller, info in zip(df["labeller"], df["train_info"].map(json.loads)):
        assert info["value/v_max"] >= info["value/v_mean"] and info["critic/q_max"] >= info["critic/q_mean"]
        assert info["value_bound"] == pytest.approx(100.0 if labeller == "ailot" else 0.0)

    audit = pd.DataFrame(read_audit(cfg.run_dir / "updates.jsonl"))
    # every trial trained 0->100 and 100->200 exactly once: the retried trial continued from its checkpoint
    assert len(audit) == 8 and not audit.duplicated(["trial_id", "from", "to"]).any()
    victim_rows = audit[audit["trial_id"] == victim].sort_values("from")
    assert list(victim_rows["from"]) == [0, 100] and victim_rows["pid"].nunique() == 2
    # one-CPU trials, two at a time on 2 CPUs: each ran pinned to a core of its own (ailot.cores)
    assert all(len(c) == 1 for c in audit["cores"])

    # pretraining and relabelling ran once per unique input: 2 encoders (one per seed), 3 reward entries
    # (AILOT per seed's encoder, zero shared by both seeds)
    encoders = [p for p in (cfg.run_dir / "cache" / "encoders").iterdir() if (p / "DONE").exists()]
    assert len(encoders) == 2
    reward_entries = sorted((cfg.run_dir / "cache" / "rewards").glob("*.json"))
    assert len(reward_entries) == 3
    mtimes = {p: p.stat().st_mtime_ns for p in reward_entries}

    monkeypatch.delenv("AILOT_FAULT")
    sweep.run_sweep(cfg, resume=True, progress=False, plots=False)
    assert len(read_audit(cfg.run_dir / "updates.jsonl")) == 8  # no learner update repeated
    assert {p: p.stat().st_mtime_ns for p in reward_entries} == mtimes  # nothing relabelled again
    df2 = results.load(cfg.parquet_path)
    pd.testing.assert_frame_equal(df.sort_values(["trial_id", "step"]).reset_index(drop=True),
                                  df2.sort_values(["trial_id", "step"]).reset_index(drop=True))

    # on a fresh machine (the reward cache gone, the encoders there or pretrained again) a rerun relabels nothing,
    # AILOT's settings included: every trial on them is complete, and its encoder names their rewards key
    rewards_dir = cfg.run_dir / "cache" / "rewards"
    rewards_dir.rename(tmp_path / "rewards-elsewhere")
    pairs = {ds.label: pipeline.load_pair(ds, progress=False) for ds in cfg.datasets}
    assert sweep.plan(cfg, pairs)["rewards"] == {"needed": 0, "cached": 0, "settled": 4}  # --dry-run's counts
    sweep.run_sweep(cfg, progress=False, plots=False)
    assert not rewards_dir.exists() or not any(rewards_dir.iterdir())
    assert len(read_audit(cfg.run_dir / "updates.jsonl")) == 8
    if rewards_dir.exists():
        rewards_dir.rmdir()
    (tmp_path / "rewards-elsewhere").rename(rewards_dir)

    # a grown config (BC added) rerun without --resume trains only the new trials and keeps the old rows
    grown = tiny_config(tmp_path / "results", agent_id, expert_id, learners={"iql": {"hidden_dims": [32, 32]},
                                                                              "bc": {"hidden_dims": [32, 32]}})
    sweep.run_sweep(grown, progress=False, plots=False)
    audit = pd.DataFrame(read_audit(cfg.run_dir / "updates.jsonl"))
    assert len(audit) == 8 + 2 * 2 and set(audit["trial_id"][8:]) == {
        pipeline.trial_id(t) for t in grown.trials() if t["learner"] == "bc"}
    df3 = results.load(cfg.parquet_path)
    assert df3["trial_id"].nunique() == 6 and len(df3) == 12
    pd.testing.assert_frame_equal(df2.reset_index(drop=True), df3[df3["learner"] != "bc"].reset_index(drop=True))

    # a differently named sweep pointed at this cache (longer training, AILOT only) pretrains and relabels nothing
    shared = tiny_config(tmp_path / "results", agent_id, expert_id, name="tiny-longer", cache=str(cfg.cache_dir),
                         labellers={"ailot": {"k": 2}}, seeds=[1],
                         train={"steps": 300, "eval_every": 100, "eval_episodes": 2, "eval_envs": 2, "chunk": 100,
                                "batch_size": 64})
    sweep.run_sweep(shared, progress=False, plots=False)
    assert shared.cache_dir == cfg.cache_dir and not (shared.run_dir / "cache").exists()
    assert len(list((cfg.cache_dir / "encoders").iterdir())) == 2
    assert {p: p.stat().st_mtime_ns for p in reward_entries} == mtimes
    assert sorted((cfg.cache_dir / "rewards").glob("*.json")) == reward_entries
    longer = results.load(shared.parquet_path)
    assert sorted(longer["step"]) == [100, 200, 300]
    assert set(longer["rewards_key"]) == set(df.loc[ot & (df["seed"] == 1), "rewards_key"])


@pytest.mark.slow
def test_sweep_on_a_storage_uri_writes_everything_there(ray_local, pointmaze_umaze, tmp_path, monkeypatch):
    from ailot import storage, sweep

    monkeypatch.chdir(tmp_path)  # a URI taken for a local path would show up here, as a directory 'file:'
    agent_id, expert_id = pointmaze_umaze
    bucket = tmp_path / "bucket"
    cfg = tiny_config(f"file://{bucket}", agent_id, expert_id, seeds=[0])
    sweep.run_sweep(cfg, progress=False, plots=True)
    assert not (tmp_path / "file:").exists()
    assert results.load(cfg.parquet_path)["trial_id"].nunique() == 2
    assert (bucket / "tiny.parquet").is_file() and (bucket / "tiny.geometry.parquet").is_file()
    assert {p.name for p in (bucket / "figures" / "tiny").glob("*.png")} >= {"learning_curves_umaze.png"}
    (encoder,) = (bucket / "tiny" / "cache" / "encoders").iterdir()
    assert (encoder / "DONE").is_file() and len(list((bucket / "tiny" / "cache" / "rewards").glob("*.npz"))) == 2
    # a lone encoder trains on cpus_per_encoder (= cpus_per_trial) cores, not on the whole 2-CPU node: XLA's
    # numerics follow its thread count, so the bytes must not depend on how many encoders were pretrained together
    assert json.loads((encoder / "DONE").read_text())["cpu_cores"] == 1
    updates = storage.join(cfg.run_dir, "updates.jsonl")
    assert len(storage.read_lines(updates)) == 2 * 2
    # rerun: the finished trials are read back from the URI's results file and not trained again
    sweep.run_sweep(cfg, progress=False, plots=False)
    assert len(storage.read_lines(updates)) == 2 * 2


def test_an_encoder_larger_than_any_node_is_refused(ray_local, tmp_path):
    from ailot import sweep

    cfg = tiny_config(tmp_path / "results", "a/b-v0", "a/c-v0", resources={"cpus_per_encoder": 64})
    assert cfg.resources.encoder_cpus == 64 and tiny_config(tmp_path, "a/b-v0", "a/c-v0").resources.encoder_cpus == 1
    with pytest.raises(AilotInputError, match=r"'resources.cpus_per_encoder'.*an ICVF task needs 64 CPUs"):
        sweep.check_schedulable(cfg, fixed=True)


def test_overestimation_warning_names_the_trial_and_the_bound(caplog):
    trial = {"dataset": "u", "learner": "iql", "seed": 3, "labeller": {"labeller": "true"}}
    with caplog.at_level("WARNING", logger="ailot.pipeline"):
        pipeline.warn_if_overestimating({"value/v_max": 99.0, "critic/q_max": 42.0}, 100.0, trial, 5000)
        assert not caplog.records  # within the bound: quiet
        pipeline.warn_if_overestimating({"value/v_max": 160.4, "critic/q_max": 158.8}, 100.0, trial, 60000)
    (record,) = caplog.records
    assert pipeline.trial_id(trial) in record.message and "true + iql, seed 3" in record.message
    assert "value/v_max 160.4" in record.message and "= 100.0" in record.message


def test_completed_trials_need_same_config_data_rewards_and_all_steps():
    row = {"trial_id": "t", "config": "c", "dataset_fingerprint": "f", "rewards_key": "r"}
    df = pd.DataFrame([{**row, "step": 100}, {**row, "step": 200}])
    want = {"steps": [100, 200], "config": "c", "dataset_fingerprint": "f", "rewards_key": "r"}
    assert results.completed_trials(df, {"t": want}) == {"t"}
    for change in ({"config": "c2"}, {"dataset_fingerprint": "f2"}, {"rewards_key": "r2"}, {"steps": [100, 300]}):
        assert results.completed_trials(df, {"t": {**want, **change}}) == set(), change
    assert results.completed_trials(df.drop(columns="rewards_key"), {"t": want}) == set()  # older files


def test_a_part_of_the_grid_by_labeller_and_learner_is_the_same_trials_fewer_of_them(tmp_path):
    """`--labellers ailot --learners iql` runs exactly the whole grid's AILOT + IQL trials (same ids, so their rows
    merge with the rest later); learners that take no reward stay unless --learners drops them; a name the config
    lacks is refused naming the flag."""
    from ailot.errors import AilotInputError
    from ailot.sweep_cli import part_of

    cfg = tiny_config(tmp_path, "a/b/agent-v0", "a/b/expert-v0",
                      learners={"iql": {"hidden_dims": [32, 32]}, "bc": {}})
    ids = {pipeline.trial_id(t): t for t in cfg.trials()}
    assert len(ids) == 2 * 2 + 2  # (ailot, zero) x iql x 2 seeds, bc x 2 seeds

    def part_ids(**flags):
        return {pipeline.trial_id(t) for t in part_of(cfg, None, None, **flags).trials()}

    ailot_iql = {i for i, t in ids.items() if t["learner"] == "iql" and t["labeller"]["labeller"] == "ailot"}
    bc = {i for i, t in ids.items() if t["learner"] == "bc"}
    assert len(ailot_iql) == 2 and len(bc) == 2
    assert part_ids(labellers="ailot", learners="iql") == ailot_iql
    assert part_ids(labellers="ailot") == ailot_iql | bc
    assert part_ids(learners="bc") == bc
    assert part_ids(labellers="zero, ailot", learners="iql,bc") == set(ids)
    for flag, value in (("labellers", "otr"), ("learners", "dwbc"), ("labellers", " , ")):
        with pytest.raises(AilotInputError, match=f"--{flag}.*use some of"):
            part_of(cfg, None, None, **{flag: value})


def test_a_part_of_the_grid_leaves_the_configs_geometry_check_alone(pointmaze_umaze, tmp_path):
    """`--seeds 1` must not overwrite the Fig. 8 check the whole config made with its first seed's encoder."""
    from types import SimpleNamespace

    from ailot.sweep import _write_geometry
    from ailot.sweep_cli import part_of

    agent_id, expert_id = pointmaze_umaze
    cfg = tiny_config(tmp_path, agent_id, expert_id)  # seeds 0, 1
    part = part_of(cfg, None, "1")
    assert part.seeds == (1,)
    pairs = {"umaze": pipeline.load_pair(cfg.dataset("umaze"), progress=False)}
    path = results.geometry_path(cfg.parquet_path)

    def encoder(scale):  # a stand-in psi whose geometry differs per seed (the check only calls .embed)
        return SimpleNamespace(embed=lambda s: scale * s[..., :2])

    whole = ("umaze", 0)  # what `ailot sweep --seeds 1` passes: the whole config's first dataset and seed
    _write_geometry(part, pairs, {("umaze", 1): encoder(2.0)}, whole)
    assert not path.exists()  # the part has no seed-0 encoder: nothing written
    _write_geometry(cfg, pairs, {("umaze", 0): encoder(1.0), ("umaze", 1): encoder(2.0)}, whole)
    written = path.read_bytes()
    _write_geometry(part, pairs, {("umaze", 1): encoder(2.0)}, whole)
    assert path.read_bytes() == written
    # and what is there is seed 0's psi (seed 1's stand-in would give 4x the squared distances)
    states = pairs["umaze"][0].states()[:200]
    seed0 = np.mean([np.sum((s[1:, :2] - s[:-1, :2]) ** 2, axis=-1).mean() for s in states if len(s) > 1])
    psi = results.read_geometry(path).query("space == 'psi' and k == 1")["mean_sq_dist"].item()
    assert psi == pytest.approx(seed0, rel=0.05)


def test_the_resume_hint_resumes_the_same_part_of_the_grid():
    """An interrupted `--seeds 0,1,2` run was told to resume with the whole grid: every seed would have run."""
    from ailot.sweep_cli import parse_args, resume_command

    args = parse_args(["--config", "tune/configs/benchmark-pointmaze-medium.yaml", "--storage", "results",
                       "--num-cpus", "1", "--seeds", "0,1,2", "--labellers", "otr,sqil", "--learners", "iql"])
    assert resume_command(args) == ("python tune/sweep.py --config tune/configs/benchmark-pointmaze-medium.yaml "
                                    "--storage results --num-cpus 1 --seeds 0,1,2 --labellers otr,sqil --learners "
                                    "iql --resume")
    whole = parse_args(["--config", "my sweep.yaml"])
    assert resume_command(whole) == "python tune/sweep.py --config 'my sweep.yaml' --resume"


def test_an_error_line_is_one_write_so_rays_log_thread_cannot_split_it(monkeypatch):
    """Ray prints workers' lines to the driver's stderr from another thread; print's separate newline write let one
    land between a resume hint and its newline (a CI failure of test_faults' interrupt test)."""
    import io
    import sys

    from ailot.sweep_cli import print_error

    writes = []

    class Recorder(io.StringIO):
        def write(self, text):
            writes.append(text)
            return super().write(text)

    monkeypatch.setattr(sys, "stderr", Recorder())
    print_error("error: sweep 'x' interrupted. Fix: resume with python tune/sweep.py --resume")
    assert writes == ["error: sweep 'x' interrupted. Fix: resume with python tune/sweep.py --resume\n"]


def test_dry_run_lists_a_dataset_not_made_yet_with_how_to_make_it(pointmaze_umaze, tmp_path, capsys, monkeypatch):
    """A locomotion sweep sized before its data exists: the dry run counts its trials and says to run
    `ailot collect`; the run itself refuses the missing dataset before Ray (tests/test_bad_inputs.py)."""
    import yaml

    import ailot.data.loading
    from ailot.sweep_cli import main as sweep_main

    # where no recipe is committed (tests/test_data_loading.py: where one is, the fix is its rebuild)
    monkeypatch.setattr(ailot.data.loading, "RECIPES", tmp_path / "no-recipes")
    raw = {"name": "sized", "storage": str(tmp_path / "results"),
           "datasets": [{"name": "umaze", "agent": pointmaze_umaze[0], "expert": pointmaze_umaze[1],
                         "task_family": "maze2d"},
                        {"name": "hopper-medium", "agent": "ailot/hopper/medium-v0", "expert": "same",
                         "env": "Hopper-v5", "task_family": "locomotion"}],
           "labellers": {"true": {}, "ailot": {}}, "learners": {"iql": {}, "bc": {}}, "seeds": [0, 1]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    # (the module's Ray may be up from earlier tests: that the dry run starts none is test_expert_methods')
    assert sweep_main(["--config", str(tmp_path / "c.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 trials (0 already complete" in out and "datasets not made yet: hopper-medium (" in out, out
    assert "hopper-medium: dataset 'ailot/hopper/medium-v0' is not here; make it with `ailot collect --env " \
           "Hopper-v5 --seed 0`" in out, out
    assert "finished rows" not in out, out

    # a fresh clone of finished results, before the data is made and the encoders pretrained: the trials whose rows
    # hold every evaluation with the same config are named as waiting for those, not as work left
    import pandas as pd

    from ailot import pipeline
    from ailot.config import load_sweep_config

    cfg = load_sweep_config(tmp_path / "c.yaml")
    hopper = [t for t in cfg.trials() if t["dataset"] == "hopper-medium"]
    umaze_ailot = [t for t in cfg.trials() if t["dataset"] == "umaze" and t["labeller"]["labeller"] == "ailot"]
    assert len(hopper) == 6 and len(umaze_ailot) == 2  # waiting: 8 (umaze's true and bc trials have their inputs)
    steps = pipeline.eval_steps(cfg.train)
    assert len(steps) > 1
    rows = []
    for i, t in enumerate([*hopper[:3], umaze_ailot[0]]):
        config = pipeline.trial_config_json(t, cfg) + (" " if i == 2 else "")  # the third: another config
        rows += [{"trial_id": pipeline.trial_id(t), "step": step, "config": config, "labeller": "true",
                  "dataset_fingerprint": "made elsewhere", "rewards_key": "k"} for step in steps]
    rows.append({**rows[0], "trial_id": pipeline.trial_id(hopper[3]), "config": pipeline.trial_config_json(
        hopper[3], cfg)})  # its first evaluation only: unfinished
    pd.DataFrame(rows).to_parquet(cfg.parquet_path)
    assert sweep_main(["--config", str(tmp_path / "c.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 trials (0 already complete" in out, out
    assert "3 of the 8 trials whose data or encoder is not here yet have finished rows with the same config" in out, out
