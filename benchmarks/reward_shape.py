"""The shape of AILOT's rewards under two sweeps' settings (issue 28: squashing, expert set, ICVF inputs), same data.

    python benchmarks/reward_shape.py                      # benchmark-hopper vs fidelity-hopper-squash, the hopper data
    python benchmarks/reward_shape.py --default tune/configs/benchmark-pointmaze-umaze.yaml \\
        --other tune/configs/fidelity-umaze-squash.yaml --seeds 0,1,2

For every dataset both configs name and every seed: each config's AILOT rewards, looked up the way the sweep looks
them up (encoder and expert set included in the key; read from the cache, computed there when missing, as
labeller_agreement.py does), and per config the mean reward over alpha, the share of transitions below 1 % of alpha
(how sparse the reward is), the Spearman correlation with the true reward per transition and per episode mean;
and the two settings' correlation with each other. Run after the sweeps, whose rewards it then only reads.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from scipy.stats import spearmanr

LABELLER = "ailot"


def shape(rewards: np.ndarray, alpha: float, true: np.ndarray, episode: np.ndarray, lengths: np.ndarray) -> str:
    per_episode = np.bincount(episode, rewards) / lengths
    true_per_episode = np.bincount(episode, true) / lengths
    return (f"{rewards.mean() / alpha:.2f} | {np.mean(rewards < 0.01 * alpha):.0%} | "
            f"{spearmanr(rewards, true)[0]:.2f} | {spearmanr(per_episode, true_per_episode)[0]:.2f}")


def main(argv: list[str] | None = None) -> int:
    from ailot import pipeline
    from ailot.config import load_sweep_config
    from ailot.sweep_cli import part_of

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--default", default="tune/configs/benchmark-hopper.yaml", help="the default option's sweep")
    p.add_argument("--other", default="tune/configs/fidelity-hopper-squash.yaml", help="the other option's sweep")
    p.add_argument("--storage", default="results", help="the sweeps' storage (where their caches are)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the configs')")
    args = p.parse_args(argv)
    configs = {}
    for role in ("default", "other"):
        cfg = dataclasses.replace(load_sweep_config(getattr(args, role)), storage=args.storage)
        configs[role] = part_of(cfg, None, args.seeds, labellers=LABELLER)
    shared = [d.label for d in configs["other"].datasets if d.label in {e.label for e in configs["default"].datasets}]
    print(f"| dataset | seed | sweep | mean / alpha | below 1 % of alpha | step Spearman | episode-mean Spearman | "
          f"{configs['default'].name} vs {configs['other'].name} |")
    print("|---|---|---|---|---|---|---|---|")
    for label in shared:
        pairs = {role: pipeline.load_pair(cfg.dataset(label), progress=False) for role, cfg in configs.items()}
        agent = pairs["default"][0]
        true = np.concatenate([np.asarray(r, np.float64) for r in agent.rewards])
        lengths = np.array([len(r) for r in agent.rewards])
        episode = np.repeat(np.arange(len(lengths)), lengths)
        for seed in configs["other"].seeds:
            got = {}
            for role, cfg in configs.items():
                setting = cfg.labeller_settings()[0]
                key = pipeline.rewards_for(cfg.dataset(label), pairs[role], seed, [setting], cfg,
                                           progress=False)[pipeline.setting_id(setting)]
                got[role] = (pipeline.rewards_cache(cfg).get(key)["rewards"], float(setting.get("alpha", 5.0)))
            between = spearmanr(got["default"][0], got["other"][0])[0]
            for role, (rewards, alpha) in got.items():
                print(f"| {label} | {seed} | {configs[role].name} | {shape(rewards, alpha, true, episode, lengths)} | "
                      f"{between:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
