"""Does a SAGE model's own explanation describe its chain? Its checkable sentences, checked by the engine.

For each model (--model, repeatable; default: the shipped one) and the same held-out items (evaluation seed),
`sagenano.explain` with the default options (the model writes its own explanation after `<|explanation|>`, every
sentence of the stage-3 format becomes a claim and is checked like the engine's; `reliance=False`, which the own
explanation does not use). Per task and pooled:
- written: the share of reports with an own explanation, and its checkable sentences per explanation;
- held: of the checkable sentences, the share that held (by kind: decision — sampling after the named alternative
  changes the answer; dependency — masking the named span beats random spans; confidence — its least confident step
  and probability read again);
- named decision points: of the decision points the engine showed (and verified), the share the model named
  (same position), and of the decisions the model named, the share the engine showed.

Run:  .venv/bin/python bench/own_explanation.py [--model PATH ...] [--n 50]
Goal (issue 26, point 6): the explanation describes *this* chain: its sentences hold (reported, no fixed goal).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from common import print_table, record
from sagenano.data import generate_items
from sagenano.eval.task_accuracy import EVAL_SEED, TASKS
from sagenano.inverse import explain
from sagenano.loading import load_model

KINDS = ("decision", "dependency", "confidence")


def measure(name: str | None, n: int) -> dict[str, dict]:
    """Counts per task for one model."""
    loaded = load_model(name)
    counts: dict[str, dict] = {}
    for task in TASKS:
        c = counts[task] = defaultdict(int)
        for item in tqdm(generate_items(task, n, EVAL_SEED, "heldout"), desc=f"{name or 'shipped'} {task}"):
            report = explain(loaded.model, loaded.tokenizer, item.question, calibration=loaded.calibration,
                             reliance=False)  # fmt: skip
            c["items"] += 1
            if report.own_explanation is None:
                continue
            c["written"] += 1
            claims = [*report.claims, *(report.validation.removed_claims if report.validation else [])]
            own = [x for x in claims if x.author == "model"]
            for claim in own:
                c[f"{claim.kind}_total"] += 1
                c[f"{claim.kind}_held"] += claim.status == "verified"
            shown = {d.position for d in report.decision_points}
            named = {x.stated["position"] for x in own if x.kind == "decision" and "position" in x.stated}
            c["engine_points"] += len(shown)
            c["engine_points_named"] += len(shown & named)
            c["named_points"] += len(named)
            c["named_points_shown"] += len(named & shown)
    return counts


def pooled(counts: dict[str, dict]) -> dict[str, int]:
    total: dict[str, int] = defaultdict(int)
    for task_counts in counts.values():
        for key, value in task_counts.items():
            total[key] += value
    return total


def share(part: int, whole: int) -> str:
    return f"{part / whole:.1%} ({part}/{whole})" if whole else "–"


def rows_of(model: str, counts: dict[str, dict]) -> list[list[str]]:
    rows = []
    for task, c in [*counts.items(), ("all", pooled(counts))]:
        sentences = sum(c[f"{k}_total"] for k in KINDS)
        held = sum(c[f"{k}_held"] for k in KINDS)
        rows.append([
            model, task, share(c["written"], c["items"]),
            f"{sentences / c['written']:.2f}" if c["written"] else "–", share(held, sentences),
            *(share(c[f"{k}_held"], c[f"{k}_total"]) for k in KINDS),
            share(c["engine_points_named"], c["engine_points"]), share(c["named_points_shown"], c["named_points"]),
        ])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="a model folder (repeatable; default: the shipped model)")
    parser.add_argument("--n", type=int, default=50, help="held-out items per task")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here")
    args = parser.parse_args()
    models = args.model or [None]
    results = {name or "shipped": measure(name, args.n) for name in models}
    headers = ["model", "task", "written", "sentences", "held", *(f"{k} held" for k in KINDS),
               "engine points named", "named points shown"]  # fmt: skip
    print(f"\nOwn explanations on {args.n} held-out items per task (seed {EVAL_SEED}), default explain options:\n")
    print_table(headers, [row for name, counts in results.items() for row in rows_of(name, counts)])
    for name, counts in results.items():
        total = pooled(counts)
        held = sum(total[f"{k}_held"] for k in KINDS)
        sentences = sum(total[f"{k}_total"] for k in KINDS)
        record("own_explanation", f"held@{Path(name).name}", round(held / sentences, 3) if sentences else "–")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
