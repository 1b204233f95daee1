"""Maze planning and a scripted waypoint expert for gymnasium-robotics PointMaze.

The expert plans on the maze grid (breadth-first search from the goal cell gives every free cell its
distance to the goal), then steers a PD controller `a = clip(Kp * (target - pos) - Kd * vel, -1, 1)` at the
centre of the next cell on a shortest path, and straight at the goal point once inside the goal cell.
Moving from one cell to the centre of a 4-neighbour stays inside the 1 x 2 rectangle the two cells form,
so the straight segment never crosses a wall. The distance field is cached per goal cell, so a changing
goal (the agent dataset's random targets) replans at the cost of one BFS.

Evaluation mazes (`EVAL_MAZES`) are the gymnasium-robotics U and medium layouts with one fixed reset cell
'r' and one fixed goal cell 'g', as D4RL maze2d evaluates with a fixed goal.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ailot.envs import POINTMAZE_IDS

WALL = 1
R, G = "r", "g"  # gymnasium-robotics cell codes for the reset and goal cells

# UMaze: start at the bottom-left end of the U, goal at the top-left end; the path goes around the wall.
UMAZE_EVAL = [
    [1, 1, 1, 1, 1],
    [1, G, 0, 0, 1],
    [1, 1, 1, 0, 1],
    [1, R, 0, 0, 1],
    [1, 1, 1, 1, 1],
]
# Medium: start in the top-left corner, goal in the far (bottom-right) corner.
MEDIUM_EVAL = [
    [1, 1, 1, 1, 1, 1, 1, 1],
    [1, R, 0, 1, 1, 0, 0, 1],
    [1, 0, 0, 1, 0, 0, 0, 1],
    [1, 1, 0, 0, 0, 1, 1, 1],
    [1, 0, 0, 1, 0, 0, 0, 1],
    [1, 0, 1, 0, 0, 1, 0, 1],
    [1, 0, 0, 0, 1, 0, G, 1],
    [1, 1, 1, 1, 1, 1, 1, 1],
]


@dataclass(frozen=True)
class MazeTask:
    """One evaluation task: registered env id, map with 'r'/'g' cells, and episode length."""

    env_id: str
    maze_map: list
    max_episode_steps: int


EVAL_MAZES: dict[str, MazeTask] = {
    "umaze": MazeTask(POINTMAZE_IDS["umaze"], UMAZE_EVAL, 300),  # D4RL maze2d-umaze horizon
    "medium": MazeTask(POINTMAZE_IDS["medium"], MEDIUM_EVAL, 600),  # D4RL maze2d-medium horizon
}

Cell = tuple[int, int]


class MazeGrid:
    """Grid geometry of a gymnasium-robotics maze map (scaling 1, origin at the map centre)."""

    def __init__(self, maze_map: list, scaling: float = 1.0):
        self.maze_map = maze_map
        self.scaling = float(scaling)
        self.rows, self.cols = len(maze_map), len(maze_map[0])
        # Same centring as gymnasium_robotics.envs.maze.maze_v4.Maze.
        self.x_center = self.cols / 2 * self.scaling
        self.y_center = self.rows / 2 * self.scaling
        self.free_cells: list[Cell] = [
            (i, j) for i in range(self.rows) for j in range(self.cols) if maze_map[i][j] != WALL
        ]
        self.walls = np.array([[code == WALL for code in row] for row in maze_map], bool)  # [rows, cols]

    def is_free(self, cell: Cell) -> bool:
        i, j = cell
        return 0 <= i < self.rows and 0 <= j < self.cols and self.maze_map[i][j] != WALL

    def cell_of(self, code: str) -> Cell:
        """The unique cell marked with `code` ('r' or 'g')."""
        cells = [(i, j) for i, j in self.free_cells if self.maze_map[i][j] == code]
        if len(cells) != 1:
            raise ValueError(f"maze map has {len(cells)} cells marked {code!r}, expected exactly one")
        return cells[0]

    def cell_to_xy(self, cell: Cell) -> np.ndarray:
        i, j = cell
        return np.array([(j + 0.5) * self.scaling - self.x_center, self.y_center - (i + 0.5) * self.scaling])

    def xy_to_cell(self, xy: np.ndarray) -> Cell:
        i = int(np.floor((self.y_center - xy[1]) / self.scaling))
        j = int(np.floor((xy[0] + self.x_center) / self.scaling))
        # The ball can sit a hair inside a wall cell when pressed against it; clamp to the nearest free cell.
        if not self.is_free((i, j)):
            return min(self.free_cells, key=lambda c: float(np.sum((self.cell_to_xy(c) - xy) ** 2)))
        return i, j

    def xy_to_cells(self, xy: np.ndarray) -> np.ndarray:
        """`xy_to_cell` for many positions at once: xy [M, 2] -> [M, 2] (row, col)."""
        xy = np.asarray(xy, float)
        out = np.stack([np.floor((self.y_center - xy[:, 1]) / self.scaling),
                        np.floor((xy[:, 0] + self.x_center) / self.scaling)], axis=1).astype(int)
        inside = (out[:, 0] >= 0) & (out[:, 0] < self.rows) & (out[:, 1] >= 0) & (out[:, 1] < self.cols)
        free = inside.copy()
        free[inside] = ~self.walls[out[inside, 0], out[inside, 1]]
        for i in np.flatnonzero(~free):  # rare: a ball pressed into a wall
            out[i] = self.xy_to_cell(xy[i])
        return out

    def distances_to(self, goal: Cell) -> dict[Cell, int]:
        """BFS step counts from every reachable free cell to `goal` (4-connected moves)."""
        dist = {goal: 0}
        queue = deque([goal])
        while queue:
            i, j = queue.popleft()
            for nb in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                if self.is_free(nb) and nb not in dist:
                    dist[nb] = dist[(i, j)] + 1
                    queue.append(nb)
        return dist

    def next_cell(self, cell: Cell, dist: dict[Cell, int]) -> Cell:
        """The neighbour one step closer to the goal (ties broken in a fixed order: up, down, left, right)."""
        i, j = cell
        options = [nb for nb in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)) if nb in dist]
        return min(options, key=lambda nb: dist[nb])


@dataclass
class WaypointExpert:
    """PD waypoint follower for the point mass. Call with (position [2], velocity [2], goal xy [2]).

    Gains: Kp 10 / Kd 1 follow D4RL's maze2d waypoint controller (p_gain 10, d_gain -1); with actions
    clipped to [-1, 1] and the env's velocity clip at 5 they cross a UMaze in about 100 steps without
    overshooting into walls (measured in tests/test_data_maze.py).
    """

    grid: MazeGrid
    kp: float = 10.0
    kd: float = 1.0
    _goal_cell: Cell | None = field(default=None, init=False, repr=False)
    _dist: dict[Cell, int] = field(default_factory=dict, init=False, repr=False)

    def target(self, pos: np.ndarray, goal_xy: np.ndarray) -> np.ndarray:
        """The point the controller steers at from `pos`: next cell centre, or the goal in the goal cell."""
        goal_cell = self.grid.xy_to_cell(goal_xy)
        if goal_cell != self._goal_cell:  # replan only when the goal moves to another cell
            self._goal_cell, self._dist = goal_cell, self.grid.distances_to(goal_cell)
        cell = self.grid.xy_to_cell(pos)
        if cell == goal_cell or cell not in self._dist:
            return np.asarray(goal_xy, dtype=np.float64)
        return self.grid.cell_to_xy(self.grid.next_cell(cell, self._dist))

    def __call__(self, pos: np.ndarray, vel: np.ndarray, goal_xy: np.ndarray) -> np.ndarray:
        """Action [2] in [-1, 1]."""
        target = self.target(pos, goal_xy)
        return np.clip(self.kp * (target - pos) - self.kd * np.asarray(vel), -1.0, 1.0)

    def act(self, obs: dict) -> np.ndarray:
        """Action from a PointMaze dict observation, steering at the env's own `desired_goal`."""
        o = obs["observation"]
        return self(o[:2], o[2:4], obs["desired_goal"])
