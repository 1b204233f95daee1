"""Local PointMaze benchmark suite: an expert and an agent Minari dataset per maze, from real rollouts.

    python -m ailot.data.generate --maze umaze --agent-transitions 100000 --expert-episodes 20 --seed 0
    python -m ailot.data.generate --maze large            # or medium, open
    python -m ailot.data.generate --maze-map my.txt [--maze zigzag]   # your layout: rows of # . R G

Evaluation task (fixed, D4RL maze2d style): gymnasium-robotics PointMaze (`ailot.envs.point_maze`, so the
position noise can be set: 0.1 cell as D4RL) on a map holding one goal cell and the reset cell(s), named
(`ailot.data.maze.EVAL_MAZES`: umaze, medium and large with D4RL's layouts, open) or given as rows of
characters, `maze_map` ('#' wall, '.' free, 'R' reset, 'G' goal; ailot.data.maze says what a map must hold, and
a bad map is refused before any rollout), `continuing_task=True, reset_target=False`, sparse reward, so a
return is the number of steps spent within 0.45 of the goal. Episodes last D4RL's horizons on umaze / medium /
large (300 / 600 / 800 steps) and `ailot.data.maze.horizon_for` the shortest path on any other map. Its
EnvSpec (the map included) is stored as the datasets' `eval_env`.

Datasets (ids `ailot/pointmaze-{maze}/expert-v0` and `ailot/pointmaze-{maze}/agent-{size}-v0`, where size
is the agent transition count written 3k, 100k, 1m, or the plain number if not round; a map given as rows is
`{maze}` = its `maze` name if given, else `custom-` and 8 hex digits of the rows' hash):

- expert: the waypoint controller with small Gaussian action noise on the evaluation task, full-length
  episodes.
- agent (D4RL style; used reward-free, true rewards kept): the controller with large action noise driving
  to randomly chosen cells (a new one each time it reaches its target) from random start cells, plus a
  fraction of uniform-random-action episodes. With `max_dwell` > 0 the controller holds at each target it
  reaches for a random 0..max_dwell steps before choosing the next (id `agent-{size}-dwell{max_dwell}-v0`):
  without it no agent episode ever stays put, so nothing in the data shows holding still at the goal, which
  the evaluation rewards. Rewards are those of the evaluation goal. Episode lengths are
  uniform in [min_length, max_length] and end truncated, so length bucketing matters downstream.

Both store ref_max_score = mean return of the noise-free controller on the evaluation task and
ref_min_score = mean return of a uniform random policy (each over `reference_episodes` episodes), and the
generation settings (the map's rows included) under the metadata key `ailot_generation`. Same settings and
seed -> identical arrays. Nothing in the controllers or the agent data depends on the maze's size, so the same
defaults serve every map; the summary line prints how often each reference policy reached the goal.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ailot.data.maze import EVAL_MAZES, MazeGrid, MazeTask, WaypointExpert, maze_task, shortest_path
from ailot.errors import AilotInputError

REACHED_RADIUS = 0.3  # agent controller: distance to its own target at which it picks a new target cell


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that determines the generated arrays (stored in both datasets' metadata)."""

    maze: str
    agent_transitions: int
    expert_episodes: int
    seed: int
    reference_episodes: int
    expert_noise: float  # std of Gaussian action noise for the expert dataset
    agent_noise: float  # std of Gaussian action noise for the agent dataset (actions are in [-1, 1])
    random_fraction: float  # share of agent episodes with uniform random actions
    min_length: int  # agent episode lengths are uniform in [min_length, max_length]
    max_length: int
    position_noise: float  # +- uniform noise on the reset and goal positions, in cells (eval env too)
    max_dwell: int = 0  # agent controller: on reaching its target it holds there for uniform [0, max_dwell] steps
    maze_map: tuple[str, ...] = ()  # the map's rows ('#', '.', 'R', 'G'); () in metadata older than this field


