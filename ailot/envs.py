"""Gymnasium environments: registration of the robotics suite and re-creation from a stored EnvSpec."""

from __future__ import annotations

import functools
import warnings

import gymnasium as gym

from ailot.errors import AilotInputError

POINTMAZE_IDS = {"umaze": "ailot/PointMaze_UMaze-v0", "medium": "ailot/PointMaze_Medium-v0"}


def _robotics():
    with warnings.catch_warnings():
        # gymnasium-robotics warns about Adroit reward versions at import; irrelevant to us.
        warnings.simplefilter("ignore")
        import gymnasium_robotics

    return gymnasium_robotics


def point_maze(position_noise_range: float = 0.25, **kwargs) -> gym.Env:
    """gymnasium-robotics PointMaze with a settable reset/goal position noise (in cells).

    Its MazeEnv has `position_noise_range`, but PointMazeEnv forwards extra kwargs to MuJoCo too, which
    refuses them; so the attribute is set after construction (it is read only at reset).
    """
    from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv

    env = PointMazeEnv(**kwargs)
    env.position_noise_range = float(position_noise_range)
    return env


@functools.cache
def register_envs() -> None:
    """Register gymnasium-robotics (PointMaze, AntMaze) and ailot's PointMaze ids once per process."""
    gym.register_envs(_robotics())
    for env_id in POINTMAZE_IDS.values():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="ailot.envs:point_maze")


def env_spec_from(spec: str | gym.envs.registration.EnvSpec) -> gym.envs.registration.EnvSpec:
    """Accept an EnvSpec, its JSON (as Minari stores it), or a registered env id."""
    register_envs()
    if isinstance(spec, gym.envs.registration.EnvSpec):
        return spec
    if not isinstance(spec, str) or not spec:
        raise AilotInputError("environment spec", f"got {spec!r}", "give an env id or an EnvSpec JSON string")
    if spec.lstrip().startswith("{"):
        return gym.envs.registration.EnvSpec.from_json(spec)
    try:
        return gym.spec(spec)
    except gym.error.Error as exc:
        raise AilotInputError(
            f"environment {spec!r}", f"not registered ({exc})", "use a gymnasium id such as 'Hopper-v5'"
        ) from None


def make_env(spec: str | gym.envs.registration.EnvSpec, **kwargs) -> gym.Env:
    """Build one environment from an id, an EnvSpec or EnvSpec JSON."""
    return gym.make(env_spec_from(spec), **kwargs)
