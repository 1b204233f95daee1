"""Reward maps: per-cell means of a known reward come out exact, and a bump off the shortest path is a trap."""

import numpy as np
import pandas as pd
import pytest
import yaml

from ailot import rewardmap
from ailot.data.loading import load_dataset
from ailot.data.maze import EVAL_MAZES, MazeGrid
from ailot.errors import AilotInputError


@pytest.fixture(scope="module")
def umaze_agent(pointmaze_umaze):
    return load_dataset(pointmaze_umaze[0])


def start_positions(agent):
    return np.concatenate([o[:-1, :2] for o in agent.observations])


def goal_distance_per_transition(agent):
    grid = MazeGrid(EVAL_MAZES["umaze"].maze_map)
    dist = grid.distances_to(grid.cell_of("g"))
    return np.array([dist[grid.xy_to_cell(p)] for p in start_positions(agent)], float)


def test_cells_match_the_maze_grid_for_every_position(umaze_agent):
    grid = MazeGrid(EVAL_MAZES["umaze"].maze_map)
    xy = start_positions(umaze_agent)
    xy = np.concatenate([xy, [[-2.5, 2.5], [0.0, 0.02]]])  # a wall corner and the UMaze's inner wall
    expected = np.array([grid.xy_to_cell(p) for p in xy])
    np.testing.assert_array_equal(grid.xy_to_cells(xy), expected)


def test_cell_means_of_a_shaped_reward_are_exact_and_trap_free(umaze_agent):
    assert rewardmap.maze_of(umaze_agent) == "umaze"
    d = goal_distance_per_transition(umaze_agent)
    table = rewardmap.cell_table(umaze_agent, {"shaped": -d, "flat": np.ones_like(d)}, "umaze")
    assert table.transitions.sum() == umaze_agent.num_transitions
    # unit scaling: -d maps to (max_d - d) / max_d, constant in each cell
    max_d = d.max()
    np.testing.assert_allclose(table.shaped, (max_d - table.goal_distance) / max_d, atol=1e-6)
    assert (table.flat == 1).all()  # constant rewards are left as they are: no preference between cells
    assert table.goal_distance.iloc[0] == 0 and (table.goal_distance >= 0).all()
    assert rewardmap.traps(table, "shaped").empty
    # a flat reward does not rise towards the goal, but never falls either: no trap
    assert rewardmap.traps(table, "flat").empty
    noise = np.random.default_rng(0).normal(size=d.shape)
    rho = rewardmap.goal_correlation(umaze_agent, {"shaped": -d, "reversed": d, "noise": noise, "flat": d * 0},
                                     "umaze")
    assert rho["shaped"] == pytest.approx(1.0) and rho["reversed"] == pytest.approx(-1.0)
    assert abs(rho["noise"]) < 0.1 and np.isnan(rho["flat"])


def test_a_bump_away_from_the_goal_is_a_trap(umaze_agent, tmp_path):
    d = goal_distance_per_transition(umaze_agent)
    grid = MazeGrid(EVAL_MAZES["umaze"].maze_map)
    cells = grid.xy_to_cells(start_positions(umaze_agent))
    bump_cell = (3, 3)  # UMaze's bottom-right corner, halfway along the path
    bumped = -d + 10.0 * np.all(cells == bump_cell, axis=1)
    table = rewardmap.cell_table(umaze_agent, {"bumped": bumped}, "umaze")
    found = rewardmap.traps(table, "bumped")
    assert list(zip(found.row, found.col)) == [bump_cell]
    assert float(found.bumped.iloc[0]) > float(found.best_closer.iloc[0])
    path = rewardmap.plot_reward_maps(table, ["bumped"], "umaze", tmp_path / "map.png")
    assert path.stat().st_size > 0


def test_traps_compare_only_with_visited_neighbours_closer_to_the_goal():
    table = pd.DataFrame({"row": [0, 0, 0, 1], "col": [0, 1, 2, 2], "goal_distance": [0, 1, 2, 3],
                          "r": [1.0, 0.2, 0.5, 0.4], "transitions": 1})
    found = rewardmap.traps(table, "r")
    # (0, 2) beats its closer neighbour (0, 1); (1, 2) is below (0, 2); the goal is never a trap
    assert list(zip(found.row, found.col)) == [(0, 2)]


def test_bad_inputs_are_named(umaze_agent):
    d = goal_distance_per_transition(umaze_agent)
    with pytest.raises(AilotInputError, match="rewards 'short'"):
        rewardmap.cell_table(umaze_agent, {"short": d[:-1]}, "umaze")
    with pytest.raises(AilotInputError, match="maze 'huge'"):
        rewardmap.cell_table(umaze_agent, {"r": d}, "huge")


@pytest.mark.slow
def test_command_line_reads_the_sweep_caches_and_writes_the_map(pointmaze_umaze, tmp_path, capsys):
    agent_id, expert_id = pointmaze_umaze
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "storage": str(tmp_path / "results"),
        "datasets": [{"name": "umaze", "agent": agent_id, "expert": expert_id, "task_family": "maze2d"}],
        "intents": {"hidden_dims": [32, 32], "num_steps": 200, "chunk": 100, "batch_size": 64},
        "labellers": {"ailot": {"k": [1, 2]}, "true": {}},
        "learners": {"iql": {}}, "seeds": [3],
    }))
    assert rewardmap.main(["--config", str(config)]) == 0
    out = capsys.readouterr().out
    for name in ("ailot k=1", "ailot k=2", "true"):
        assert f"{name}: " in out
    figure = tmp_path / "results" / "figures" / "tiny" / "reward_map_seed3.png"
    assert figure.stat().st_size > 0
    encoders = list((tmp_path / "results" / "tiny" / "cache" / "encoders").iterdir())
    rewards = sorted((tmp_path / "results" / "tiny" / "cache" / "rewards").glob("*.npz"))
    assert len(encoders) == 1 and len(rewards) == 3
    stamps = [p.stat().st_mtime_ns for p in rewards]
    from ailot.cli import main as ailot_command

    assert ailot_command(["rewardmap", "--config", str(config)]) == 0  # the second run reads the caches
    assert [p.stat().st_mtime_ns for p in rewards] == stamps
    assert capsys.readouterr().out.splitlines()[:5] == out.splitlines()[:5]


def test_a_dataset_that_is_not_a_generated_pointmaze_is_named(umaze_agent, tmp_path, capsys):
    from dataclasses import replace

    other = replace(umaze_agent, env_spec=None, dataset_id="someone/hopper-v0")
    with pytest.raises(AilotInputError, match="someone/hopper-v0"):
        rewardmap.maze_of(other)
    config = tmp_path / "bad.yaml"
    missing = {"name": "x", "agent": "nobody/nothing-v0", "expert": "nobody/e-v0"}
    config.write_text(yaml.safe_dump({"name": "bad", "storage": str(tmp_path), "datasets": [missing],
                                      "labellers": {"true": {}}, "learners": {"iql": {}}, "seeds": [0]}))
    assert rewardmap.main(["--config", str(config)]) == 2
    assert "nobody/nothing-v0" in capsys.readouterr().out
