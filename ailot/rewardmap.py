"""Reward maps on PointMaze: where each labeller's rewards put their weight, cell by cell, and where they trap.

A reward that leads to the goal rises along the shortest path. `cell_table` averages each labeller's rewards
(rescaled to [0, 1], as IQL's maze2d preset trains on them) over the agent transitions in every maze cell;
`traps` lists the cells from which no step towards the goal raises that average: a policy that follows the
reward greedily stops there (on PointMaze Medium, AILOT with an under-trained psi parked in such cells;
results/README.md). Command line:

    python -m ailot.rewardmap --config tune/configs/pointmaze-medium.yaml [--seed 0]

reads the sweep's cached encoder and rewards (computing any that are missing), prints each labeller's traps and
writes `figures/<sweep>/reward_map_seed<seed>.png` beside the results.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ailot.data.episodes import Episodes
from ailot.data.maze import EVAL_MAZES, MazeGrid, MazeTask, maze_task, task_from_spec
from ailot.errors import AilotInputError

STEPS = ((-1, 0), (1, 0), (0, -1), (0, 1))


def maze_of(agent: Episodes) -> str | MazeTask:
    """The EVAL_MAZES name ('umaze', 'medium', ...) of a generated PointMaze dataset's evaluation env, or the
    task of its own map (a custom layout) read from the stored env spec."""
    from ailot.envs import env_spec_from

    spec = env_spec_from(agent.env_spec) if agent.env_spec else None
    env_id = spec.id if spec else None
    if spec is not None and str(spec.entry_point) == "ailot.envs:point_maze" and "maze_map" in spec.kwargs:
        task = task_from_spec(spec.id, spec.kwargs["maze_map"], spec.max_episode_steps)
        return task.name if task.name in EVAL_MAZES else task
    raise AilotInputError(f"dataset {agent.dataset_id!r}", f"evaluates on {env_id!r}, not a PointMaze of this project",
                          f"reward maps need a dataset made by ailot.data.generate (mazes: {', '.join(EVAL_MAZES)} "
                          "or your own maze_map)")


def transition_cells(agent: Episodes, maze: str | MazeTask) -> tuple[MazeGrid, np.ndarray, np.ndarray]:
    """The maze grid, and for each transition of `agent` its start cell [M, 2] and BFS distance to the goal [M]."""
    grid = MazeGrid(maze_task(maze).maze_map)
    cells = grid.xy_to_cells(np.concatenate([o[:-1, :2] for o in agent.observations]))
    dist = grid.distances_to(grid.cell_of("g"))
    return grid, cells, np.array([dist.get((r, c), -1) for r, c in cells], int)


def cell_table(agent: Episodes, rewards: dict[str, np.ndarray], maze: str | MazeTask) -> pd.DataFrame:
    """One row per visited free cell: row, col, goal_distance (BFS cells), transitions, and per labeller the mean
    of its unit-scaled rewards over the transitions that start in that cell. rewards: {labeller: [M]} aligned
    with `agent.to_transitions()`."""
    _, rc, goal_distance = transition_cells(agent, maze)
    for name, r in rewards.items():
        if np.shape(r) != (len(rc),):
            raise AilotInputError(f"rewards {name!r}", f"have shape {np.shape(r)}, the dataset {len(rc)} transitions",
                                  "pass one reward per transition, in agent.to_transitions() order")
    from ailot.learners.base import scale_rewards

    # as IQL's maze2d preset sees them; constant rewards stay as they are
    scaled = {n: scale_rewards(r, None, "unit").astype(np.float64) for n, r in rewards.items()}
    df = pd.DataFrame({"row": rc[:, 0], "col": rc[:, 1], "goal_distance": goal_distance, **scaled})
    table = df.groupby(["row", "col", "goal_distance"]).agg(transitions=("row", "size"),
                                                            **{n: (n, "mean") for n in rewards})
    table = table.reset_index()
    return table.sort_values(["goal_distance", "row", "col"], ignore_index=True)


def traps(table: pd.DataFrame, labeller: str) -> pd.DataFrame:
    """Cells other than the goal whose every visited neighbour one step closer to the goal has a lower mean
    `labeller` reward (cells with no visited neighbour closer are left out: nothing to compare)."""
    mean = {(r, c): v for r, c, v in zip(table.row, table.col, table[labeller])}
    dist = {(r, c): d for r, c, d in zip(table.row, table.col, table.goal_distance)}
    found = []
    for (r, c), d in dist.items():
        if d <= 0:
            continue
        closer = [mean[nb] for nb in ((r + dr, c + dc) for dr, dc in STEPS) if dist.get(nb, -2) == d - 1]
        if closer and max(closer) < mean[r, c]:
            found.append({"row": r, "col": c, "goal_distance": d, labeller: mean[r, c], "best_closer": max(closer),
                          "margin": mean[r, c] - max(closer)})
    return pd.DataFrame(found, columns=["row", "col", "goal_distance", labeller, "best_closer", "margin"])


def goal_correlation(agent: Episodes, rewards: dict[str, np.ndarray], maze: str | MazeTask) -> dict[str, float]:
    """Spearman rank correlation of each labeller's per-transition reward with minus the BFS distance to the
    goal (1: the reward orders every state by how close it is to the goal; NaN for constant rewards)."""
    from scipy.stats import spearmanr

    closeness = -transition_cells(agent, maze)[2].astype(float)
    return {n: float(spearmanr(r, closeness)[0]) if np.ptp(r) > 0 else float("nan") for n, r in rewards.items()}


def plot_reward_maps(table: pd.DataFrame, labellers: list[str], maze: str | MazeTask, path: str | Path,
                     title: str = "") -> Path:
    """One panel per labeller: mean unit-scaled reward per cell (walls dark), BFS distance to the goal under the
    value, traps outlined in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    maze_grid = MazeGrid(maze_task(maze).maze_map)
    rows, cols = maze_grid.rows, maze_grid.cols
    fig, axes = plt.subplots(1, len(labellers), figsize=(3.2 * len(labellers) + 0.6, 3.2 * rows / cols + 0.6),
                             squeeze=False)
    for ax, name in zip(axes[0], labellers):
        grid = np.full((rows, cols), np.nan)
        for r, c, v in zip(table.row, table.col, table[name]):
            grid[r, c] = v
        ax.imshow(np.where(maze_grid.walls, 1.0, np.nan), cmap="Greys", vmin=0, vmax=1.5)
        low, high = np.nanmin(grid), np.nanmax(grid)
        image = ax.imshow(grid, cmap="viridis", vmin=min(low, 0.0), vmax=high if high > low else low + 1.0)
        for r, c, v, d in zip(table.row, table.col, table[name], table.goal_distance):
            dark = v < low + 0.6 * (high - low)
            ax.text(c, r, f"{v:.2f}\n{d}", ha="center", va="center", fontsize=7, color="w" if dark else "k")
        found = traps(table, name)
        for r, c in zip(found.row, found.col):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.set_title(f"{name} ({len(found)} traps)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sweep_rewards(cfg, seed: int, progress: bool = True) -> tuple[Episodes, str, dict[str, np.ndarray]]:
    """The first dataset of sweep `cfg`, its maze, and its rewards for every labeller setting the sweep trains on,
    from the sweep's caches (encoder for `seed`, rewards), computing and caching whatever is missing."""
    from ailot import pipeline

    ds = cfg.datasets[0]
    pair = pipeline.load_pair(ds, progress=progress)
    maze = maze_of(pair[0])  # before any pretraining or relabelling
    settings = [s for s in cfg.used_labeller_settings() if s["labeller"] != "none"]
    if not settings:
        raise AilotInputError(f"sweep {cfg.name!r}", "trains on no rewards", "add a labeller to the config")
    keys = pipeline.rewards_for(ds, pair, seed, settings, cfg, progress=progress)
    cache = pipeline.rewards_cache(cfg)
    return pair[0], maze, {setting_name(s, settings): cache.get(keys[pipeline.setting_id(s)])["rewards"]
                           for s in settings}


def setting_name(setting: dict, settings: list[dict]) -> str:
    """The labeller's name, with the knobs that tell its settings apart when the sweep has several."""
    same = [s for s in settings if s["labeller"] == setting["labeller"]]
    knobs = sorted({k for s in same for k in s if k != "labeller" and any(t.get(k) != s.get(k) for t in same)})
    return " ".join([setting["labeller"], *(f"{k}={setting.get(k)}" for k in knobs)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ailot.rewardmap", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a sweep config whose first dataset is a generated PointMaze")
    parser.add_argument("--seed", type=int, default=None, help="encoder seed (default: the sweep's first seed)")
    parser.add_argument("--out", default=None, help="figure path (default: <storage>/figures/<sweep>/"
                        "reward_map_seed<seed>.png)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from ailot import storage
    from ailot.config import load_sweep_config

    try:
        cfg = load_sweep_config(args.config)
        seed = cfg.seeds[0] if args.seed is None else args.seed
        agent, maze, rewards = sweep_rewards(cfg, seed)
    except AilotInputError as exc:
        print(f"error: {exc}")
        return 2
    table = cell_table(agent, rewards, maze)
    rho = goal_correlation(agent, rewards, maze)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
        for name in rewards:
            found = traps(table, name).sort_values("margin", ascending=False)
            print(f"\n{name}: Spearman with closeness to the goal {rho[name]:.3f}; {len(found)} trap(s)"
                  + (f", largest first\n{found.round(3).to_string(index=False)}" if len(found) else ""))
    out = args.out or storage.join(cfg.figures_dir, f"reward_map_seed{seed}.png")
    with tempfile.TemporaryDirectory() as tmp:  # drawn locally, then published to the storage (maybe a URI)
        drawn = plot_reward_maps(table, list(rewards), maze, Path(tmp) / "map.png",
                                 title=f"{cfg.name}, encoder seed {seed}")
        storage.write_bytes(out, drawn.read_bytes())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
