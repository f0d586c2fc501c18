"""The Markdown of `sage-nano report`: tables from the measured results, with each measure defined beside it."""

from __future__ import annotations

from pathlib import Path

QUALITY_DEFINITIONS = """\
- **accuracy**: share of the explanation's causal claims, as first stated, that held under intervention
  (`report.validation.score`; refinement, which removes refuted claims, cannot raise it);
- **completeness**: decision coverage = share of the measured decision points that keep a verified decision
  claim; dependency coverage = share of the gold dependencies of the model's steps that equal a gold step
  which a verified dependency claim names (only items with such steps count: n given);
- **clarity**: words, words per sentence and the share of words over 12 characters of the rendered text at each
  depth;
- **actionability**: mask the question span of the top verified dependency claim and generate again: the share
  of explanations whose answer then changes (n = explanations with an answer and such a claim)."""


def render(results: dict, figures: list[Path]) -> str:
    sections = [
        _setup(results["setup"], results.get("wall_seconds")),
        _accuracy(results["accuracy"]),
        _introspection(results["introspection"]),
        _quality(results["quality"]["summary"]),
        _overhead(results["quality"]["overhead"]),
        render_ablations(results["ablations"]),
        _errors(results["errors"]),
        _figures(figures),
    ]
    return "\n\n".join(sections) + "\n"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _setup(setup: dict, wall_seconds: float | None) -> str:
    s = setup["settings"]
    return f"""# SAGE-nano report: {setup["model"]}

Every number below was measured by the run that wrote this file ({setup["date"]}, {_num(wall_seconds, 0)} s on
{setup["machine"]}). Model: `{setup["model"]}` ({setup["model_type"]}, {setup["parameters"]:,} parameters;
answer-calibration temperature {setup["calibration_temperature"]}). Benchmarks: the first {s["limit"]} items of
each file in `shared/data/benchmarks` and {s["limit"]} held-out synthetic items per task (seed
{setup["eval_seed"]}); explanation quality and overhead on {s["quality_items"]} held-out items per synthetic
task (seed {setup["quality_seed"]}); introspection settings: `{s["introspection"]}`."""


def _accuracy(accuracy: dict) -> str:
    rows = [
        [
            r["task"],
            str(r["n"]),
            _pct(r["accuracy"]),
            _pct(r.get("chance")),
            str(r["no_answer"]),
            str(r["skipped"]),
            _num(r["ece"]),
        ]
        for r in accuracy["tasks"]
    ]
    calibration = accuracy.get("calibration", {})
    lines = [f"- answer ECE (10 bins) on the synthetic tasks: {_num(calibration.get('answer_ece'))}"]
    if "calibrated_answer_ece" in calibration:
        lines.append(f"- after temperature scaling: {_num(calibration['calibrated_answer_ece'])}")
    return (
        "## Accuracy per benchmark (Table 2 shape)\n\nGreedy chain of thought, zero-shot, exact match after answer "
        "extraction; unanswered and skipped items (prompt longer than the context) count as wrong.\n\n"
        + _table(["task", "items", "accuracy", "chance", "no answer", "skipped", "ECE"], rows)
        + "\n\n"
        + "\n".join(lines)
    )


INTROSPECTION_NOTE = """\
Dependency tracking ranks the candidate spans (question numbers and clauses, earlier steps) of every step of the
GOLD chain (explained with `chain=`) and compares with the step's true dependencies: top-1 = the best-ranked
span is a true dependency; precision/recall@3 over the top 3; distractor-wins = a distractor quantity ranks above
every true dependency (lower is better). Rows: the engine's eq. 7 and its two factors alone, then Captum
baselines on the same steps and the same target (the step's log-probability). Faithfulness (ERASER): NLL change of
the step when a method's top-3 spans are masked (comprehensiveness, higher is better) or when only they are kept
(sufficiency, lower is better), beside random spans of the same size. Alternatives: share of alternative claims
whose rollout outcome an uncached forced greedy pass confirmed. Decision points: Spearman correlation of each
decision score with the measured effect of resampling from the step. Calibration: ECE (15 bins) of answer and
step confidence, before and after temperature scaling. Full definitions: `docs/introspection.md`."""