def size_tag(n: int) -> str:
    """3000 -> '3k', 1000000 -> '1m', 2500 -> '2500' (the agent dataset id's size part)."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def dataset_ids(maze: str, agent_transitions: int, max_dwell: int = 0) -> tuple[str, str]:
    """(agent_id, expert_id) for a maze, agent size and dwell (agent data that pauses at its targets is named
    `agent-{size}-dwell{max_dwell}`; the expert dataset is the same for all)."""
    dwell = f"-dwell{max_dwell}" if max_dwell else ""
    return (f"ailot/pointmaze-{maze}/agent-{size_tag(agent_transitions)}{dwell}-v0",
            f"ailot/pointmaze-{maze}/expert-v0")


def make_eval_env(maze: str | MazeTask, max_episode_steps: int | None = None, position_noise: float = 0.1):
    """The fixed evaluation env of `maze`, a name or a task (optionally with another time limit, for agent
    collection).

    position_noise 0.1 as D4RL maze2d (uniform +-0.1 on reset and target); gymnasium-robotics' default 0.25
    moves the goal up to 0.35 from the cell centre, which a policy that does not see the goal cannot track.
    """
    import gymnasium as gym

    from ailot.envs import register_envs

    register_envs()
    task = maze_task(maze)
    if task.env_id not in gym.registry:  # large, open, custom maps: same entry point, the map is a kwarg
        gym.register(task.env_id, entry_point="ailot.envs:point_maze")
    return gym.make(task.env_id, maze_map=task.maze_map, continuing_task=True, reset_target=False,
                    position_noise_range=position_noise, max_episode_steps=max_episode_steps or task.max_episode_steps)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


# ---------------------------------------------------------------------- rollouts


def reference_rollouts(maze: str | MazeTask, policy: str, episodes: int, seed: int,
                       position_noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(returns [episodes], success [episodes]) of 'expert' (noise-free controller) or 'random' (uniform
    actions) on the eval task; success: the env's info['success'] (within 0.45 of the goal) at some step."""
    env = make_eval_env(maze, position_noise=position_noise)
    grid = MazeGrid(maze_task(maze).maze_map)
    rng = np.random.default_rng(seed)
    out, success = np.zeros(episodes), np.zeros(episodes, bool)
    for i in range(episodes):
        obs, _ = env.reset(seed=_seed(rng))
        expert = WaypointExpert(grid)
        done = False
        while not done:
            action = expert.act(obs) if policy == "expert" else rng.uniform(-1.0, 1.0, 2)
            obs, reward, terminated, truncated, info = env.step(action)
            out[i] += reward
            success[i] |= bool(info.get("success", False))
            done = terminated or truncated
    env.close()
    return out, success


def reference_returns(maze: str | MazeTask, policy: str, episodes: int, seed: int,
                      position_noise: float = 0.1) -> np.ndarray:
    """Returns [episodes] of `reference_rollouts`."""
    return reference_rollouts(maze, policy, episodes, seed, position_noise)[0]


def _collector(env):
    import minari
    from minari import StepDataCallback

    class SuccessInfo(StepDataCallback):
        """Record only info['success'], the same key on reset and step (minari 0.5.4's record_infos
        fails when reset and step infos differ, and PointMaze's step info carries extra keys)."""

        def __call__(self, env, obs, info, action=None, rew=None, terminated=None, truncated=None):
            data = super().__call__(env, obs, info, action, rew, terminated, truncated)
            data["info"] = {"success": np.bool_(info.get("success", False))}
            return data

    return minari.DataCollector(env, step_data_callback=SuccessInfo, record_infos=True)


def collect_expert(collector, grid: MazeGrid, settings: GenerationSettings, rng: np.random.Generator, bar) -> None:
    """Full-length noisy-expert episodes on the evaluation task."""
    for _ in range(settings.expert_episodes):
        obs, _ = collector.reset(seed=_seed(rng))
        expert = WaypointExpert(grid)
        done = False
        while not done:
            action = expert.act(obs) + settings.expert_noise * rng.standard_normal(2)
            # float32: the action space's dtype (Minari warns on float64 actions)
            obs, _, terminated, truncated, _ = collector.step(np.clip(action, -1.0, 1.0).astype(np.float32))
            done = terminated or truncated
            bar.update(1)


