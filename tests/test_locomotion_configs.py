"""tune/configs/benchmark-locomotion.yaml (our D4RL-style data) and d4rl-locomotion.yaml (D4RL's own files) are
one sweep on two data sources: they may differ only in the sweep name, the datasets' agent ids, and `reuse_from`
(benchmark-hopper's finished trials, on our data only).

The files are compared as parsed YAML, not through load_sweep_config: `expert: same` and the seabo / oril
labellers are checked by the config loader only once those land."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CONFIGS = Path(__file__).resolve().parent.parent / "tune" / "configs"
ENVS = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}
KINDS = ("medium", "medium-replay", "medium-expert")


@pytest.fixture(scope="module")
def configs():
    return {name: yaml.safe_load((CONFIGS / f"{name}-locomotion.yaml").read_text()) for name in ("benchmark", "d4rl")}


def _without_sources(cfg: dict) -> dict:
    out = copy.deepcopy(cfg)
    out.pop("name")
    out.pop("reuse_from", None)
    for entry in out["datasets"]:
        entry.pop("agent")
    return out


def test_the_two_configs_differ_only_in_the_sweep_name_and_the_agent_ids(configs):
    bench, d4rl = configs["benchmark"], configs["d4rl"]
    assert _without_sources(bench) == _without_sources(d4rl)
    assert (bench["name"], d4rl["name"]) == ("benchmark-locomotion", "d4rl-locomotion")
    assert [e["name"] for e in bench["datasets"]] == [e["name"] for e in d4rl["datasets"]]  # rows line up


def test_the_nine_datasets_name_the_same_env_and_kind_in_both(configs):
    names = [f"{env}-{kind}" for env in ENVS for kind in KINDS]
    for which, cfg in configs.items():
        assert [e["name"] for e in cfg["datasets"]] == names, which
        for entry in cfg["datasets"]:
            env, kind = entry["name"].split("-", 1)
            assert entry["expert"] == "same" and entry["task_family"] == "locomotion", entry
            assert entry["env"] == ENVS[env], entry
            expected = (f"ailot/{env}/{kind}-v0" if which == "benchmark"
                        else f"data/d4rl/{env}_{kind.replace('-', '_')}-v2.hdf5")
            assert entry["agent"] == expected


def test_the_d4rl_files_get_d4rl_reference_scores_by_name(configs):
    from ailot.data.reference import REF_MAX_SCORE, REF_MIN_SCORE, d4rl_reference

    for entry in configs["d4rl"]["datasets"]:
        env, kind = entry["name"].split("-", 1)
        table = f"{env}-{kind}-v2"
        assert d4rl_reference(entry["agent"]) == (REF_MIN_SCORE[table], REF_MAX_SCORE[table])
        # our datasets carry the same pair (ailot.collect, references: d4rl)
        assert d4rl_reference(None, entry["env"]) == (REF_MIN_SCORE[table], REF_MAX_SCORE[table])


def test_the_sweep_grid(configs):
    cfg = configs["benchmark"]
    assert sorted(cfg["labellers"]) == ["ailot", "oril", "otr", "seabo", "true"]
    assert cfg["learners"] == {"iql": {}, "bc": {}}  # IQL at its locomotion preset, no overrides
    assert cfg["seeds"] == [0, 1, 2]
    assert cfg["train"]["steps"] == 30000


def test_every_other_key_loads(configs):
    """What the loader knows today accepts the rest of both files: the expert swapped for the agent (what `same`
    means) and the labellers still being added left out."""
    from ailot.config import LABELLERS, sweep_config_from_dict

    for which, cfg in configs.items():
        raw = copy.deepcopy(cfg)
        for entry in raw["datasets"]:
            entry["expert"] = entry["agent"]
        raw["labellers"] = {k: v for k, v in raw["labellers"].items() if k in LABELLERS}
        loaded = sweep_config_from_dict(raw)
        assert len(loaded.datasets) == 9 and loaded.train.steps == 30000, which


def test_the_hopper_benchmark_shares_the_locomotion_benchmarks_cache_data_and_settings(configs):
    """benchmark-hopper.yaml reads benchmark-locomotion's cache: its hopper datasets, ICVF, training budget and the
    labeller settings both sweeps run must be the same, or the shared entries would not match (content-addressed:
    nothing wrong would be read, but nothing would be shared)."""
    bench = configs["benchmark"]
    hopper = yaml.safe_load((CONFIGS / "benchmark-hopper.yaml").read_text())
    assert hopper["cache"] == "results/benchmark-locomotion/cache"
    assert hopper["datasets"] == [d for d in bench["datasets"] if d["name"].startswith("hopper-")]
    assert (hopper["intents"], hopper["train"], hopper["seeds"]) == (bench["intents"], bench["train"], bench["seeds"])
    for name in ("ailot", "otr", "oril", "true"):
        assert hopper["labellers"][name] == bench["labellers"][name], name
    assert bench["labellers"]["seabo"] == {"mode": "sas"} and "sas" in hopper["labellers"]["seabo"]["mode"]


def test_every_hopper_trial_of_the_locomotion_benchmark_is_one_of_benchmark_hoppers():
    """benchmark-locomotion takes benchmark-hopper's finished trials (`reuse_from`): that needs each of its hopper
    trials to be one of benchmark-hopper's, the same id and the same trial config (rewards come from the one cache)."""
    from ailot import pipeline
    from ailot.config import load_sweep_config

    bench = load_sweep_config(CONFIGS / "benchmark-locomotion.yaml")
    hopper = load_sweep_config(CONFIGS / "benchmark-hopper.yaml")
    assert bench.reuse_from == ("benchmark-hopper",)
    theirs = {pipeline.trial_id(t): pipeline.trial_config_json(t, hopper) for t in hopper.trials()}
    ours = [t for t in bench.trials() if t["dataset"].startswith("hopper-")]
    assert len(ours) == 3 * 6 * 3  # datasets x (5 labellers with IQL, BC) x seeds
    for t in ours:
        assert theirs.get(pipeline.trial_id(t)) == pipeline.trial_config_json(t, bench), t


