"""What makes a result reproducible besides its config: the package versions and the git commit that ran."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path


@functools.cache
def versions() -> dict[str, str]:
    out = {}
    for pkg in ("ailot", "jax", "jaxlib", "flax", "optax", "ott-jax", "ray", "minari", "gymnasium",
                "gymnasium-robotics", "mujoco", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


@functools.cache
def git_commit(repo: Path | None = None) -> str:
    """HEAD of the checkout the package runs from, with "+dirty" when its code (ailot/, tune/) differs from it."""
    here = Path(__file__).resolve().parent if repo is None else Path(repo)

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5)

    try:
        head = git("rev-parse", "HEAD").stdout.strip()
        if not head:
            return "unknown"
        top = git("rev-parse", "--show-toplevel").stdout.strip()
        dirty = git("-C", top, "diff", "--quiet", "HEAD", "--", "ailot", "tune").returncode == 1
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
