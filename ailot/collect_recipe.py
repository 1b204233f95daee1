"""What rebuilds `ailot collect`'s datasets without its hours of SAC: a recipe.

A recipe is a small folder cut from a finished collection's work dir: its records (state.json with the training
evaluations, selection.json, references.json), the two picked actor snapshots, and the fingerprints of the five
datasets it wrote (recipe.json). The random, medium, expert and medium-expert datasets are rollouts of those actors
(or of uniform actions) with seeds derived from the settings, so they need no training; medium-replay is SAC's
replay buffer up to the medium snapshot, so SAC is trained again up to that step only (Hopper-v5: 100k of the 1M
steps) and its snapshot there is checked against the recipe's. A rebuild then compares every dataset's
fingerprint with the recipe's: equal means the same bytes as the data the committed results were measured on.

    ailot collect --env Hopper-v5 --seed 0 --save-recipe results/collection/recipes/hopper-v5-s0   # after a run
    ailot collect --env Hopper-v5 --seed 0 --from-recipe results/collection/recipes/hopper-v5-s0   # elsewhere

`ailot collect-report` reads a recipe folder as it reads a work dir.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from ailot.errors import AilotInputError

RECIPE_FILE = "recipe.json"
RECORDS = ("selection.json", "references.json")
# run-state entries that point at checkpoint files or random streams a recipe does not carry
_CHECKPOINT_KEYS = ("sac_file", "buffer_file", "np_rng", "act_key")


def fingerprints(ids: dict[str, str]) -> dict[str, str]:
    """{kind: the dataset's fingerprint} of the datasets `ids` ({kind: Minari id}) as written."""
    from ailot.data.loading import load_dataset

    return {kind: load_dataset(i).fingerprint() for kind, i in ids.items()}


def save_recipe(work: Path, out: Path, settings, medium: dict, expert: dict, ids: dict[str, str],
                log: Callable[[str], None] = print) -> Path:
    """Write the recipe of the finished collection in `work` (whose datasets `ids` are written) to `out`."""
    state = json.loads((work / "state.json").read_text())
    if not state.get("training_done"):
        raise AilotInputError(f"work dir {str(work)!r}", "holds an unfinished training run",
                              "finish the collection (rerun it without --stop-after) before saving its recipe")
    out.mkdir(parents=True, exist_ok=True)
    (out / "snapshots").mkdir(exist_ok=True)
    kept = {x["file"] for x in (medium, expert)}
    for stale in (out / "snapshots").glob("*.msgpack"):  # an earlier pick's actors
        if f"snapshots/{stale.name}" not in kept:
            stale.unlink()
    for file in sorted(kept):
        shutil.copyfile(work / file, out / file)
    for name in RECORDS:
        shutil.copyfile(work / name, out / name)
    (out / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k not in _CHECKPOINT_KEYS},
                                               indent=1, sort_keys=True))
    recipe = {"env_id": settings.env_id, "seed": settings.seed, "train_settings": settings.train_dict(),
              "dataset_settings": {kind: settings.dataset_dict(kind) for kind in ids},
              "medium": medium, "expert": expert, "ids": ids, "fingerprints": fingerprints(ids)}
    (out / RECIPE_FILE).write_text(json.dumps(recipe, indent=1, sort_keys=True))
    log(f"ailot.collect: recipe of {settings.env_id} seed {settings.seed} saved to {out} (actors at steps "
        f"{medium['step']} and {expert['step']}, {len(ids)} dataset fingerprints)")
    return out


def read_recipe(recipe_dir: Path, settings) -> dict:
    """The recipe in `recipe_dir`, refused unless it was made with `settings` (a rebuild with other settings
    would need snapshots and evaluations the recipe does not hold)."""
    path = recipe_dir / RECIPE_FILE
    what = f"recipe {str(recipe_dir)!r}"
    if not path.is_file():
        raise AilotInputError(what, f"has no {RECIPE_FILE}", "give a folder written by `ailot collect --save-recipe`")
    recipe = json.loads(path.read_text())
    if recipe["train_settings"] != settings.train_dict():
        diff = {k: v for k, v in recipe["train_settings"].items() if settings.train_dict().get(k) != v}
        raise AilotInputError(what, f"was trained with other settings: {diff}",
                              "pass the flags it was made with (its recipe.json's train_settings)")
    for kind, theirs in recipe["dataset_settings"].items():
        if theirs != settings.dataset_dict(kind):
            diff = {k: v for k, v in theirs.items() if settings.dataset_dict(kind).get(k) != v}
            raise AilotInputError(what, f"made dataset {kind!r} with other settings: {diff}",
                                  "pass the flags it was made with (its recipe.json's dataset_settings)")
    for x in (recipe["medium"], recipe["expert"]):
        if not (recipe_dir / x["file"]).is_file():
            raise AilotInputError(what, f"lacks the actor snapshot {x['file']}", "copy the whole recipe folder")
    return recipe


def seed_work_dir(recipe_dir: Path, work: Path, settings) -> dict:
    """Copy the recipe's records and actors into an empty work dir, so `collect` finds training, selection and
    references done; returns the recipe. A work dir that already holds a run is left as it is."""
    recipe = read_recipe(recipe_dir, settings)
    if (work / "state.json").exists():
        return recipe
    (work / "snapshots").mkdir(parents=True, exist_ok=True)
    for x in (recipe["medium"], recipe["expert"]):
        shutil.copyfile(recipe_dir / x["file"], work / x["file"])
    for name in RECORDS:
        shutil.copyfile(recipe_dir / name, work / name)
    state = json.loads((recipe_dir / "state.json").read_text())
    state["recipe"] = str(recipe_dir)
    (work / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))  # last: the commit point
    return recipe


def check_fingerprints(recipe: dict, ids: dict[str, str], log: Callable[[str], None] = print) -> dict[str, bool]:
    """{kind: whether the dataset written equals the recipe's}; a mismatch is logged as a warning."""
    made = fingerprints(ids)
    same = {kind: made[kind] == recipe["fingerprints"].get(kind) for kind in ids}
    for kind, ok in same.items():
        log(f"ailot.collect: {ids[kind]} {'is' if ok else 'WARNING: is not'} the recipe's (fingerprint "
            f"{made[kind][:16]}, recipe {str(recipe['fingerprints'].get(kind))[:16]})")
    return same
