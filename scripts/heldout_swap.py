"""Which unseen words break a model on held-out items: held-out logic items re-scored with their names, their
attributes, or both swapped for training ones (everything else unchanged; answers do not depend on the words).

Usage: .venv/bin/python scripts/heldout_swap.py [--model PATH ...] [--n 100] [--seed 4000001]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModelForCausalLM

import sagenano.model  # noqa: F401  (registers sage_nano)
from sagenano.data import generate_items
from sagenano.data.schema import ReasoningItem
from sagenano.data.vocab import HELDOUT_ATTRIBUTES, HELDOUT_PEOPLE, TRAIN_ATTRIBUTES, TRAIN_PEOPLE
from sagenano.eval.task_accuracy import answer_items
from sagenano.loading import load_model
from sagenano.tokenizer import load_tokenizer


def name_table() -> dict[str, str]:
    """Each held-out name -> a training name of the same pronouns (so 'she'/'he' in a question still fit)."""
    table = {}
    for pronoun in ("she", "he"):
        train = [p.name for p in TRAIN_PEOPLE if p.subject == pronoun]
        heldout = [p.name for p in HELDOUT_PEOPLE if p.subject == pronoun]
        table.update({name: train[i % len(train)] for i, name in enumerate(heldout)})
    return table


def swap_words(text: str, table: dict[str, str]) -> str:
    """Whole-word replacement; a capitalised word (a sentence's first) stays capitalised."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, table)) + r")\b", re.IGNORECASE)

    def replace(match: re.Match) -> str:
        word = match.group(0)
        new = table.get(word) or table[word.lower()]
        return new[0].upper() + new[1:] if word[0].isupper() else new

    return pattern.sub(replace, text)


def variants(items: list[ReasoningItem]) -> dict[str, list[ReasoningItem]]:
    names, attributes = name_table(), dict(zip(HELDOUT_ATTRIBUTES, TRAIN_ATTRIBUTES, strict=False))

    def swapped(*tables: dict[str, str]) -> list[ReasoningItem]:
        out = []
        for item in items:
            question = item.question
            for table in tables:
                question = swap_words(question, table)
            out.append(dataclasses.replace(item, question=question))
        return out

    return {"held-out": items, "training names": swapped(names), "training attributes": swapped(attributes),
            "both": swapped(names, attributes)}  # fmt: skip


def load(path: str | None):
    """The shipped model, or a run's model or checkpoint folder (which holds no tokenizer: the shipped one's)."""
    if path is None:
        loaded = load_model(None)
        return loaded.model, loaded.tokenizer
    return AutoModelForCausalLM.from_pretrained(path).eval(), load_tokenizer()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=None, help="model or checkpoint folder (repeatable)")
    parser.add_argument("--n", type=int, default=100, help="held-out logic items")
    parser.add_argument("--seed", type=int, default=4_000_001, help="item seed (default: the development seed)")
    args = parser.parse_args()
    sets = variants(generate_items("logic", args.n, args.seed, "heldout"))
    print("| model | words | exact match | no answer |\n|---|---|---|---|")
    for path in args.model or [None]:
        model, tokenizer = load(path)
        for words, items in sets.items():
            outcomes = answer_items(model, tokenizer, items)
            accuracy = sum(o.correct for o in outcomes) / len(outcomes)
            unanswered = sum(o.predicted is None for o in outcomes) / len(outcomes)
            print(f"| {path or 'shipped'} | {words} | {accuracy:.0%} | {unanswered:.0%} |", flush=True)


if __name__ == "__main__":
    main()
