"""Sweep config validation and grid expansion."""

import json

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ailot.config import LABELLER_DEFAULTS, load_sweep_config, sweep_config_from_dict
from ailot.errors import AilotInputError


def base(**over):
    raw = {
        "name": "t",
        "datasets": [{"agent": "a/b/agent-v0", "expert": "a/b/expert-v0"}],
        "labellers": {"ailot": {"k": [1, 5], "epsilon": [1e-3, 1e-2]}, "zero": {}},
        "learners": {"iql": {}, "bc": {}},
        "seeds": [0, 1],
        "train": {"steps": 100, "eval_every": 50},
    }
    raw.update(over)
    return raw


def test_grid_expands_k_epsilon_learner_seed():
    cfg = sweep_config_from_dict(base())
    settings_ = cfg.labeller_settings()
    assert len(settings_) == 4 + 1  # 2 k x 2 eps for ailot, one zero
    assert {(s["k"], s["epsilon"]) for s in settings_ if s["labeller"] == "ailot"} == {
        (1, 1e-3), (1, 1e-2), (5, 1e-3), (5, 1e-2)}
    trials = cfg.trials()
    # iql x 5 settings x 2 seeds + bc (rewards ignored) x 2 seeds
    assert len(trials) == 5 * 2 + 2
    assert all(t["labeller"] == {"labeller": "none"} for t in trials if t["learner"] == "bc")
    ail = [s for s in settings_ if s["labeller"] == "ailot"][0]
    assert ail["alpha"] == LABELLER_DEFAULTS["ailot"]["alpha"]  # defaults filled in
    assert cfg.used_labeller_settings() == settings_


def test_bc_only_sweep_needs_no_rewards():
    # BC ignores rewards: relabelling (and pretraining psi) for it would be wasted work
    cfg = sweep_config_from_dict(base(learners={"bc": {}}))
    assert cfg.used_labeller_settings() == []
    assert {t["labeller"]["labeller"] for t in cfg.trials()} == {"none"}


@pytest.mark.parametrize(
    "over, key",
    [
        ({"bogus": 1}, "bogus"),
        ({"labellers": {"ailot": {"kk": 1}}}, "labellers.ailot.kk"),
        ({"labellers": {"gail": {}}}, "gail"),
        ({"labellers": {"ailot": {"k": 0}}}, "labellers.ailot.k"),
        ({"labellers": {"ailot": {"epsilon": -1.0}}}, "labellers.ailot.epsilon"),
        ({"labellers": {"ailot": {"expert_mode": "mean"}}}, "labellers.ailot.expert_mode"),
        ({"labellers": {"ailot": {"momentum": 2.5}}}, "labellers.ailot.momentum"),
        ({"labellers": {"ailot": {"momentum": "fast"}}}, "labellers.ailot.momentum"),
        ({"learners": {"sac": {}}}, "sac"),
        ({"learners": {}}, "learners"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"seeds": [-1]}, "seeds"),
        ({"name": "../escape"}, "name"),
        ({"datasets": []}, "datasets"),
        ({"datasets": [{"agent": "x"}]}, "datasets[0].expert"),
        ({"datasets": [{"agent": "x", "expert": "y", "task_family": "atari"}]}, "datasets[0].task_family"),
        ({"train": {"steps": 0}}, "train.steps"),
        ({"train": {"steps": 10, "eval_every": 20}}, "train.eval_every"),
        ({"train": {"stepz": 10}}, "train.stepz"),
        ({"resources": {"cpus_per_trial": "two"}}, "resources.cpus_per_trial"),
        ({"cache": ["results/other/cache"]}, "cache"),
    ],
)
def test_bad_config_names_the_key(over, key):
    with pytest.raises(AilotInputError) as err:
        sweep_config_from_dict(base(**over))
    assert key in str(err.value)
    assert "Fix:" in str(err.value)


def test_momentum_is_a_reward_setting_and_a_grid_axis():
    from ailot.labellers import reward_setting

    cfg = sweep_config_from_dict(base(labellers={"ailot": {"momentum": ["none", 1.6, "adaptive"]}}))
    settings_ = cfg.labeller_settings()
    assert [s["momentum"] for s in settings_] == ["none", 1.6, "adaptive"]
    keys = {json.dumps(reward_setting(s), sort_keys=True) for s in settings_}
    assert len(keys) == 3  # the rewards cache tells them apart
    assert LABELLER_DEFAULTS["ailot"]["momentum"] == 1.6


def test_cache_dir_is_the_sweeps_own_unless_shared(tmp_path):
    own = sweep_config_from_dict(base(storage=str(tmp_path)))
    assert own.cache_dir == (tmp_path / "t" / "cache").resolve()
    # a second sweep (its own name, rows and Tune state) reading and adding to the first one's encoders and rewards
    longer = sweep_config_from_dict(base(storage=str(tmp_path), name="t-longer", cache=str(own.cache_dir)))
    assert longer.cache_dir == own.cache_dir and longer.run_dir == tmp_path / "t-longer"


def test_load_from_file_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(base()))
    assert load_sweep_config(path).name == "t"
    with pytest.raises(AilotInputError, match="does not exist"):
        load_sweep_config(tmp_path / "nope.yaml")
    path.write_text("name: [unclosed")
    with pytest.raises(AilotInputError, match="not valid YAML"):
        load_sweep_config(path)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), st.integers(), min_size=1, max_size=4))
def test_unknown_top_level_keys_always_refused(extra):
    known = set(base())
    extra = {k: v for k, v in extra.items() if k not in known | {"storage", "cache", "intents", "resources"}}
    if not extra:
        return
    with pytest.raises(AilotInputError) as err:
        sweep_config_from_dict(base(**extra))
    assert any(k in str(err.value) for k in extra)


@settings(max_examples=40, deadline=None)
@given(ks=st.lists(st.integers(1, 20), min_size=1, max_size=4, unique=True),
       eps=st.lists(st.floats(1e-5, 1.0), min_size=1, max_size=3, unique=True))
def test_grid_size_is_product(ks, eps):
    cfg = sweep_config_from_dict(base(labellers={"ailot": {"k": ks, "epsilon": eps}}))
    assert len(cfg.labeller_settings()) == len(ks) * len(eps)
    assert len(cfg.trials()) == len(ks) * len(eps) * 2 + 2


def test_every_shipped_config_validates():
    from pathlib import Path

    from ailot import learners

    configs = sorted((Path(__file__).parents[1] / "tune" / "configs").glob("*.yaml"))
    assert {"smoke.yaml", "pointmaze.yaml", "d4rl-locomotion.yaml", "ablation-experts.yaml",
            "ablation-k-eps.yaml"} <= {p.name for p in configs}
    for path in configs:
        cfg = load_sweep_config(path)
        for name, overrides in cfg.learners.items():
            learners.make_config(name, overrides, task_family=cfg.datasets[0].task_family)
        assert cfg.trials()


def test_yaml_true_key_means_the_true_labeller():
    cfg = sweep_config_from_dict(yaml.safe_load("name: t\ndatasets: [{agent: a, expert: b}]\n"
                                                "labellers: {true: {}}\nlearners: {iql: {}}\n"))
    assert cfg.labeller_settings() == [{"labeller": "true"}]