def _introspection(introspection: dict) -> str:
    overall = introspection["summary"]["overall"]
    parts = ["## Introspection accuracy on the ground-truth tasks (Figure 2 shape)", INTROSPECTION_NOTE]
    dependency = overall["dependency"]
    parts.append(
        "### Dependency tracking\n\n"
        + _table(
            ["method", "steps", "top-1", "precision@3", "recall@3", "distractor-wins"],
            [
                [
                    m,
                    str(v["steps"]),
                    _pct(v["top1"]),
                    _pct(v["precision@3"]),
                    _pct(v["recall@3"]),
                    _pct(v["distractor_wins"]),
                ]
                for m, v in dependency.items()
            ],
        )
    )
    faithfulness = overall["faithfulness"]
    methods = [m for m in dependency if isinstance(faithfulness.get(m), dict)]
    keys = ("comprehensiveness", "random_comprehensiveness", "sufficiency", "random_sufficiency")
    parts.append(
        f"### Faithfulness ({faithfulness['steps']} steps)\n\n"
        + _table(
            ["method", "comprehensiveness", "random", "sufficiency", "random"],
            [[m, *(_num(faithfulness[m][k], 2) for k in keys)] for m in methods],
        )
    )
    timing = overall["timings"]["methods"]
    parts.append(
        "### Explanation time per step\n\n"
        + _table(
            ["method", "steps", "seconds per step"],
            [[m, str(v["steps"]), _num(v["seconds_per_step"], 4)] for m, v in timing.items()],
        )
    )
    rows = [
        [
            f"alternatives verified, threshold {label}",
            _pct(overall[key]["verified_share"]),
            f"{overall[key]['alternatives']} alternatives, {overall[key]['items']} chains",
        ]
        for key, label in (("alternatives", "0.3"), ("alternatives_low", "low"))
    ]
    decision = overall["decision"]
    rows += [
        [f"decision points: Spearman({score}, resampling effect)", _num(value), f"{decision['steps']} steps"]
        for score, value in decision["spearman"].items()
    ]
    calibration = overall["calibration"]
    rows += [
        [f"calibration: {key.replace('_', ' ')}", _num(calibration[key]), f"{calibration['items']} chains"]
        for key in ("answer_ece_before", "answer_ece_after", "step_ece_before", "step_ece_after")
    ]
    parts.append(
        "### Alternatives, decision points, calibration (engine)\n\n" + _table(["measure", "value", "n"], rows)
    )
    return "\n\n".join(parts)


def _quality(summary: dict) -> str:
    clarity = summary["clarity"]
    rows = [
        ["accuracy (claims verified)", _pct(summary["accuracy"])],
        ["decision coverage", _pct(summary["decision_coverage"])],
        [f"dependency coverage (n={summary['dependency_coverage_n']})", _pct(summary["dependency_coverage"])],
        [f"actionability (n={summary['actionability_n']})", _pct(summary["actionability"])],
        ["explanation time per chain (s)", _num(summary["explain_seconds"], 2)],
    ]
    rows += [
        [
            f"clarity, {depth}: words / words per sentence / long words",
            f"{_num(c['words'], 0)} / {_num(c['words_per_sentence'], 1)} / {_pct(c['long_words'])}",
        ]
        for depth, c in clarity.items()
    ]
    return (
        f"## Explanation quality (Table 3/9 shape), {summary['n']} explanations\n\n{QUALITY_DEFINITIONS}\n\n"
        + _table(["measure", "value"], rows)
    )


def _overhead(overhead: dict) -> str:
    rows = [
        [name, _num(overhead["components_seconds"][name], 2), _num(ratio, 2) + "×"]
        for name, ratio in overhead.get("ratios", {}).items()
    ]
    rows.append(
        [
            "all of explain",
            _num(sum(overhead["components_seconds"].values()), 2),
            _num(overhead.get("total_ratio"), 2) + "×",
        ]
    )
    return (
        "## Overhead per component (Table 4 shape)\n\nSeconds summed over the explained chains, and their ratio "
        f"to plain greedy `generate` of the same questions ({_num(overhead['plain_seconds'], 2)} s). Tracking is "
        "the traced generation itself; inverse analysis is scoring, decision points, rollouts and eq. 7 "
        "dependencies; explanation is the claims (and a SAGE model's own explanation); validation is the "
        "interventions that check the claims.\n\n" + _table(["component", "seconds", "× plain generation"], rows)
    )


def render_ablations(ablations: dict) -> str:
    header = "## Ablations (Table 5 shape)\n\n"
    if not ablations["models"]:
        where = ablations["folder"] or "no folder given (`--ablations DIR`)"
        return header + f"No trained ablation models were found ({where}); this table is not measured in this run."
    rows = []
    for model in ablations["models"]:
        accuracy = model["eval"].get("accuracy", {})
        keys = ("all arithmetic", "all linear_equation", "all multiple_choice", "all logic")
        rows.append([model["name"], *(_pct(accuracy.get(k, {}).get("accuracy")) for k in keys)])
    return header + _table(["model", "arithmetic", "linear", "multiple choice", "logic"], rows)


def _errors(errors: dict) -> str:
    from .error_taxonomy import __doc__ as rules

    rows = []
    for category, entry in errors.get("categories", {}).items():
        example = entry.get("example") or {}
        rows.append(
            [
                category,
                str(entry.get("count", 0)),
                _pct(entry.get("share")),
                (example.get("reason") or "–").replace("|", "\\|"),
            ]
        )
    return (
        "## Error taxonomy (wrong answers on the synthetic tasks)\n\n"
        + (rules or "").strip()
        + "\n\n"
        + _table(["category", "count", "share", "example"], rows)
    )


def _figures(figures: list[Path]) -> str:
    return "## Figures\n\n" + "\n\n".join(f"![{path.stem}]({path.as_posix()})" for path in figures)
