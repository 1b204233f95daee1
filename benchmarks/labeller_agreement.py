"""How well each labeller's rewards agree with the dataset's true reward, and what each costs per 10^5 transitions.

    python benchmarks/labeller_agreement.py --config tune/configs/benchmark-pointmaze-umaze.yaml --storage results
    python benchmarks/labeller_agreement.py --config tune/configs/benchmark-locomotion.yaml --storage results \
        --datasets hopper-medium --seeds 0     # a part of a config (computes and caches what is missing)

For every labeller setting of the config (every dataset, every seed asked for) it takes the sweep's rewards
through the one chain the sweep uses (`ailot.pipeline.rewards_for`: read from the sweep's cache, computed and cached
where missing) and reports
- episode Spearman: rank correlation between each episode's summed labeller reward and its true return;
- episode-mean Spearman: the same per step (sums divided by episode length), which length cannot decide;
- step Spearman: the same per transition;
- seconds per 10^5 transitions: the time the rewards took when they were computed (cache metadata: a labeller's own
  time; for OT labellers solved together on the relabel pool, the batch's time shared out equally), so the figure
  is the machine's that computed them, under whatever load it had.
No Ray needed (missing OT rewards are solved in this process). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def agreement(rewards: np.ndarray, agent) -> tuple[float, float, float]:
    """(episode Spearman, episode-mean Spearman, step Spearman) of labeller rewards [M] against the agent's true
    rewards. The episode-mean one ranks reward per step, so episode length (which alone ranks hopper's returns
    almost perfectly: falls end episodes) does not decide it."""
    from scipy.stats import spearmanr

    true = np.concatenate(agent.rewards)
    if np.ptp(rewards) == 0 or np.ptp(true) == 0:
        return float("nan"), float("nan"), float("nan")
    ends = np.cumsum(agent.lengths)[:-1]
    per_episode = np.array([r.sum() for r in np.split(rewards, ends)])
    lengths = np.asarray(agent.lengths, np.float64)
    return (float(spearmanr(per_episode, agent.returns)[0]),
            float(spearmanr(per_episode / lengths, np.asarray(agent.returns) / lengths)[0]),
            float(spearmanr(rewards, true)[0]))


def main(argv: list[str] | None = None) -> int:
    from ailot import labellers, pipeline
    from ailot.config import load_sweep_config
    from ailot.sweep_cli import part_of

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--storage", default=None, help="the sweep's storage (where its cache is)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the config's)")
    p.add_argument("--datasets", default=None, help="comma-separated dataset names (default: the config's)")
    args = p.parse_args(argv)
    cfg = part_of(load_sweep_config(args.config), args.datasets, args.seeds)  # as `ailot sweep --seeds/--datasets`
    if args.storage:
        cfg = dataclasses.replace(cfg, storage=args.storage)
    seeds = list(cfg.seeds)
    settings = [s for s in cfg.labeller_settings()]
    names = {pipeline.setting_id(s): " ".join([s["labeller"], *(f"{k}={s[k]}" for k in sorted(s) if k != "labeller"
                                              and len(cfg.labellers[s["labeller"]].get(k, [])) > 1)])
             for s in settings}
    cache = pipeline.rewards_cache(cfg)
    print("| dataset | labeller | expert actions | episode Spearman (per seed) | episode-mean Spearman | step Spearman "
          "| s per 10^5 transitions |")
    print("|---|---|---|---|---|---|---|")
    for ds in cfg.datasets:
        pair = pipeline.load_pair(ds, progress=False)
        agent = pair[0]
        rows: dict[str, list] = {}
        keys_by_seed = {seed: pipeline.rewards_for(ds, pair, seed, settings, cfg, progress=False) for seed in seeds}
        metas = {k: cache.meta(k) or {} for keys in keys_by_seed.values() for k in keys.values()}
        batches: dict[float, set] = {}  # OT settings solved together on the pool share one batch time
        for k, meta in metas.items():
            if meta.get("seconds_for_batch") is not None:
                batches.setdefault(meta["seconds_for_batch"], set()).add(k)
        for keys in keys_by_seed.values():
            for s in settings:
                key = keys[pipeline.setting_id(s)]
                meta = metas[key]
                seconds = meta.get("seconds")
                if seconds is None and meta.get("seconds_for_batch") is not None:
                    seconds = meta["seconds_for_batch"] / len(batches[meta["seconds_for_batch"]])
                ep, ep_mean, step = agreement(cache.get(key)["rewards"], agent)
                rows.setdefault(pipeline.setting_id(s), []).append((ep, ep_mean, step, seconds, key))
        for s in settings:
            got = rows[pipeline.setting_id(s)]
            eps = ", ".join("n/a" if np.isnan(e) else f"{e:.2f}" for e, _, _, _, _ in got)
            means = [m for _, m, _, _, _ in got if not np.isnan(m)]
            steps = [st for _, _, st, _, _ in got if not np.isnan(st)]
            # a setting whose rewards do not depend on the seed is one cache entry, timed once
            secs = [sec for sec, _ in {key: (sec, key) for _, _, _, sec, key in got}.values() if sec is not None]
            mean = f"{np.mean(means):.2f}" if means else "n/a"
            step = f"{np.mean(steps):.2f}" if steps else "n/a"
            per_1e5 = f"{np.mean(secs) * 1e5 / agent.num_transitions:.1f}" if secs else "n/a"
            reads = "yes" if labellers.reads_expert_actions(s) else "no"
            print(f"| {ds.label} | {names[pipeline.setting_id(s)]} | {reads} | {eps} | {mean} | {step} | {per_1e5} |")
        from scipy.stats import spearmanr

        lengths = np.asarray(agent.lengths)
        print(f"\n{ds.label}: episode length alone ranks the returns with Spearman "
              f"{spearmanr(lengths, agent.returns)[0]:.2f} and the true reward per step with "
              f"{spearmanr(lengths, np.asarray(agent.returns) / lengths)[0]:.2f} ({len(lengths)} episodes)")
        encoder_seconds = [pipeline.encoder_seconds(agent, cfg.intents, seed, cfg.cache_dir) for seed in seeds]
        known = [t for t in encoder_seconds if t is not None]
        if known:
            print(f"{ds.label}: ICVF pretraining took {np.mean(known):.0f} s per seed (AILOT's rewards need it; "
                  "not in its row)")
    return 0


if __name__ == "__main__":
    from ailot.errors import AilotInputError

    try:
        raise SystemExit(main())
    except AilotInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