def collect_agent(collector, grid: MazeGrid, settings: GenerationSettings, rng: np.random.Generator, bar) -> None:
    """Noisy random-target waypoint episodes and random-action episodes, `agent_transitions` steps in all."""
    remaining = settings.agent_transitions
    while remaining > 0:
        length = min(int(rng.integers(settings.min_length, settings.max_length + 1)), remaining)
        start = grid.free_cells[int(rng.integers(len(grid.free_cells)))]
        obs, _ = collector.reset(seed=_seed(rng), options={"reset_cell": np.array(start)})
        random_actions = rng.random() < settings.random_fraction
        controller = WaypointExpert(grid)
        target, dwell = None, None  # dwell: steps left holding at the reached target (None: still driving)
        for _ in range(length):
            pos, vel = obs["observation"][:2], obs["observation"][2:4]
            if random_actions:
                action = rng.uniform(-1.0, 1.0, 2)
            else:
                if target is not None and dwell is None and np.linalg.norm(pos - target) < REACHED_RADIUS:
                    # No draw when max_dwell is 0, so data made without dwelling stays identical.
                    dwell = int(rng.integers(settings.max_dwell + 1)) if settings.max_dwell else 0
                if dwell is not None and dwell > 0:
                    dwell -= 1
                elif target is None or dwell == 0:
                    dwell = None
                    here = grid.xy_to_cell(pos)
                    others = [c for c in grid.free_cells if c != here]
                    target = grid.cell_to_xy(others[int(rng.integers(len(others)))])
                action = np.clip(controller(pos, vel, target) + settings.agent_noise * rng.standard_normal(2), -1, 1)
            obs, _, terminated, truncated, _ = collector.step(np.asarray(action, dtype=np.float32))
            bar.update(1)
            if terminated or truncated:  # not reached: the collection time limit is max_length
                break
        remaining -= length
    # The next reset (or create_dataset) closes the last episode as truncated.


# ---------------------------------------------------------------------- datasets


def existing_settings(dataset_id: str, key: str = "ailot_generation") -> dict | None:
    """The settings JSON stored under metadata `key` of a local dataset ({} if it has none), or None if the
    dataset does not exist."""
    import minari

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            meta = minari.load_dataset(dataset_id).storage.metadata
    except FileNotFoundError:
        return None
    raw = meta.get(key)
    return json.loads(raw) if raw else {}


def _relevant(settings: dict, kind: str) -> dict:
    """The settings a dataset's arrays depend on: the expert ignores the agent's knobs and vice versa (so
    agent datasets of several sizes share one expert dataset)."""
    skip = {"expert_episodes", "expert_noise"} if kind == "agent" else {
        "agent_transitions", "agent_noise", "random_fraction", "min_length", "max_length", "max_dwell"}
    defaults = {f.name: f.default for f in fields(GenerationSettings) if f.default is not MISSING}
    # Settings added later (absent from older datasets' metadata) count as their default.
    merged = json.loads(json.dumps({**defaults, **settings}))  # as stored: tuples become lists
    if not merged["maze_map"] and merged["maze"] in EVAL_MAZES:  # made before the rows were stored
        merged["maze_map"] = list(EVAL_MAZES[merged["maze"]].rows)
    return {k: v for k, v in merged.items() if k not in skip}


def _write(collector, dataset_id: str, eval_spec, settings: GenerationSettings, refs: tuple[float, float],
           description: str) -> str:
    import gymnasium_robotics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing author e-mail / permalink warnings
        dataset = collector.create_dataset(
            dataset_id=dataset_id, eval_env=eval_spec, algorithm_name="ailot waypoint controller",
            author="ailot", description=description, ref_min_score=refs[0], ref_max_score=refs[1],
            num_episodes_average_score=settings.reference_episodes,
            requirements=[f"gymnasium-robotics>={gymnasium_robotics.__version__}"],
        )
    dataset.storage.update_metadata({"ailot_generation": json.dumps(asdict(settings), sort_keys=True)})
    return str(dataset.storage.data_path)


