"""Any maze: named layouts (umaze, medium, large, open) and users' maps as rows of '#', '.', 'R', 'G' generate with
their own expert, agent data and reference scores; bad maps are refused at config load and in generate; umaze and
medium output is what it was before maps could be given as text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ailot.data.generate import dataset_ids, generate_pointmaze, ids_of, main, reference_rollouts
from ailot.data.loading import load_minari
from ailot.data.maze import (
    EVAL_MAZES,
    MazeGrid,
    MazeTask,
    custom_name,
    horizon_for,
    maze_task,
    parse_maze,
    shortest_path,
)
from ailot.errors import AilotInputError

CONFIGS = Path(__file__).parents[1] / "tune" / "configs"
TINY = {"agent_transitions": 600, "expert_episodes": 2, "reference_episodes": 2, "min_length": 100,
        "max_length": 300, "progress": False}
# A user's map with a dead end beside the start and two turns (not one of gymnasium-robotics' layouts).
ZIGZAG = ["#########",
          "#R..#...#",
          "#.#.#.#.#",
          "#.#...#G#",
          "#########"]


def test_named_layouts_are_the_gymnasium_robotics_maps_with_d4rl_horizons():
    from gymnasium_robotics.envs.maze import maps

    def plain(maze_map):  # the layout without its reset / goal marks
        return [[0 if code in ("r", "g") else code for code in row] for row in maze_map]

    # umaze and medium exactly as the maps these evaluation tasks were written with before (their datasets'
    # stored env specs hold them)
    assert EVAL_MAZES["umaze"].maze_map == [[1, 1, 1, 1, 1], [1, "g", 0, 0, 1], [1, 1, 1, 0, 1], [1, "r", 0, 0, 1],
                                            [1, 1, 1, 1, 1]]
    assert EVAL_MAZES["medium"].maze_map[1][1] == "r" and EVAL_MAZES["medium"].maze_map[6][6] == "g"
    for name, layout in (("umaze", maps.U_MAZE), ("medium", maps.MEDIUM_MAZE), ("large", maps.LARGE_MAZE),
                         ("open", maps.OPEN)):
        assert plain(EVAL_MAZES[name].maze_map) == layout, name
    assert EVAL_MAZES["large"].maze_map[7][9] == "g"  # where D4RL's maze2d-large has its goal
    assert {n: t.max_episode_steps for n, t in EVAL_MAZES.items()} == {"umaze": 300, "medium": 600, "large": 800,
                                                                       "open": 400}
    # the rule for maps without a D4RL horizon gives D4RL's on medium and large
    assert [horizon_for(EVAL_MAZES[n].rows) for n in ("medium", "large")] == [600, 800]
    assert [shortest_path(EVAL_MAZES[n].rows) for n in ("umaze", "medium", "large", "open")] == [6, 10, 14, 6]


@pytest.mark.parametrize("rows, problem", [
    (["#####", "#R#G#", "#####"], r"goal 'G' at \(1, 3\) cannot be reached from the reset cell\(s\) 'R' at "
                                  r"\[\(1, 1\)\]"),
    (["#####", "#R..#", "#####"], "has 0 goal cells 'G'.*mark exactly one goal cell"),
    (["######", "#RG.G#", "######"], r"has 2 goal cells 'G' at \[\(1, 2\), \(1, 4\)\]"),
    (["#####", "#..G#", "#####"], "has no reset cell 'R'"),
    (["#####", "#R.G#", "####"], "row 2 has 4 cells, row 0 has 5.*same width"),
    (["#####", "#R.G#", "#.x.#", "#####"], "row 2, column 2 holds unknown character 'x'.*'#' wall"),
    (["#####", "#R.G.", "#####"], r"border is open at \(row, column\) \[\(1, 4\)\]"),
    (["#######", "#R.G#.#", "#######"], r"free cells at \(row, column\) \[\(1, 5\)\] cannot reach the goal"),
    (["#####", None, "#####"], "give a list of rows.*quote each row"),  # a YAML row left unquoted: a comment
    (["##", "RG"], "at least 3 rows of at least 3 cells"),
])
def test_a_map_without_one_reachable_goal_is_refused(rows, problem, tmp_path, monkeypatch):
    with pytest.raises(AilotInputError, match=f"^maze_map: .*{problem}"):
        parse_maze(rows)
    # in generate: before any env or rollout exists
    import ailot.data.generate as generate

    def no_rollout(*args, **kwargs):
        raise AssertionError("an env was made for a bad map")

    monkeypatch.setattr(generate, "make_eval_env", no_rollout)
    with pytest.raises(AilotInputError, match=problem):
        generate_pointmaze(maze_map=rows, root=tmp_path, **TINY)
    # and at config load, named by its key
    from ailot.config import load_sweep_config

    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"name": "bad", "datasets": [{
        "agent": "a/b-v0", "expert": "a/c-v0", "generate": {"maze": "mine", "maze_map": rows}}],
        "labellers": {"true": {}}, "learners": {"iql": {}}}))
    with pytest.raises(AilotInputError, match=r"config key 'datasets\[0\]\.generate\.maze_map': .*" + problem):
        load_sweep_config(config)


def test_maze_names_and_ids():
    assert maze_task().name == "umaze" and maze_task("large") is EVAL_MAZES["large"]
    text = "\n".join(ZIGZAG) + "\n"
    task = maze_task(None, text)  # one string, a row per line (a YAML block, a file)
    assert task == maze_task(None, ZIGZAG) and task.rows == tuple(ZIGZAG)
    assert task.name == custom_name(ZIGZAG) and task.name.startswith("custom-") and len(task.name) == 15
    assert maze_task(None, [ZIGZAG[0], "#R......#", *ZIGZAG[2:]]).name != task.name  # another map, another id
    assert maze_task("zigzag", ZIGZAG).name == "zigzag" and task.max_episode_steps == 50 * (12 + 2)
    two_starts = maze_task(None, [ZIGZAG[0], "#R..#..R#", *ZIGZAG[2:]])  # the horizon fits the farther start
    assert shortest_path(two_starts.rows) == 12 and two_starts.max_episode_steps == 700
    assert ids_of({"maze_map": ZIGZAG, "agent_transitions": 3000}) == dataset_ids(task.name, 3000)
    assert ids_of({"maze": "medium"}) == ("ailot/pointmaze-medium/agent-100k-v0", "ailot/pointmaze-medium/expert-v0")
    with pytest.raises(AilotInputError, match="^maze: 'large' names a built-in maze"):
        maze_task("large", ZIGZAG)
    with pytest.raises(AilotInputError, match="^maze: name 'my/maze' cannot be part of a dataset id"):
        maze_task("my/maze", ZIGZAG)
    with pytest.raises(AilotInputError, match="^maze: unknown maze 'huge'.*or give your own layout as maze_map"):
        maze_task("huge")


def test_shipped_configs_name_the_ids_their_generate_blocks_make():
    checked = 0
    for path in sorted(CONFIGS.glob("*.yaml")):
        for ds in yaml.safe_load(path.read_text()).get("datasets", []):
            if ds.get("generate"):
                agent, expert = ids_of(ds["generate"])
                assert ds["agent"] == agent and ds["expert"] in (expert, "same"), path.name  # same: OTR's protocol
                checked += 1
    assert checked >= 5


def success_and_return(task, policy: str, episodes: int = 10) -> tuple[float, float]:
    returns, success = reference_rollouts(task, policy, episodes, seed=11)
    return float(success.mean()), float(returns.mean())


def episode_returns(dataset_id: str) -> np.ndarray:
    return np.array([r.sum() for r in load_minari(dataset_id).rewards])


def test_large_maze_generates_and_its_expert_reaches_the_goal(tmp_path, minari_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    agent_id, expert_id = generate_pointmaze("large", seed=0, root=tmp_path, **TINY)
    assert (agent_id, expert_id) == ("ailot/pointmaze-large/agent-600-v0", "ailot/pointmaze-large/expert-v0")
    expert = load_minari(expert_id)
    spec = json.loads(expert.env_spec)
    assert spec["max_episode_steps"] == 800 and spec["kwargs"]["maze_map"] == EVAL_MAZES["large"].maze_map
    assert (episode_returns(expert_id) > 0).all()  # the noisy expert too
    assert load_minari(agent_id).num_transitions == 600
    assert expert.ref_max_score > 300 and expert.ref_min_score < 10
    expert_success, expert_return = success_and_return("large", "expert")
    random_success, random_return = success_and_return("large", "random")
    assert expert_success >= 0.8 and random_success <= 0.2, (expert_success, random_success)
    assert expert_return > 300 > random_return  # measured: 520 vs 0 (20 episodes)


def test_custom_map_from_a_config_generates_and_its_expert_reaches_the_goal(tmp_path, minari_root, monkeypatch):
    """The shipped custom-maze.yaml's map, at tiny sizes, made through the sweep's own path (pipeline.load_pair)."""
    from ailot import pipeline, rewardmap
    from ailot.config import load_sweep_config

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    raw = yaml.safe_load((CONFIGS / "custom-maze.yaml").read_text())
    generate = {**raw["datasets"][0]["generate"], "agent_transitions": 600, "expert_episodes": 2,
                "reference_episodes": 2, "max_length": 300, "root": str(tmp_path)}
    raw["datasets"][0].update(generate=generate, agent="ailot/pointmaze-zigzag/agent-600-dwell50-v0")
    raw["storage"] = str(tmp_path / "results")
    config = tmp_path / "custom.yaml"
    config.write_text(yaml.safe_dump(raw))
    ds = load_sweep_config(config).datasets[0]
    agent, expert = pipeline.load_pair(ds, progress=False)  # generates, then checks the eval env fits
    assert agent.dataset_id == ds.agent and agent.num_transitions == 600
    task = maze_task("zigzag", generate["maze_map"])
    assert task.rows == tuple(ZIGZAG) and task.max_episode_steps == 700
    import minari

    stored = json.loads(minari.load_dataset(ds.expert).storage.metadata["ailot_generation"])
    assert stored["maze"] == "zigzag" and stored["maze_map"] == ZIGZAG  # the rows, in the metadata
    assert (episode_returns(ds.expert) > 0).all()
    # reward maps read the layout back from the stored env spec
    back = rewardmap.maze_of(agent)
    assert isinstance(back, MazeTask) and back.rows == tuple(ZIGZAG)
    table = rewardmap.cell_table(agent, {"flat": np.ones(agent.num_transitions)}, back)
    assert set(zip(table.row, table.col)) <= set(MazeGrid(task.maze_map).free_cells)
    expert_success, expert_return = success_and_return(task, "expert")
    random_success, random_return = success_and_return(task, "random")
    assert expert_success >= 0.8 and random_success <= 0.2, (expert_success, random_success)
    assert expert_return > 300 > random_return


def test_open_maze_expert_beats_random():
    expert_success, expert_return = success_and_return("open", "expert", 5)
    _, random_return = success_and_return("open", "random", 5)
    assert expert_success == 1.0 and expert_return > 200 > random_return  # measured: 281 vs 6 (20 episodes)


# Before maps could be text (commit 01361f1), with these settings: dataset fingerprints, sha256 of the stored
# eval env spec JSON, and (ref_min, ref_max). MuJoCo's arithmetic can differ across its versions and machines,
# so they are checked only under the versions they were recorded with.
GOLDEN_SETTINGS = {"agent_transitions": 1500, "expert_episodes": 1, "seed": 7, "reference_episodes": 2,
                   "progress": False}
GOLDEN_VERSIONS = {"mujoco": "4.0.1", "gymnasium_robotics": "1.4.2"}
GOLDEN = {
    ("umaze", 0): {"ailot/pointmaze-umaze/agent-1500-v0": "705801a3", "ailot/pointmaze-umaze/expert-v0": "c88caac1"},
    ("medium", 50): {"ailot/pointmaze-medium/agent-1500-dwell50-v0": "69deaa5b",
                     "ailot/pointmaze-medium/expert-v0": "614c77fa"},
}
GOLDEN_SPECS = {"umaze": "a6bc6405", "medium": "5f24a133"}
GOLDEN_REFS = {"umaze": (0.0, 181.5), "medium": (0.0, 404.0)}


@pytest.mark.parametrize("maze, dwell", list(GOLDEN))
def test_umaze_and_medium_output_is_unchanged(maze, dwell, tmp_path, minari_root, monkeypatch, capsys):
    import hashlib

    import gymnasium_robotics
    import minari
    import mujoco

    found = {"mujoco": mujoco.__version__, "gymnasium_robotics": gymnasium_robotics.__version__}
    if found != GOLDEN_VERSIONS:
        pytest.skip(f"golden arrays were recorded under {GOLDEN_VERSIONS}, this is {found}")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    ids = generate_pointmaze(maze, root=tmp_path, max_dwell=dwell, **GOLDEN_SETTINGS)
    assert {i: load_minari(i).fingerprint()[:8] for i in ids} == GOLDEN[maze, dwell]
    for i in ids:
        meta = minari.load_dataset(i).storage.metadata
        assert hashlib.sha256(meta["eval_env_spec"].encode()).hexdigest()[:8] == GOLDEN_SPECS[maze]
        assert (meta["ref_min_score"], meta["ref_max_score"]) == GOLDEN_REFS[maze]
    # datasets whose metadata predates the stored rows are reused, not refused as 'other settings'
    storage = minari.load_dataset(ids[0]).storage
    old = json.loads(storage.metadata["ailot_generation"])
    assert old.pop("maze_map") == list(EVAL_MAZES[maze].rows)
    storage.update_metadata({"ailot_generation": json.dumps(old)})
    capsys.readouterr()
    assert generate_pointmaze(maze, root=tmp_path, max_dwell=dwell, **GOLDEN_SETTINGS) == ids
    assert "reusing" in capsys.readouterr().out


def test_command_line_takes_a_map_file(tmp_path, capsys):
    path = tmp_path / "zigzag.txt"
    path.write_text("\n".join(ZIGZAG) + "\n")
    assert main(["--maze-map", str(path), "--check", "--agent-transitions", "3000"]) == 0
    out = capsys.readouterr().out
    assert f"ailot/pointmaze-{custom_name(ZIGZAG)}/agent-3k-v0" in out and "700-step episodes" in out
    assert main(["--maze-map", str(path), "--maze", "zigzag", "--check"]) == 0
    assert "ailot/pointmaze-zigzag/expert-v0" in capsys.readouterr().out
    path.write_text("#####\n#R#G#\n#####\n")
    assert main(["--maze-map", str(path), "--check"]) == 2
    assert "cannot be reached" in capsys.readouterr().err
    assert main(["--maze-map", str(tmp_path / "missing.txt"), "--check"]) == 2
    assert "--maze-map: cannot read" in capsys.readouterr().err
    # the module runs as a script with --maze large (no generation: --check)
    out = subprocess.run([sys.executable, "-m", "ailot.data.generate", "--maze", "large", "--check"],
                         capture_output=True, text=True, check=True).stdout
    assert "maze large: 800-step episodes, shortest path 14 cells" in out
