"""Maze planning, the waypoint expert's success, and reproducible dataset generation."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ailot.data.generate import dataset_ids, generate_pointmaze, main, reference_returns, size_tag
from ailot.data.loading import load_minari
from ailot.data.maze import EVAL_MAZES, MazeGrid, WaypointExpert
from ailot.errors import AilotInputError

SMALL = {"agent_transitions": 600, "expert_episodes": 1, "reference_episodes": 2, "min_length": 100,
         "max_length": 300, "progress": False}


def test_grid_geometry_and_bfs():
    grid = MazeGrid(EVAL_MAZES["umaze"].maze_map)
    assert grid.cell_of("r") == (3, 1) and grid.cell_of("g") == (1, 1)
    np.testing.assert_allclose(grid.cell_to_xy((1, 1)), [-1.0, 1.0])
    np.testing.assert_allclose(grid.cell_to_xy((3, 3)), [1.0, -1.0])
    assert grid.xy_to_cell(np.array([-1.2, 0.8])) == (1, 1)
    dist = grid.distances_to((1, 1))
    # around the U: (1,1) <- (1,2) <- (1,3) <- (2,3) <- (3,3) <- (3,2) <- (3,1)
    assert dist == {(1, 1): 0, (1, 2): 1, (1, 3): 2, (2, 3): 3, (3, 3): 4, (3, 2): 5, (3, 1): 6}
    assert grid.next_cell((3, 1), dist) == (3, 2) and grid.next_cell((2, 3), dist) == (1, 3)
    medium = MazeGrid(EVAL_MAZES["medium"].maze_map)
    d = medium.distances_to(medium.cell_of("g"))
    assert len(d) == len(medium.free_cells)  # every free cell is connected to the goal
    assert d[medium.cell_of("r")] == 10


def test_expert_steers_at_next_cell_then_goal():
    grid = MazeGrid(EVAL_MAZES["umaze"].maze_map)
    expert = WaypointExpert(grid)
    goal = np.array([-0.9, 1.1])
    np.testing.assert_allclose(expert.target(np.array([-1.0, -1.0]), goal), [0.0, -1.0])  # start -> (3, 2)
    np.testing.assert_allclose(expert.target(np.array([-1.2, 0.9]), goal), goal)  # inside the goal cell
    # PD law with saturation: far target -> clipped; at the target with velocity -> pure damping
    np.testing.assert_allclose(expert(np.array([-1.0, -1.0]), np.zeros(2), goal), [1.0, 0.0])
    np.testing.assert_allclose(expert(goal, np.array([0.3, -0.2]), goal), [-0.3, 0.2])
    # the goal moving to another cell replans
    np.testing.assert_allclose(expert.target(np.array([-1.0, -1.0]), np.array([1.0, -1.0])), [0.0, -1.0])
    np.testing.assert_allclose(expert.target(np.array([1.0, 1.0]), np.array([1.0, -1.0])), [1.0, 0.0])


def test_expert_reaches_goal_and_random_does_not():
    expert = reference_returns("umaze", "expert", 20, seed=123)
    random = reference_returns("umaze", "random", 20, seed=123)
    assert (expert > 0).mean() >= 0.9  # success: at least one step inside the goal radius
    assert expert.mean() > 150  # and it stays there: ~120 steps to arrive, 300-step episodes
    assert (random > 0).mean() <= 0.1
    medium = reference_returns("medium", "expert", 3, seed=0)
    assert (medium > 300).all()  # ~200 steps to cross the medium maze, then 600-step episodes


def test_ids_and_size_tags():
    assert [size_tag(n) for n in (3000, 100_000, 1_000_000, 2500, 999)] == ["3k", "100k", "1m", "2500", "999"]
    assert dataset_ids("medium", 1_000_000) == ("ailot/pointmaze-medium/agent-1m-v0",
                                                "ailot/pointmaze-medium/expert-v0")
    assert dataset_ids("umaze", 200_000, max_dwell=50) == ("ailot/pointmaze-umaze/agent-200k-dwell50-v0",
                                                           "ailot/pointmaze-umaze/expert-v0")


def fingerprints(root, seed: int) -> tuple[str, str]:
    agent_id, expert_id = generate_pointmaze("umaze", seed=seed, root=root, **SMALL)
    return load_minari(agent_id).fingerprint(), load_minari(expert_id).fingerprint()


def test_generation_is_reproducible(tmp_path, minari_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))  # generate(root=...) changes it
    a = fingerprints(tmp_path / "a", seed=0)
    b = fingerprints(tmp_path / "b", seed=0)
    c = fingerprints(tmp_path / "c", seed=1)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]
    # the fingerprint is the same in a fresh process
    code = ("from ailot.data.loading import load_minari; "
            "print(load_minari('ailot/pointmaze-umaze/agent-600-v0').fingerprint())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, "MINARI_DATASETS_PATH": str(tmp_path / "a")})
    assert out.stdout.strip().splitlines()[-1] == a[0]


def test_reuse_overwrite_and_cli(tmp_path, minari_root, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    root = tmp_path / "cli"
    argv = ["--maze", "umaze", "--agent-transitions", "600", "--expert-episodes", "1", "--reference-episodes",
            "2", "--seed", "3", "--root", str(root), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "steps/s" in out and str(root / "ailot/pointmaze-umaze/agent-600-v0") in out
    first = load_minari("ailot/pointmaze-umaze/agent-600-v0").fingerprint()
    assert main(argv) == 0 and "reusing" in capsys.readouterr().out  # same settings: nothing regenerated
    # another agent size shares the expert dataset
    assert main([*argv[:3], "700", *argv[4:]]) == 0
    assert "expert: ailot/pointmaze-umaze/expert-v0 -> reused" in capsys.readouterr().out
    assert load_minari("ailot/pointmaze-umaze/agent-700-v0").num_transitions == 700
    assert main(argv[:-5] + ["--seed", "4", "--root", str(root), "--no-progress"]) == 2  # exists, other seed
    assert "--overwrite" in capsys.readouterr().err
    assert main(argv[:-5] + ["--seed", "4", "--root", str(root), "--no-progress", "--overwrite"]) == 0
    assert load_minari("ailot/pointmaze-umaze/agent-600-v0").fingerprint() != first


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(AilotInputError, match="maze.*'huge'.*umaze"):
        generate_pointmaze("huge", root=tmp_path, **SMALL)
    with pytest.raises(AilotInputError, match="agent_transitions"):
        generate_pointmaze("umaze", **{**SMALL, "agent_transitions": 0})
    with pytest.raises(AilotInputError, match="max_length"):
        generate_pointmaze("umaze", **{**SMALL, "max_length": 50})


def test_dwelling_agent_holds_at_its_targets(tmp_path, minari_root, monkeypatch):
    """max_dwell > 0: the controller stays at reached targets (slow steps near cell centres become common) under
    its own id, shares the expert dataset, and an older dataset whose metadata predates max_dwell is reused."""
    import json

    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    settings = {**SMALL, "agent_transitions": 3000, "random_fraction": 0.0}
    plain_id, expert_id = generate_pointmaze("umaze", seed=0, root=tmp_path, **settings)
    dwell_id, expert_again = generate_pointmaze("umaze", seed=0, root=tmp_path, max_dwell=100, **settings)
    assert dwell_id == "ailot/pointmaze-umaze/agent-3k-dwell100-v0" and expert_again == expert_id

    def held_share(dataset_id):
        obs = load_minari(dataset_id).to_transitions().observations
        grid = MazeGrid(EVAL_MAZES["umaze"].maze_map)
        centres = np.array([grid.cell_to_xy(c) for c in grid.free_cells])
        near = np.min(np.linalg.norm(obs[:, None, :2] - centres[None], axis=-1), axis=1) < 0.3
        return float(np.mean(near & (np.linalg.norm(obs[:, 2:4], axis=1) < 0.5)))

    plain, dwell = held_share(plain_id), held_share(dwell_id)
    assert dwell > 3 * plain and dwell > 0.15, (plain, dwell)  # measured: 0.05 vs 0.22
    # Metadata written before max_dwell existed: reused as max_dwell 0, not an 'other settings' error.
    storage = minari.load_dataset(plain_id).storage
    old = json.loads(storage.metadata["ailot_generation"])
    old.pop("max_dwell")
    storage.update_metadata({"ailot_generation": json.dumps(old)})
    assert generate_pointmaze("umaze", seed=0, root=tmp_path, **settings)[0] == plain_id
    with pytest.raises(AilotInputError, match="max_dwell"):
        generate_pointmaze("umaze", seed=0, root=tmp_path, max_dwell=-1, **settings)
