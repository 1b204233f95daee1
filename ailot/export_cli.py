"""`ailot export`: a sweep config's labeller rewards (from the sweep's cache, or computed and cached) written as
Parquet with ailot.export, for Ray Data, RLlib, d3rlpy, CORL and other offline RL libraries.

    ailot export --config tune/configs/smoke.yaml --labeller ailot --out exports/smoke-ailot [--set k=3]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ailot.data.episodes import Episodes
from ailot.errors import AilotInputError
from ailot.export import DEFAULT_ROWS_PER_FILE, _check_out_dir, export_dataset, read_metadata

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- from a sweep config


def select_setting(cfg, labeller: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one labeller setting of `cfg` named `labeller` whose values match `overrides` (for grid axes)."""
    from ailot import labellers

    known = labellers.get(labeller).settings
    if labeller not in cfg.labellers:
        raise AilotInputError(f"labeller {labeller!r}", f"is not in config {cfg.name!r}",
                              f"use one of its labellers ({', '.join(cfg.labellers)}) or add it under labellers:")
    overrides = overrides or {}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise AilotInputError(f"setting {unknown[0]!r}", f"is not a setting of labeller {labeller!r}",
                              f"use one of: {', '.join(known) or '(none)'}")
    candidates = [s for s in cfg.labeller_settings() if s["labeller"] == labeller]
    matches = [s for s in candidates if all(_same(s.get(k), v) for k, v in overrides.items())]
    if len(matches) != 1:
        grid = {k: v for k, v in cfg.labellers[labeller].items() if len(v) > 1}
        problem = "matches none of the config's settings" if not matches else f"matches {len(matches)} settings"
        raise AilotInputError(f"labeller {labeller!r} with {overrides or 'no --set'}", problem,
                              f"pick one grid value per axis with --set key=value (grid axes: {grid or 'none'})")
    return matches[0]


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def rewards_for_config(cfg, setting: dict[str, Any], *, dataset: str | None = None, seed: int | None = None,
                       pool=None, progress: bool = False) -> tuple[Episodes, np.ndarray, dict[str, Any]]:
    """(agent episodes, rewards, provenance) for one labeller setting of a sweep config, read from the sweep's
    rewards cache (cfg.cache_dir) when present, computed (and cached) with the pipeline otherwise."""
    from ailot import labellers, pipeline

    ds = _select_dataset(cfg, dataset)
    seed = cfg.seeds[0] if seed is None else seed
    if seed not in cfg.seeds:
        raise AilotInputError(f"seed {seed!r}", f"is not one of config {cfg.name!r}'s seeds {list(cfg.seeds)}",
                              "pass one of the config's seeds (the encoder and trained labellers are per seed)")
    pair = pipeline.load_pair(ds)
    cache = pipeline.rewards_cache(cfg)
    labeller = labellers.get(setting["labeller"])
    seeded = labeller.uses_encoder or labeller.seeded
    t0 = time.time()
    key = pipeline.rewards_for(ds, pair, seed, [setting], cfg, pool=pool, progress=progress)[
        pipeline.setting_id(setting)]
    seconds = time.time() - t0
    entry = cache.get(key)
    if entry is None:
        raise RuntimeError(f"rewards {key} were computed but cannot be read back from {cache.root}")
    meta = cache.meta(key) or {}
    cached = meta.get("created", 0) < t0  # the entry was there before this call
    provenance = {"config": cfg.name, "dataset": ds.label, "expert_id": ds.expert,
                  "expert_fingerprint": pair[1].fingerprint(), "seed": seed if seeded else None,
                  "encoder": meta.get("encoder"), "rewards_key": key, "from_cache": cached,
                  "seconds": None if cached else seconds}
    return pair[0], entry["rewards"], provenance


def _select_dataset(cfg, dataset: str | None):
    labels = [d.label for d in cfg.datasets]
    if dataset is None:
        if len(labels) > 1:
            raise AilotInputError("dataset", f"config {cfg.name!r} has {len(labels)} datasets",
                                  f"pick one with --dataset ({', '.join(labels)})")
        return cfg.datasets[0]
    if dataset not in labels:
        raise AilotInputError(f"dataset {dataset!r}", f"is not in config {cfg.name!r}",
                              f"use one of: {', '.join(labels)}")
    return cfg.dataset(dataset)


def export_from_config(
    config,
    labeller: str,
    out_dir: str | os.PathLike,
    *,
    overrides: dict[str, Any] | None = None,
    dataset: str | None = None,
    seed: int | None = None,
    storage: str | None = None,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    overwrite: bool = False,
    pool=None,
    progress: bool = False,
) -> Path:
    """Rewards of one labeller setting of a sweep config (a path or SweepConfig), cached or computed, exported."""
    import dataclasses

    from ailot import storage as storage_paths
    from ailot.config import SweepConfig, load_sweep_config
    from ailot.labellers import reward_setting

    cfg = config if isinstance(config, SweepConfig) else load_sweep_config(config)
    if storage is not None:
        if not str(storage).strip():
            raise AilotInputError("--storage", "is empty", "give the sweep's storage directory or URI, or leave the "
                                  f"flag out to use the config's ({cfg.storage!r})")
        storage_paths.check_scheme(storage, "--storage")
        cfg = dataclasses.replace(cfg, storage=storage)
    setting = select_setting(cfg, labeller, overrides)
    _check_out_dir(Path(out_dir), overwrite)  # before any relabelling
    agent, rewards, provenance = rewards_for_config(cfg, setting, dataset=dataset, seed=seed, pool=pool,
                                                    progress=progress)
    return export_dataset(agent, rewards, out_dir, labeller_settings=setting, reward_setting=reward_setting(setting),
                          dataset_fingerprint=agent.fingerprint(), rows_per_file=rows_per_file,
                          overwrite=overwrite, extra_metadata=provenance)


# ---------------------------------------------------------------- command line


def _parse_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ailot export", description="Export a relabelled dataset as Parquet "
                                "(RLlib offline columns) for Ray Data, RLlib, d3rlpy, CORL, ...")
    p.add_argument("--config", required=True, help="sweep YAML, e.g. tune/configs/smoke.yaml")
    p.add_argument("--labeller", required=True, help="one of the config's labellers: ailot, otr, true, zero")
    p.add_argument("--out", required=True, help="output directory (must not exist unless --overwrite)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="pick a value of a labeller grid axis, e.g. --set k=3 (repeatable)")
    p.add_argument("--dataset", default=None, help="dataset name in the config (needed when it has several)")
    p.add_argument("--seed", type=int, default=None, help="seed of the intent encoder (default: the first)")
    p.add_argument("--storage", default=None, help="override the config's storage (where its cache is)")
    p.add_argument("--rows-per-file", type=int, default=DEFAULT_ROWS_PER_FILE, help="about this many rows a file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise AilotInputError(f"--set {item!r}", "is not KEY=VALUE", "write e.g. --set k=3")
            overrides[key.strip()] = _parse_value(value)
        t0 = time.time()
        out = export_from_config(args.config, args.labeller, args.out, overrides=overrides, dataset=args.dataset,
                                 seed=args.seed, storage=args.storage, rows_per_file=args.rows_per_file,
                                 overwrite=args.overwrite, progress=not args.quiet)
    except AilotInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = read_metadata(out)
    print(f"exported {meta['num_transitions']} transitions ({meta['num_episodes']} episodes, {meta['num_files']} "
          f"files, labeller {meta['labeller_settings']}) to {out} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
