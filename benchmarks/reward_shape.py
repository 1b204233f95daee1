"""The shape of AILOT's rewards under each squashing form (issue 28, choice 2), read from a sweep's reward cache.

    python benchmarks/reward_shape.py                                   # benchmark-hopper's cache (locomotion)
    python benchmarks/reward_shape.py --cache results/benchmark-pointmaze-umaze/cache

For every dataset and encoder with AILOT rewards cached under both forms ("paper", the default, and "authors"), per
form: the mean reward over alpha, the share of transitions below 1 % of alpha (how sparse the reward is), the
Spearman correlation with the true reward per transition and per episode mean; and the two forms' correlation with
each other. Run after the sweeps whose rewards it reads (benchmark-hopper and fidelity-hopper-squash).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ailot.data.loading import load_dataset

FORMS = ("paper", "authors")


def cached_ailot(cache: Path) -> dict[str, dict[str, dict[str, tuple[np.ndarray, float]]]]:
    """dataset id -> encoder -> form -> (rewards, alpha), for AILOT's max-over-experts rewards."""
    found: dict = {}
    for meta_path in sorted((cache / "rewards").glob("*.json")):
        meta = json.loads(meta_path.read_text())["meta"]
        setting = meta["setting"]
        if setting["labeller"] != "ailot" or setting.get("expert_mode", "max") != "max":
            continue
        rewards = np.load(meta_path.with_suffix(".npz"))["rewards"]
        form = setting.get("squash", "paper")
        found.setdefault(meta["dataset_id"], {}).setdefault(meta["encoder"], {})[form] = (rewards, setting["alpha"])
    return found


def shape(rewards: np.ndarray, alpha: float, true: np.ndarray, episode: np.ndarray, lengths: np.ndarray) -> str:
    per_episode = np.bincount(episode, rewards) / lengths
    true_per_episode = np.bincount(episode, true) / lengths
    return (f"{rewards.mean() / alpha:.2f} | {np.mean(rewards < 0.01 * alpha):.0%} | "
            f"{spearmanr(rewards, true)[0]:.2f} | {spearmanr(per_episode, true_per_episode)[0]:.2f}")


def table(cache: Path) -> str:
    lines = ["| dataset | encoder | form | mean / alpha | below 1 % of alpha | step Spearman | episode-mean Spearman |"
             " paper vs authors |", "|---|---|---|---|---|---|---|---|"]
    for dataset_id, encoders in sorted(cached_ailot(cache).items()):
        pairs = {enc: forms for enc, forms in encoders.items() if set(FORMS) <= set(forms)}
        if not pairs:
            continue
        data = load_dataset(dataset_id)
        true = np.concatenate([np.asarray(r, np.float64) for r in data.rewards])
        lengths = np.array([len(r) for r in data.rewards])
        episode = np.repeat(np.arange(len(lengths)), lengths)
        for enc, forms in sorted(pairs.items()):
            between = spearmanr(forms["paper"][0], forms["authors"][0])[0]
            for form in FORMS:
                rewards, alpha = forms[form]
                if len(rewards) != len(true):
                    raise ValueError(f"{dataset_id}: {len(rewards)} cached rewards, {len(true)} transitions")
                lines.append(f"| {dataset_id} | {enc[:8]} | {form} | {shape(rewards, alpha, true, episode, lengths)}"
                             f" | {between:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path("results/benchmark-locomotion/cache"),
                   help="a sweep's cache directory (its rewards/ holds the cached reward arrays)")
    print(table(p.parse_args(argv).cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
