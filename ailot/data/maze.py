"""Maze layouts, planning and a scripted waypoint expert for gymnasium-robotics PointMaze.

Layouts are rows of characters (`MAP_ALPHABET`): '#' wall, '.' free, 'R' reset (start) cell, 'G' goal cell.
A map needs a wall border, exactly one 'G', at least one 'R' (the env starts at one of them at random), rows
of one width, and every free cell connected to the goal; `parse_maze` refuses anything else with an
AilotInputError saying what to change, before any env is built. For example

    #######
    #R#...#
    #.#.#.#
    #...#G#
    #######

The named evaluation mazes (`EVAL_MAZES`) are the gymnasium-robotics UMaze, Medium, Large (D4RL maze2d's
layouts) and Open layouts with one fixed reset and one fixed goal cell, as D4RL maze2d evaluates with a fixed
goal; `maze_task` builds the same for a user's map. Episode horizons: D4RL's for umaze / medium / large (300,
600, 800); any other map gets `horizon_for` its shortest reset-to-goal path (50 steps a cell, plus 100: the
rule that gives D4RL's medium and large horizons), so the expert, at about 20 steps a cell, spends most of an
episode at the goal on any map.

The expert plans on the maze grid (breadth-first search from the goal cell gives every free cell its
distance to the goal), then steers a PD controller `a = clip(Kp * (target - pos) - Kd * vel, -1, 1)` at the
centre of the next cell on a shortest path, and straight at the goal point once inside the goal cell.
Moving from one cell to the centre of a 4-neighbour stays inside the 1 x 2 rectangle the two cells form,
so the straight segment never crosses a wall. The distance field is cached per goal cell, so a changing
goal (the agent dataset's random targets) replans at the cost of one BFS. Nothing in it depends on the
maze's size: it is the same controller on every map.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ailot.envs import POINTMAZE_IDS
from ailot.errors import AilotInputError

WALL = 1
R, G = "r", "g"  # gymnasium-robotics cell codes for the reset and goal cells
# Map text alphabet -> gymnasium-robotics cell code.
MAP_ALPHABET: dict[str, int | str] = {"#": WALL, ".": 0, "R": R, "G": G}
_ALPHABET_HELP = "'#' wall, '.' free, 'R' reset (start), 'G' goal"
STEPS_PER_CELL = 50  # horizon of a map without a D4RL horizon, per cell of its shortest reset-to-goal path + 2
CUSTOM_ENV_ID = "ailot/PointMaze_Custom-v0"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")  # part of a Minari namespace: no '/' or '.'

# UMaze: start at the bottom-left end of the U, goal at the top-left end; the path goes around the wall.
UMAZE_ROWS = ("#####",
              "#G..#",
              "###.#",
              "#R..#",
              "#####")
# Medium: start in the top-left corner, goal in the far (bottom-right) corner.
MEDIUM_ROWS = ("########",
               "#R.##..#",
               "#..#...#",
               "##...###",
               "#..#...#",
               "#.#..#.#",
               "#...#.G#",
               "########")
# Large: start in the top-left corner, goal where D4RL's maze2d-large has it (row 7, column 9).
LARGE_ROWS = ("############",
              "#R...#.....#",
              "#.##.#.#.#.#",
              "#......#...#",
              "#.####.###.#",
              "#..#.#.....#",
              "##.#.#.#.###",
              "#..#...#.G.#",
              "############")
# Open (gymnasium-robotics OPEN): no inner walls; start and goal in opposite corners.
OPEN_ROWS = ("#######",
             "#R....#",
             "#.....#",
             "#....G#",
             "#######")
D4RL_HORIZONS = {"umaze": 300, "medium": 600, "large": 800}  # maze2d-{umaze,medium,large} max_episode_steps

Cell = tuple[int, int]


@dataclass(frozen=True)
class MazeTask:
    """One evaluation task: its name (the dataset ids' maze part), map rows ('#', '.', 'R', 'G'), registered env
    id and episode length. `maze_map` is the gymnasium-robotics form of the rows."""

    name: str
    rows: tuple[str, ...]
    env_id: str
    max_episode_steps: int

    @property
    def maze_map(self) -> list:
        return [[MAP_ALPHABET[c] for c in row] for row in self.rows]


def _map_error(problem: str, fix: str) -> AilotInputError:
    return AilotInputError("maze_map", problem, fix)


def parse_maze(maze_map: str | Sequence[str]) -> tuple[str, ...]:
    """Check a map (rows of '#', '.', 'R', 'G', or one string with a row per line) and return its rows.

    Refused: unknown characters, ragged rows, a border that is not all wall, no 'G' or several, no 'R',
    and free cells (reset cells included) from which the goal cannot be reached.
    """
    if isinstance(maze_map, str):  # a YAML block scalar or a file's text: one row per line
        rows = [line.strip() for line in maze_map.splitlines() if line.strip()]
    elif isinstance(maze_map, Sequence) and all(isinstance(r, str) for r in maze_map):
        rows = [r.strip() for r in maze_map]
    else:
        raise _map_error(f"got {maze_map!r}", f"give a list of rows (strings) of {_ALPHABET_HELP}; in YAML quote "
                         "each row ('#' starts a comment) or write the map as a block: `maze_map: |`")
    if len(rows) < 3 or any(len(r) < 3 for r in rows):
        raise _map_error(f"has {len(rows)} row(s) of widths {[len(r) for r in rows]}",
                         "give at least 3 rows of at least 3 cells: a wall border around the free cells")
    for i, row in enumerate(rows):
        if len(row) != len(rows[0]):
            raise _map_error(f"row {i} has {len(row)} cells, row 0 has {len(rows[0])}",
                             "make every row the same width (fill with '#')")
        for j, c in enumerate(row):
            if c not in MAP_ALPHABET:
                raise _map_error(f"row {i}, column {j} holds unknown character {c!r}", f"use only {_ALPHABET_HELP}")
    border = [(i, j) for i in range(len(rows)) for j in range(len(rows[0]))
              if (i in (0, len(rows) - 1) or j in (0, len(rows[0]) - 1)) and rows[i][j] != "#"]
    if border:  # the ball would roll off the map: gymnasium-robotics builds walls only where the map has them
        raise _map_error(f"the border is open at (row, column) {border[:5]}", "surround the map with '#'")
    cells = {c: [(i, j) for i, row in enumerate(rows) for j, x in enumerate(row) if x == c] for c in "RG"}
    if len(cells["G"]) != 1:
        raise _map_error(f"has {len(cells['G'])} goal cells 'G'" + (f" at {cells['G']}" if cells["G"] else ""),
                         "mark exactly one goal cell 'G' (the evaluation goal is fixed, as in D4RL maze2d)")
    if not cells["R"]:
        raise _map_error("has no reset cell 'R'", "mark the start cell (or cells: one is drawn per episode) 'R'")
    dist = MazeGrid([[MAP_ALPHABET[c] for c in row] for row in rows]).distances_to(cells["G"][0])
    blocked = [c for c in cells["R"] if c not in dist]
    if blocked:
        raise _map_error(f"the goal 'G' at {cells['G'][0]} cannot be reached from the reset cell(s) 'R' at {blocked}",
                         "open a path of '.' cells from every 'R' to the 'G'")
    cut_off = [(i, j) for i, row in enumerate(rows) for j, x in enumerate(row) if x != "#" and (i, j) not in dist]
    if cut_off:  # the agent data drives between random free cells: every one must lead to the goal
        raise _map_error(f"free cells at (row, column) {cut_off[:5]} cannot reach the goal",
                         "wall them off with '#' or open a path from them to the goal")
    return tuple(rows)


def map_rows(maze_map: list) -> tuple[str, ...]:
    """The rows of a gymnasium-robotics map (1 / 0 / 'r' / 'g' codes), as `parse_maze` reads them."""
    text = {code: c for c, code in MAP_ALPHABET.items()}
    unknown = sorted({repr(code) for row in maze_map for code in row if code not in text})
    if unknown:  # e.g. gymnasium-robotics' 'c' (reset or goal) cells: not a map of this project
        raise _map_error(f"holds cell codes {', '.join(unknown)}", "use a map made by ailot.data.generate")
    return tuple("".join(text[code] for code in row) for row in maze_map)


def shortest_path(rows: Sequence[str]) -> int:
    """Cells on the longest of the shortest paths from a reset cell to the goal (4-connected moves)."""
    grid = MazeGrid([[MAP_ALPHABET[c] for c in row] for row in rows])
    dist = grid.distances_to(grid.cell_of(G))
    return max(dist[c] for c in grid.free_cells if grid.maze_map[c[0]][c[1]] == R)


def horizon_for(rows: Sequence[str]) -> int:
    """Episode length of a map without a D4RL horizon: STEPS_PER_CELL per cell of its shortest path, plus two
    cells' worth for starting and settling at the goal. On D4RL's mazes this gives medium 600 and large 800 as
    D4RL (umaze 400, D4RL 300); the expert needs about 20 steps a cell, so it holds the goal most of an episode."""
    return STEPS_PER_CELL * (shortest_path(rows) + 2)


def custom_name(rows: Sequence[str]) -> str:
    """'custom-' and 8 hex digits of the rows' sha256: the same map always gets the same dataset ids."""
    return "custom-" + hashlib.sha256("\n".join(rows).encode()).hexdigest()[:8]


def maze_task(maze: str | MazeTask | None = None, maze_map: str | Sequence[str] | None = None) -> MazeTask:
    """The task of a named maze (`maze` in EVAL_MAZES, default umaze), or of a user's `maze_map`, named `maze`
    or, without a name, by `custom_name` (a MazeTask is returned as it is). Bad names and maps raise
    AilotInputError before any env exists."""
    if isinstance(maze, MazeTask) and maze_map is None:
        return maze
    if maze_map is None:
        maze = "umaze" if maze is None else maze
        if maze not in EVAL_MAZES:
            raise AilotInputError("maze", f"unknown maze {maze!r}",
                                  f"use one of: {', '.join(EVAL_MAZES)}, or give your own layout as maze_map")
        return EVAL_MAZES[maze]
    rows = parse_maze(maze_map)
    if maze is None:
        maze = custom_name(rows)
    elif maze in EVAL_MAZES:  # its dataset ids would mix with the built-in maze's
        raise AilotInputError("maze", f"{maze!r} names a built-in maze, but maze_map gives a layout",
                              "give your map another name, or drop maze_map to use the built-in maze")
    elif not isinstance(maze, str) or not _NAME.match(maze):
        raise AilotInputError("maze", f"name {maze!r} cannot be part of a dataset id",
                              "use up to 40 letters, digits, '_' or '-', starting with a letter or digit")
    return MazeTask(maze, rows, CUSTOM_ENV_ID, horizon_for(rows))


def task_from_spec(env_id: str, maze_map: list, max_episode_steps: int) -> MazeTask:
    """The task of a stored evaluation EnvSpec: the named maze when the map is one, else a custom task."""
    rows = map_rows(maze_map)
    for task in EVAL_MAZES.values():
        if task.rows == rows:
            return task
    return MazeTask(custom_name(rows), rows, env_id, int(max_episode_steps))


def _named(name: str, rows: tuple[str, ...], env_id: str) -> MazeTask:
    rows = parse_maze(rows)
    return MazeTask(name, rows, env_id, D4RL_HORIZONS.get(name) or horizon_for(rows))




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


EVAL_MAZES: dict[str, MazeTask] = {
    "umaze": _named("umaze", UMAZE_ROWS, POINTMAZE_IDS["umaze"]),
    "medium": _named("medium", MEDIUM_ROWS, POINTMAZE_IDS["medium"]),
    "large": _named("large", LARGE_ROWS, "ailot/PointMaze_Large-v0"),
    "open": _named("open", OPEN_ROWS, "ailot/PointMaze_Open-v0"),
}
