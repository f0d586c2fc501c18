"""Train and evaluate the ablation models of the paper's Tables 5 and 7: the shipped recipe with one part changed each.

Usage: .venv/bin/python scripts/train_ablations.py [--recipe recipes/pico.yaml] [--out runs/ablations]
                                                   [--only full,no_meta_head] [--n 300] [--dry-run]

Every variant is the recipe with one change (below); it trains with `sage-nano train` into OUT/NAME (rerunning
continues an interrupted variant from its last checkpoint) and is then evaluated on the held-out synthetic
split into OUT/NAME/eval.json. `sage-nano report --ablations OUT` reads those files. A variant whose recipe
equals another's is trained once. On this CPU one pico variant takes about as long as the shipped model
(~1.5 h); `--dry-run` only writes the recipes.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from sagenano.config import SageConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# name -> (what is switched off, how the recipe changes)
VARIANTS: dict[str, tuple[str, dict]] = {
    "full": ("nothing: the recipe as it is", {}),
    "no_inverse_analysis": ("the inverse analysis stack (stage 3 trains without it)",
                            {"model": {"use_inverse_stack": False}}),
    "no_attention_tracking": ("the inverse stack's input of the forward attention summary",
                              {"model": {"use_attention_tracking": False}}),
    "no_meta_head": ("the meta-cognitive head", {"model": {"use_meta_cognitive_head": False}}),
    "no_explanation": ("explanation generation (λ1 = 0 in stage 3)", {"inverse_stage": {"lambda_explanation": 0.0}}),
    "forward_only": ("stage 3 (inverse training)", {"drop_inverse_stage": True}),
    **{f"inverse_depth_{k}": (f"inverse depth {k} (layers of the inverse stack)", {"model": {"num_inverse_layers": k}})
       for k in (2, 4, 6, 8)},
    # Table 7: the forward stack's own parts
    "no_concept_heads": ("the concept heads", {"model": {"use_concept_heads": False}}),
    "no_reasoning_ffn": ("the reasoning FFN (a plain SwiGLU instead)", {"model": {"use_reasoning_ffn": False}}),
    "no_adaptive_ln": ("the step-adaptive LayerNorm", {"model": {"use_adaptive_layernorm": False}}),
    "merged_head_groups": ("the head groups (one group of all heads)", {"merge_head_groups": True}),
}  # fmt: skip


def variant_recipe(base: dict, change: dict) -> dict:
    """The base recipe (as loaded from YAML) with one variant's change applied."""
    recipe = copy.deepcopy(base)
    model = {**recipe.get("model", {}), **change.get("model", {})}
    preset = SageConfig.from_name(recipe.get("preset", "pico"))
    defaults = preset.to_dict()
    if change.get("merge_head_groups"):
        model["head_groups"] = {"all": preset.num_attention_heads}
    recipe["model"] = {key: value for key, value in model.items() if defaults.get(key) != value}  # a no-op is none
    stages = recipe["stages"]
    if change.get("drop_inverse_stage"):
        recipe["stages"] = [s for s in stages if s["name"] != "inverse"]
    for stage in recipe["stages"]:
        if stage["name"] == "inverse":
            stage.update(change.get("inverse_stage", {}))
    return recipe


def write_recipes(base_path: Path, out: Path, names: list[str]) -> dict[str, Path]:
    """OUT/NAME/recipe.yaml for each variant; variants equal to an earlier one point at its folder."""
    base = yaml.safe_load(base_path.read_text())
    written: dict[str, Path] = {}
    seen: dict[str, str] = {}
    for name in names:
        recipe = variant_recipe(base, VARIANTS[name][1])
        key = json.dumps(recipe, sort_keys=True)
        if key in seen:
            print(f"{name}: the same recipe as {seen[key]}; trained once")
            written[name] = written[seen[key]]
            continue
        seen[key] = name
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        written[name] = folder / "recipe.yaml"
    return written


def train_and_evaluate(recipe: Path, n: int) -> None:
    folder = recipe.parent
    if not (folder / "model" / "model.safetensors").is_file():
        resume = ["--resume"] if (folder / "checkpoints").is_dir() else []
        command = [sys.executable, "-m", "sagenano.cli", "train", "--recipe", str(recipe), "--out", str(folder)]
        subprocess.run([*command, *resume], check=True)
    if not (folder / "eval.json").is_file():
        from sagenano.eval.task_accuracy import evaluate_synthetic
        from sagenano.loading import load_model

        loaded = load_model(str(folder / "model"))
        result = evaluate_synthetic(loaded.model, loaded.tokenizer, n_per_task=n)
        (folder / "eval.json").write_text(json.dumps(result, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=Path("recipes/pico.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants")
    parser.add_argument("--n", type=int, default=300, help="held-out items per task")
    parser.add_argument("--dry-run", action="store_true", help="write the recipes only")
    args = parser.parse_args()
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    recipes = write_recipes(args.recipe, args.out, names)
    for name, recipe in recipes.items():
        print(f"{name}: {VARIANTS[name][0]} -> {recipe}")
    if not args.dry_run:
        for recipe in dict.fromkeys(recipes.values()):
            train_and_evaluate(recipe, args.n)


if __name__ == "__main__":
    main()