# fidelity-hopper-<choice>.yaml -> what it may change from benchmark-hopper.yaml (issue 28: one choice per file)
FIDELITY_CHANGES = {
    "expert": {"expert": "ailot/hopper/expert-v0"},
    "squash": {"ailot": {"squash": "authors", "alpha": 2, "tau": 3}},
    # the authors' notebook setup: both of the above together (the one file that changes two)
    "authors": {"expert": "ailot/hopper/expert-v0", "ailot": {"squash": "authors", "alpha": 2, "tau": 3}},
    "raw-inputs": {"intents": {"normalize_observations": False}},
    "pairs": {"intents": {"sample_last_transition": False}},
    "dql": {"learners": {"diffusion_ql": {"reward_scaling": "reference"}}},
    "dql-iql": {"learners": {"diffusion_ql": {"reward_scaling": "iql"}}},
}


@pytest.mark.parametrize("choice", sorted(FIDELITY_CHANGES))
def test_each_hopper_fidelity_sweep_changes_only_its_choice(choice):
    """Every other setting must be benchmark-hopper's, whose rows are the default option: a stray difference (ICVF
    size, k, epsilon, seeds, budget) would be measured as the choice's effect, and would miss the shared cache."""
    bench = yaml.safe_load((CONFIGS / "benchmark-hopper.yaml").read_text())
    cfg = yaml.safe_load((CONFIGS / f"fidelity-hopper-{choice}.yaml").read_text())
    change = FIDELITY_CHANGES[choice]
    assert cfg["name"] == f"fidelity-hopper-{choice}"
    assert (cfg["cache"], cfg["seeds"], cfg["resources"]) == (bench["cache"], bench["seeds"], bench["resources"])
    by_name = {d["name"]: d for d in bench["datasets"]}
    for entry in cfg["datasets"]:
        assert entry == {**by_name[entry["name"]], **({"expert": change["expert"]} if "expert" in change else {})}
    assert cfg["intents"] == {**bench["intents"], **change.get("intents", {})}
    assert set(cfg["labellers"]) <= {"ailot", "otr"}
    assert cfg["labellers"]["ailot"] == {**bench["labellers"]["ailot"], **change.get("ailot", {})}
    if "otr" in cfg["labellers"]:
        assert cfg["labellers"]["otr"] == bench["labellers"]["otr"]
    if "learners" in change:  # Diffusion-QL's pair: the two files differ in reward_scaling alone
        assert cfg["learners"] == change["learners"]
        assert cfg["train"]["eval_episodes"] == bench["train"]["eval_episodes"]
    else:
        assert (cfg["learners"], cfg["train"]) == ({"iql": {}}, bench["train"])


def test_the_two_diffusion_ql_hopper_sweeps_share_their_budget():
    dql, dql_iql = (yaml.safe_load((CONFIGS / f"fidelity-hopper-{n}.yaml").read_text()) for n in ("dql", "dql-iql"))
    for cfg in (dql, dql_iql):
        cfg.pop("name"), cfg.pop("learners")
    assert dql == dql_iql


def test_the_d4rl_twin_is_sized_before_its_files_are_downloaded(tmp_path, capsys, monkeypatch):
    """`--dry-run` on d4rl-locomotion.yaml here, where D4RL's files cannot be downloaded: every trial is counted as
    the run would make it, and each missing file is listed with its download command."""
    from ailot.sweep_cli import main as sweep_main

    monkeypatch.chdir(tmp_path)  # the config's data/d4rl/ is relative: files a developer downloaded are not read

    config = str(CONFIGS / "d4rl-locomotion.yaml")
    assert sweep_main(["--config", config, "--storage", str(tmp_path / "results"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "162 trials (0 already complete" in out and "27 needed, 0 cached" in out, out
    for env in ENVS:
        for kind in KINDS:
            name = f"{env}_{kind.replace('-', '_')}-v2.hdf5"
            assert (f"{env}-{kind}: D4RL file 'data/d4rl/{name}' is not here; download it on a machine with network "
                    f"access: mkdir -p data/d4rl && curl -fL -o data/d4rl/{name} "
                    f"http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{name}") in out, out
