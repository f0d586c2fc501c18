"""`explain` at a git revision against the working tree, side by side in one process: time and the reports.

Separate runs of `bench/explain_overhead.py` on this shared machine drift by up to 15 %, more than many changes
are worth; here both versions run interleaved, on the same questions and weights. The revision's package is
extracted (`git archive`) into a temporary folder as `sagenano_rev` and imported beside `sagenano`. Both load the
model that ships in the working tree (the revision's code, today's weights).

Prints each variant's time over plain generation for both versions, and how far their reports agree at thresholds
0.3 and 0.05 (timings aside, floats rounded to 3 decimals as the claims state them): apart from the claims, claim
by claim, and the dependency claims' verdicts.

Run:  .venv/bin/python bench/explain_ab.py --rev e9b3541 [--questions 4] [--repeats 3] [--reports 6]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from common import interleaved_times, print_table
from explain_overhead import MAX_NEW_TOKENS, questions, runner

VARIANTS = {"explain": {"rollouts": False}, "+rollouts": {}, "+rollouts@t": {"threshold": 0.05}}


def import_revision(rev: str, folder: Path):
    """The package at `rev`, imported as `sagenano_rev` (its modules import each other relatively)."""
    root = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
    archive = folder / "rev.tar"
    subprocess.run(["git", "archive", "-o", str(archive), rev, "src/sagenano"], cwd=root.stdout.strip(), check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    (folder / "src" / "sagenano").rename(folder / "sagenano_rev")
    sys.path.insert(0, str(folder))
    return importlib.import_module("sagenano_rev")


def bind(package: str) -> None:
    """Makes transformers build `package`'s SAGE classes: both versions register the same config name."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model = importlib.import_module(f"{package}.model")
    AutoConfig.register("sage_nano", model.SageConfig, exist_ok=True)
    AutoModelForCausalLM.register(model.SageConfig, model.SageForCausalLM, exist_ok=True)


def comparable(report) -> object:
    """The report without its timings, floats rounded as the claims state them."""

    def rounded(value):
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items() if k != "timings"}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return round(value, 3) if isinstance(value, float) else value

    return rounded(json.loads(report.to_json()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", required=True, help="git revision to compare the working tree with")
    parser.add_argument("--questions", type=int, default=4, help="held-out questions timed (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, interleaved (default 3; 0: reports only)")
    parser.add_argument("--reports", type=int, default=6, help="held-out questions whose reports are compared")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        revision = import_revision(args.rev, Path(folder))
        import sagenano

        versions = {}
        for name, package in ((args.rev, revision), ("working tree", sagenano)):
            bind(package.__name__)
            versions[name] = package.load_model()
            assert type(versions[name].model).__module__.startswith(package.__name__ + ".")
        explains = {args.rev: revision.explain, "working tree": sagenano.explain}
        if args.repeats > 0:
            timed(args, versions, explains)
        compare_reports(args, versions, explains)


def timed(args, versions: dict, explains: dict) -> None:
    loaded = versions["working tree"]
    totals: dict[str, float] = {}
    for question in questions(args.questions):
        fns = {"plain": runner("plain", loaded.model, loaded.tokenizer, question, low_threshold=0.05)}
        for name, version in versions.items():
            for variant, options in VARIANTS.items():
                fns[f"{variant} ({name})"] = lambda e=explains[name], v=version, o=options, q=question: e(
                    v.model, v.tokenizer, q, alternatives=5, max_new_tokens=MAX_NEW_TOKENS, **o
                )
        for key, seconds in interleaved_times(fns, args.repeats, "cpu").items():
            totals[key] = totals.get(key, 0.0) + statistics.median(seconds)
    rows = [[variant, *(f"{totals[f'{variant} ({name})'] / totals['plain']:.2f}" for name in versions),
             f"{totals[f'{variant} (working tree)'] / totals[f'{variant} ({args.rev})']:.2f}"]
            for variant in VARIANTS]  # fmt: skip
    print(f"plain generation: {totals['plain']:.3f} s over {args.questions} questions, {args.repeats} repeats")
    print_table(["variant", *(f"{name} / plain" for name in versions), "working tree / revision"], rows)


def compare_reports(args, versions: dict, explains: dict) -> None:
    """Counts, over the questions and both thresholds, reports that agree apart from their claims; claims (status
    and evidence) that agree; and dependency verdicts that agree (their random controls are drawn anew when the
    drawing changes, so their evidence may differ while the verdict holds)."""
    tally = {"reports apart from claims": [0, 0], "claims": [0, 0], "dependency verdicts": [0, 0]}
    for question in ["If 3x + 2 = 14, what is x?", *questions(args.reports)]:
        for threshold in (0.3, 0.05):
            reports = []
            for name, v in versions.items():
                report = explains[name](v.model, v.tokenizer, question, threshold=threshold, calibration=v.calibration)
                reports.append(comparable(report))
            first, second = ({k: v for k, v in r.items() if k not in ("claims", "validation")} for r in reports)
            count(tally["reports apart from claims"], [first == second])
            old, new = ({c["id"]: c for c in r["claims"]} for r in reports)
            ids = sorted(old.keys() | new.keys())
            count(tally["claims"], [old.get(i) == new.get(i) for i in ids])
            verdicts = [(old.get(i) or {}).get("status") == (new.get(i) or {}).get("status") for i in ids
                        if (old.get(i) or new.get(i))["kind"] == "dependency"]  # fmt: skip
            count(tally["dependency verdicts"], verdicts)
    print_table(["compared", "agree", "of"], [[name, agree, total] for name, (agree, total) in tally.items()])


def count(tally: list[int], agreements: list[bool]) -> None:
    tally[0] += sum(agreements)
    tally[1] += len(agreements)


if __name__ == "__main__":
    main()
