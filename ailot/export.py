"""Export relabelled datasets as Parquet that Ray Data, RLlib and other offline RL libraries read directly.

One row per transition, episode by episode with time ascending (the order of `Episodes.to_transitions()`),
in the column layout of RLlib's offline input on the new API stack (`ray.rllib.core.columns.Columns`, read
by `ray.rllib.offline.offline_prelearner.OfflinePreLearner` with its default `SCHEMA`):

    eps_id       int64                   index of the episode in the source dataset
    t            int64                   step within the episode
    obs          fixed_size_list<float>  flattened observation (dict observations already flattened with the
                                         dataset's obs_keys, see ailot.data.episodes.flatten_observation)
    actions      fixed_size_list<float>
    rewards      float                   the labeller's reward for this transition
    new_obs      fixed_size_list<float>  the next observation
    terminateds  bool                    true termination (bootstrapping stops)
    truncateds   bool                    time-limit truncation

No other columns: RLlib turns every unknown column into an extra model output. The files are
`part-00000.parquet`, ... (whole episodes per file, about `rows_per_file` rows each), so
`ray.data.read_parquet(out_dir)` streams them and `pyarrow.dataset` / pandas read the directory. Every
file's schema metadata holds, under the key `ailot`, a JSON object with the labeller settings, the
dataset fingerprint and id, obs_keys, the env spec and provenance (`read_metadata`).

The rewards of a sweep config's labeller, cached or computed, are exported by `ailot export` (ailot.export_cli):

    ailot export --config tune/configs/smoke.yaml --labeller ailot --out exports/smoke-ailot
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ailot.data.episodes import Episodes
from ailot.errors import AilotInputError

log = logging.getLogger(__name__)

FORMAT = "ailot-transitions"
FORMAT_VERSION = 1
METADATA_KEY = b"ailot"
COLUMNS = ("eps_id", "t", "obs", "actions", "rewards", "new_obs", "terminateds", "truncateds")
DEFAULT_ROWS_PER_FILE = 25_000
_FILE = "part-{:05d}.parquet"


# ---------------------------------------------------------------- writing


def file_ranges(lengths: np.ndarray, rows_per_file: int) -> list[tuple[int, int]]:
    """Episode index ranges [(start, stop)] of the files: whole episodes, a file closes once it holds at least
    `rows_per_file` rows (an episode longer than that gets a file of its own)."""
    ranges, start, rows = [], 0, 0
    for i, n in enumerate(np.asarray(lengths, dtype=np.int64).tolist()):
        rows += n
        if rows >= rows_per_file:
            ranges.append((start, i + 1))
            start, rows = i + 1, 0
    if start < len(lengths):
        ranges.append((start, len(lengths)))
    return ranges


def _vectors(values: np.ndarray):
    """[N, d] float32 -> Arrow fixed_size_list<float>[d] (Ray Data reads it as an [N, d] tensor column)."""
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _table(episodes: Episodes, rewards: np.ndarray, start: int, stop: int, offsets: np.ndarray, metadata: bytes):
    import pyarrow as pa

    sub = episodes.select(range(start, stop))
    lengths = sub.lengths
    lo, hi = int(offsets[start]), int(offsets[stop])
    columns = {
        "eps_id": pa.array(np.repeat(np.arange(start, stop, dtype=np.int64), lengths)),
        "t": pa.array(np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])),
        "obs": _vectors(np.concatenate(sub.states())),
        "actions": _vectors(np.concatenate(sub.actions)),
        "rewards": pa.array(rewards[lo:hi]),
        "new_obs": _vectors(np.concatenate([o[1:] for o in sub.observations])),
        "terminateds": pa.array(np.concatenate(sub.terminations)),
        "truncateds": pa.array(np.concatenate(sub.truncations)),
    }
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: metadata})


def _check_rewards(rewards, episodes: Episodes) -> np.ndarray:
    what = "rewards"
    try:
        rewards = np.asarray(rewards, dtype=np.float32)
    except (TypeError, ValueError):
        raise AilotInputError(what, f"cannot be read as numbers ({type(rewards).__name__})",
                              "pass a 1-D float array, one reward per transition") from None
    if rewards.ndim != 1 or len(rewards) != episodes.num_transitions:
        raise AilotInputError(
            what, f"shape {rewards.shape} does not match the {episodes.num_transitions} transitions of "
                  f"dataset {episodes.dataset_id!r}",
            "pass one reward per transition, aligned with Episodes.to_transitions() (the labellers' output)")
    if not np.isfinite(rewards).all():
        bad = int(np.flatnonzero(~np.isfinite(rewards))[0])
        raise AilotInputError(what, f"contain NaN or inf (first at transition {bad})",
                              "relabel again (check Sinkhorn convergence) before exporting")
    return rewards


def _resolve_episodes(data: str | os.PathLike | Episodes, obs_keys) -> Episodes:
    if isinstance(data, Episodes):
        return data
    if not isinstance(data, (str, os.PathLike)):
        raise AilotInputError("dataset", f"got {type(data).__name__}",
                              "pass an Episodes object, a Minari id or a D4RL .hdf5 path")
    from ailot.data.loading import load_dataset

    return load_dataset(str(data) if isinstance(data, os.PathLike) else data, obs_keys=obs_keys)


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise AilotInputError(f"output directory {str(out)!r}", "already exists",
                              "choose a new --out path, or pass --overwrite (overwrite=True) to replace it")
    if out.exists() and not out.is_dir():
        raise AilotInputError(f"output path {str(out)!r}", "is a file, not a directory",
                              "choose a directory path for --out")
    if out.exists():
        _check_previous_export(out)


def _check_previous_export(out: Path) -> None:
    """--overwrite replaces only what an export wrote: a directory holding nothing but part-*.parquet files whose
    metadata says this format (or nothing at all). Anything else there (a sweep's storage, figures, a cache) would
    be deleted with it, so it is refused."""
    import pyarrow.parquet as pq

    what = f"output directory {str(out)!r}"
    fix = "choose a new --out path; --overwrite replaces only a directory an earlier export wrote"
    for entry in sorted(out.iterdir()):
        if not (entry.is_file() and not entry.is_symlink() and entry.name.startswith("part-")
                and entry.suffix == ".parquet"):
            raise AilotInputError(what, f"is not an earlier export: it holds {entry.name!r}", fix)
        try:
            meta = json.loads((pq.read_schema(entry).metadata or {})[METADATA_KEY])
        except Exception:  # not Parquet, no or bad ailot metadata: not ours
            meta = {}
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise AilotInputError(what, f"is not an earlier export: {entry.name!r} is not an ailot export file", fix)


def export_dataset(
    data: str | os.PathLike | Episodes,
    rewards,
    out_dir: str | os.PathLike,
    *,
    labeller_settings: dict[str, Any],
    reward_setting: dict[str, Any] | None = None,
    dataset_fingerprint: str | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    overwrite: bool = False,
    obs_keys=None,
    extra_metadata: dict[str, Any] | None = None,
    compression: str = "zstd",
) -> Path:
    """Write `data` (Episodes, or a Minari id / D4RL path to load) with `rewards` [M] to Parquet under out_dir.

    `labeller_settings` and `reward_setting` (the part of the settings that determines the rewards,
    `ailot.labellers.reward_setting`; the callers that know the labeller pass it) are provenance, written as given.
    `dataset_fingerprint`, when given, must equal the dataset's own (`Episodes.fingerprint()`): rewards are
    only meaningful for the exact data they were computed on. The directory appears whole or not at all
    (written under a temporary name beside it, then renamed); `overwrite=True` replaces an existing one.
    Returns the output directory.
    """
    import pyarrow.parquet as pq

    if not isinstance(labeller_settings, dict) or "labeller" not in labeller_settings:
        raise AilotInputError("labeller_settings", f"got {labeller_settings!r}",
                              "pass the labeller setting dict, e.g. {'labeller': 'ailot', 'k': 1, ...}")
    if isinstance(rows_per_file, bool) or not isinstance(rows_per_file, (int, np.integer)) or rows_per_file < 1:
        raise AilotInputError("rows_per_file", f"got {rows_per_file!r}", "give a positive whole number")
    out = Path(out_dir)
    _check_out_dir(out, overwrite)
    episodes = _resolve_episodes(data, obs_keys)
    fingerprint = episodes.fingerprint()
    if dataset_fingerprint is not None and dataset_fingerprint != fingerprint:
        raise AilotInputError(
            "dataset_fingerprint", f"{dataset_fingerprint[:16]}... is not the fingerprint of dataset "
                                   f"{episodes.dataset_id!r} ({fingerprint[:16]}...)",
            "export the rewards with the exact dataset they were computed on")
    rewards = _check_rewards(rewards, episodes)

    from ailot.provenance import git_commit, versions

    lengths = episodes.lengths
    ranges = file_ranges(lengths, int(rows_per_file))
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "labeller_settings": labeller_settings, "reward_setting": reward_setting,
        "dataset_fingerprint": fingerprint, "dataset_id": episodes.dataset_id,
        "obs_keys": list(episodes.obs_keys) if episodes.obs_keys is not None else None,
        "env_spec": episodes.env_spec, "ref_min_score": episodes.ref_min_score,
        "ref_max_score": episodes.ref_max_score,
        "obs_dim": episodes.obs_dim, "action_dim": episodes.action_dim,
        "num_episodes": episodes.num_episodes, "num_transitions": episodes.num_transitions,
        "num_files": len(ranges), "columns": list(COLUMNS),
        "rewards": {"mean": float(rewards.mean()), "std": float(rewards.std()), "min": float(rewards.min()),
                    "max": float(rewards.max())},
        "extra": extra_metadata or {},
        "versions": versions(), "git_commit": git_commit(), "created": time.time(),
    }
    blob = json.dumps(meta, sort_keys=True, default=str).encode()
    offsets = np.concatenate([[0], np.cumsum(lengths)])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:12]}")
    tmp.mkdir()
    try:
        for i, (start, stop) in enumerate(ranges):
            pq.write_table(_table(episodes, rewards, start, stop, offsets, blob), tmp / _FILE.format(i),
                           compression=compression)
        _replace_dir(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %d transitions (%d episodes, labeller %s) to %s in %d files", len(rewards),
             episodes.num_episodes, labeller_settings["labeller"], out, len(ranges))
    return out


def _replace_dir(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename tmp to out; with overwrite, an existing out is moved aside first and removed after."""
    if out.exists():
        if not overwrite:  # appeared while we were writing
            raise AilotInputError(f"output directory {str(out)!r}", "was created while exporting",
                                  "choose a new --out path, or pass --overwrite")
        _check_previous_export(out)  # again: it may have changed while we were writing
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:12]}")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


# ---------------------------------------------------------------- reading


def parquet_files(out_dir: str | os.PathLike) -> list[Path]:
    files = sorted(Path(out_dir).glob("part-*.parquet"))
    if not files:
        raise AilotInputError(f"export directory {str(out_dir)!r}", "holds no part-*.parquet files",
                              "pass a directory written by ailot.export")
    return files


def read_metadata(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The `ailot` JSON metadata of an export directory (labeller settings, fingerprint, ...)."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(parquet_files(out_dir)[0]).metadata or {}
    if METADATA_KEY not in raw:
        raise AilotInputError(f"export directory {str(out_dir)!r}", "has no 'ailot' schema metadata",
                              "pass a directory written by ailot.export")
    return json.loads(raw[METADATA_KEY])


def read_arrays(out_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """All columns as numpy arrays ([M, d] for obs/actions/new_obs), in export order, with pyarrow only."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f) for f in parquet_files(out_dir)]
    out = {}
    for name in COLUMNS:
        chunks = []
        for table in tables:
            col = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(col.type):
                chunks.append(col.flatten().to_numpy().reshape(len(col), col.type.list_size))
            else:
                chunks.append(col.to_numpy(zero_copy_only=False))
        out[name] = np.concatenate(chunks)
    return out