def generate_pointmaze(
    maze: str | None = None,
    agent_transitions: int = 100_000,
    expert_episodes: int = 20,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    *,
    reference_episodes: int = 50,
    expert_noise: float = 0.1,
    agent_noise: float = 0.3,
    random_fraction: float = 0.15,
    min_length: int = 100,
    max_length: int = 500,
    position_noise: float = 0.1,
    max_dwell: int = 0,
    maze_map: str | Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[str, str]:
    """Generate (or reuse) the agent and expert datasets of a maze; returns (agent_id, expert_id).

    `maze` names a built-in maze (default umaze; ailot.data.maze.EVAL_MAZES), or, with `maze_map` (rows of '#',
    '.', 'R', 'G', or one string with a row per line), names that layout (default `custom-<hash>`).
    `root` sets MINARI_DATASETS_PATH for this process, so later loads find the datasets. Existing datasets
    made with the same settings are reused; different settings need `overwrite=True`.
    """
    from tqdm.auto import tqdm

    task = maze_task(maze, maze_map)  # a bad name or map stops here, before any env or rollout
    maze = task.name
    for name, value, low in (("agent_transitions", agent_transitions, 1), ("expert_episodes", expert_episodes, 1),
                             ("reference_episodes", reference_episodes, 1), ("min_length", min_length, 1)):
        if int(value) < low:
            raise AilotInputError(name, f"is {value}", f"use a value >= {low}")
    if max_length < min_length:
        raise AilotInputError("max_length", f"{max_length} < min_length {min_length}", "use max_length >= min_length")
    if not 0.0 <= random_fraction <= 1.0:
        raise AilotInputError("random_fraction", f"is {random_fraction}", "use a fraction in [0, 1]")
    if not 0.0 <= position_noise <= 0.4:  # beyond 0.5 a position could leave its cell
        raise AilotInputError("position_noise", f"is {position_noise}", "use a value in [0, 0.4] (cells)")
    if int(max_dwell) < 0:
        raise AilotInputError("max_dwell", f"is {max_dwell}", "use a number of steps >= 0")
    settings = GenerationSettings(maze, int(agent_transitions), int(expert_episodes), int(seed),
                                  int(reference_episodes), float(expert_noise), float(agent_noise),
                                  float(random_fraction), int(min_length), int(max_length), float(position_noise),
                                  int(max_dwell), task.rows)
    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(root)
    from minari.storage import get_dataset_path

    agent_id, expert_id = dataset_ids(maze, settings.agent_transitions, settings.max_dwell)
    wanted = asdict(settings)
    # Another map under a name already used differs in maze_map: refused below as 'other generation settings'.
    todo: dict[str, str] = {}  # kind -> id of the datasets to (re)generate
    for kind, i in (("agent", agent_id), ("expert", expert_id)):
        have = existing_settings(i)
        if have is not None and not overwrite:
            if _relevant(have, kind) == _relevant(wanted, kind):
                continue  # made with the same settings: identical arrays, reuse
            raise AilotInputError(f"dataset {i!r}", f"exists with other generation settings {have}",
                                  "pass overwrite=True (--overwrite) to replace it, or use another --root")
        if have is not None:
            shutil.rmtree(get_dataset_path(i))
        todo[kind] = i
    if not todo:
        print(f"ailot.data.generate: reusing {agent_id} and {expert_id} under {get_dataset_path()}")
        return agent_id, expert_id

    seeds = np.random.SeedSequence(settings.seed).spawn(4)  # independent streams: sizes don't shift each other
    rng_expert, rng_agent = (np.random.default_rng(s) for s in seeds[:2])
    ref_seeds = [int(s.generate_state(1)[0]) for s in seeds[2:]]
    t0 = time.perf_counter()
    expert_ref = reference_rollouts(task, "expert", settings.reference_episodes, ref_seeds[0], position_noise)
    random_ref = reference_rollouts(task, "random", settings.reference_episodes, ref_seeds[1], position_noise)
    ref_max, ref_min = float(expert_ref[0].mean()), float(random_ref[0].mean())
    t_ref = time.perf_counter() - t0
    if expert_ref[1].mean() < 0.8:  # on a user's map: the controller (or the horizon) does not suit it
        warnings.warn(f"maze {maze!r}: the waypoint expert reached the goal in only {expert_ref[1].mean():.0%} of "
                      f"{settings.reference_episodes} episodes of {task.max_episode_steps} steps; check the map",
                      stacklevel=2)
    grid = MazeGrid(task.maze_map)
    eval_env = make_eval_env(task, position_noise=settings.position_noise)
    eval_spec = eval_env.spec

    expert_steps = settings.expert_episodes * task.max_episode_steps if "expert" in todo else 0
    agent_steps = settings.agent_transitions if "agent" in todo else 0
    paths = {}
    if expert_steps:
        with tqdm(total=expert_steps, desc=expert_id, disable=not progress, unit="step") as bar:
            collector = _collector(eval_env)
            collect_expert(collector, grid, settings, rng_expert, bar)
            paths["expert"] = _write(
                collector, expert_id, eval_spec, settings, (ref_min, ref_max),
                f"Waypoint controller (action noise std {expert_noise}) on the fixed {maze} task.")
            collector.close()
    if agent_steps:
        with tqdm(total=agent_steps, desc=agent_id, disable=not progress, unit="step") as bar:
            collector = _collector(make_eval_env(task, settings.max_length, settings.position_noise))
            collect_agent(collector, grid, settings, rng_agent, bar)
            paths["agent"] = _write(
                collector, agent_id, eval_spec, settings, (ref_min, ref_max),
                f"Noisy waypoint controller (std {agent_noise}) to random cells from random starts, "
                f"{random_fraction:.0%} random-action episodes; rewards of the fixed {maze} goal.")
            collector.close()
    if "expert" not in todo:
        eval_env.close()  # only its spec was needed
    seconds = time.perf_counter() - t0
    ref_steps = 2 * settings.reference_episodes * task.max_episode_steps
    total = expert_steps + agent_steps + ref_steps
    where = "".join(f"\n  {kind}: {i} -> {paths.get(kind, 'reused')}" for kind, i in
                    (("expert", expert_id), ("agent", agent_id)))
    print(f"ailot.data.generate: {total} env steps in {seconds:.1f}s ({total / seconds:.0f} steps/s; "
          f"references {ref_steps / max(t_ref, 1e-9):.0f} steps/s)\n"
          f"  reference returns: random {ref_min:.2f}, expert {ref_max:.2f} "
          f"({settings.reference_episodes} episodes each; reached the goal: random {random_ref[1].mean():.0%}, "
          f"expert {expert_ref[1].mean():.0%}){where}")
    return agent_id, expert_id


def ids_of(settings: dict) -> tuple[str, str]:
    """(agent_id, expert_id) that `generate_pointmaze(**settings)` makes (a config's generate block), without
    making anything; a bad maze or map raises AilotInputError."""
    given = {k: p.default for k, p in inspect.signature(generate_pointmaze).parameters.items()} | settings
    task = maze_task(given["maze"], given["maze_map"])
    return dataset_ids(task.name, int(given["agent_transitions"]), int(given["max_dwell"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ailot.data.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--maze", default=None,
                   help=f"built-in maze: {', '.join(EVAL_MAZES)} (default umaze); with --maze-map, your map's name "
                   "(default custom-<hash of its rows>)")
    p.add_argument("--maze-map", default=None, metavar="FILE",
                   help="text file with your layout, a row per line: '#' wall, '.' free, 'R' reset, 'G' goal")
    p.add_argument("--agent-transitions", type=int, default=None, help="agent dataset size (default 100000)")
    p.add_argument("--expert-episodes", type=int, default=None, help="expert episodes (default 20)")
    p.add_argument("--reference-episodes", type=int, default=None,
                   help="episodes per reference return (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-dwell", type=int, default=0,
                   help="agent controller holds at each reached target for 0..N steps (default 0: never)")
    p.add_argument("--root", default=None, help="datasets folder (sets MINARI_DATASETS_PATH)")
    p.add_argument("--overwrite", action="store_true", help="replace existing datasets with these ids")
    p.add_argument("--quick", action="store_true",
                   help="test size: 5000 agent transitions, 5 expert episodes, 10 reference episodes")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--check", action="store_true",
                   help="check the maze (and map), print its dataset ids and horizon, generate nothing")
    args = p.parse_args(argv)
    quick = (5000, 5, 10) if args.quick else (100_000, 20, 50)
    try:
        maze_map = None
        if args.maze_map is not None:
            try:
                maze_map = Path(args.maze_map).read_text()
            except OSError as exc:
                raise AilotInputError("--maze-map", f"cannot read {args.maze_map!r} ({exc.strerror})",
                                      "give a text file holding the map's rows") from None
        if args.check:
            task = maze_task(args.maze, maze_map)
            ids = ids_of({"maze": args.maze, "maze_map": maze_map, "max_dwell": args.max_dwell,
                          "agent_transitions": args.agent_transitions or quick[0]})
            print(f"maze {task.name}: {task.max_episode_steps}-step episodes, shortest path "
                  f"{shortest_path(task.rows)} cells\n  agent: {ids[0]}\n  expert: {ids[1]}\n" + "\n".join(task.rows))
            return 0
        generate_pointmaze(
            maze=args.maze,
            maze_map=maze_map,
            agent_transitions=args.agent_transitions or quick[0],
            expert_episodes=args.expert_episodes or quick[1],
            seed=args.seed,
            root=args.root,
            reference_episodes=args.reference_episodes or quick[2],
            max_dwell=args.max_dwell,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except AilotInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
