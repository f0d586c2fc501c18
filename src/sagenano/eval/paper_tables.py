"""`sage-nano report`: the paper's tables and figures on our models, every number measured by the run that writes it.

The report (`<out>/report.md`, `<out>/results.json`, PNG figures in `<out>/figures/`) has:

- setup: model, parameter count, machine, seeds and sizes;
- Table 2 shape: accuracy per benchmark (`sage-nano eval` files under `<out>/eval/`, resumable);
- Figure 2 shape: introspection accuracy of the engine against attention, gradient, integrated-gradients,
  LIME and SHAP baselines on the ground-truth tasks (`sagenano.eval.introspection`);
- Table 3/9 shape: explanation quality of the engine's own explanations (defined where it is printed);
- Table 4 shape: overhead of each engine component against plain generation of the same chain;
- Table 5 shape: ablations, read from trained checkpoints when a folder of them is given;
- the error taxonomy of wrong answers on the synthetic tasks (`sagenano.eval.error_taxonomy`);
- a reliability diagram and an overhead bar chart.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data import generate_items, parse_answer
from ..generation import render_prompt
from ..inverse import explain
from ..inverse.answers import expected_calibration_error
from ..inverse.confidence import Calibration
from ..inverse.measure import ablate, replacement_id
from ..inverse.render import render_text
from .baselines import BASELINES
from .benchmarks import load_items
from .error_taxonomy import classify_error, taxonomy
from .introspection import IntrospectionSettings, measure_introspection
from .paper_tables_markdown import render
from .runner import EvalSettings, evaluate_task, read_records
from .task_accuracy import EVAL_SEED

REAL_BENCHMARKS = (
    "gsm8k",
    "aqua_rat",
    "math500",
    "logiqa",
    "proofwriter",
    "commonsenseqa",
    "strategyqa",
    "arc_easy",
    "arc_challenge",
)
SYNTHETIC = ("synth_arithmetic", "synth_linear_equation", "synth_multiple_choice", "synth_logic")
QUALITY_TASKS = ("arithmetic", "linear_equation", "multiple_choice", "logic")
DEPTHS = ("novice", "intermediate", "expert")
QUALITY_SEED = EVAL_SEED + 11  # explanation-quality items: held-out style, apart from the accuracy items


def introspection_settings(items: int = 20, baselines: str = ",".join(BASELINES)) -> IntrospectionSettings:
    """The report's introspection sizes: `items` gold chains per task for dependency tracking, fewer own chains
    for the costlier parts (alternatives, calibration, decision resampling, faithfulness)."""
    chosen = () if baselines.strip() == "none" else tuple(b.strip() for b in baselines.split(",") if b.strip())
    return IntrospectionSettings(
        n=items,
        own_items=min(items, 10),
        decision_items=min(items, 5),
        faithfulness_items=min(items, 10),
        calibration_items=min(items, 20),
        baselines=chosen,
        baseline_samples=32,
    )


@dataclass(frozen=True)
class ReportSettings:
    """Sizes of every part; the defaults take tens of minutes on 2 CPU cores for the `pico` model."""

    benchmarks: tuple[str, ...] = REAL_BENCHMARKS + SYNTHETIC
    limit: int = 50  # items per benchmark
    quality_items: int = 5  # items per synthetic task for explanation quality and overhead
    max_new_tokens: int = 256
    batch_size: int = 8
    introspection: IntrospectionSettings = field(default_factory=introspection_settings)
    ablations: Path | None = None  # a folder of trained ablation models (one sub-folder each)


def build_report(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    model_name: str,
    out_dir: Path,
    settings: ReportSettings,
    calibration: Calibration | None = None,
    progress: bool = True,
) -> Path:
    """Measures every part and writes `report.md`, `results.json` and the figures; returns the report's path."""
    figures = out_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    started = time.time()
    accuracy = measure_accuracy(model, tokenizer, out_dir / "eval", settings, calibration, progress)
    introspection = measure_introspection(
        model, tokenizer, settings.introspection, progress=progress, loaded_calibration=calibration
    )
    quality = measure_quality(model, tokenizer, settings, calibration, progress)
    errors = measure_errors(model, tokenizer, out_dir / "eval", settings)
    ablations = read_ablations(settings.ablations, model_name)
    results = {
        "setup": setup_facts(model, model_name, settings, calibration),
        "accuracy": accuracy,
        "introspection": introspection,
        "quality": quality,
        "errors": errors,
        "ablations": ablations,
        "wall_seconds": round(time.time() - started, 1),
    }
    reliability_png = plot_reliability(accuracy["calibration_points"], figures / "reliability.png")
    overhead_png = plot_overhead(quality["overhead"], figures / "overhead.png")
    introspection_png = plot_introspection(introspection, figures / "introspection.png")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    markdown = render_markdown(results, [introspection_png, reliability_png, overhead_png])
    path = out_dir / "report.md"
    path.write_text(markdown, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
# Setup


def setup_facts(
    model: PreTrainedModel, model_name: str, settings: ReportSettings, calibration: Calibration | None
) -> dict:
    return {
        "model": model_name,
        "model_type": model.config.model_type,
        "parameters": sum(p.numel() for p in model.parameters()),
        "calibration_temperature": calibration.temperature if calibration else None,
        "calibration": calibration.method if calibration else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "eval_seed": EVAL_SEED,
        "quality_seed": QUALITY_SEED,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
    }


# ---------------------------------------------------------------------------------------------------
# Table 2: accuracy per benchmark


def measure_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    eval_dir: Path,
    settings: ReportSettings,
    calibration: Calibration | None,
    progress: bool,
) -> dict:
    """`sage-nano eval` on every benchmark (resumable: items already in `eval_dir` are not answered again)."""
    eval_settings = EvalSettings(
        limit=settings.limit,
        batch_size=settings.batch_size,
        max_new_tokens=settings.max_new_tokens,
        calibration=calibration,
    )
    rows = []
    for name in settings.benchmarks:
        summary = evaluate_task(model, tokenizer, name, eval_dir, eval_settings, progress=progress)
        summary["chance"] = chance_level(name, settings.limit)
        rows.append(summary)
    points = [
        (r["confidence"] or 0.0, r.get("calibrated_confidence"), bool(r["correct"]))
        for name in settings.benchmarks
        if name in SYNTHETIC
        for r in read_records(eval_dir / f"{name}.jsonl")
    ]
    return {"tasks": rows, "calibration_points": points, "calibration": calibration_summary(points)}


def chance_level(task_name: str, limit: int) -> float | None:
    """The accuracy of guessing uniformly among each evaluated item's options (None for open answers)."""
    options = [len(item.labels or item.choices) for item in load_items(task_name, limit=limit)]
    options = [n for n in options if n]
    return statistics.fmean(1 / n for n in options) if options else None


def calibration_summary(points: list[tuple[float, float | None, bool]]) -> dict:
    if not points:
        return {}
    correct = [c for _, _, c in points]
    summary = {"n": len(points), "answer_ece": expected_calibration_error([p for p, _, _ in points], correct)}
    if all(cal is not None for _, cal, _ in points):
        summary["calibrated_answer_ece"] = expected_calibration_error([cal for _, cal, _ in points], correct)
    return summary


# ---------------------------------------------------------------------------------------------------
# Tables 3/9 and 4: explanation quality and overhead


def measure_quality(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    settings: ReportSettings,
    calibration: Calibration | None,
    progress: bool,
) -> dict:
    """Explains `quality_items` held-out items per synthetic task with the engine's defaults and measures the
    explanations (accuracy, completeness, clarity, actionability) and the cost of each engine component."""
    rows = []
    items = [
        item for task in QUALITY_TASKS for item in generate_items(task, settings.quality_items, QUALITY_SEED, "heldout")
    ]
    for item in items:
        plain = plain_generation_seconds(model, tokenizer, item.question, settings.max_new_tokens)
        report = explain(
            model, tokenizer, item.question, max_new_tokens=settings.max_new_tokens, calibration=calibration
        )
        rows.append({"task": item.task, "plain_seconds": plain, **explanation_quality(model, tokenizer, report, item)})
        if progress:
            print(f"explained {len(rows)}/{len(items)}", end="\r", flush=True)
    return {"items": rows, "summary": summarize_quality(rows), "overhead": summarize_overhead(rows)}


def plain_generation_seconds(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, question: str, max_new_tokens: int
) -> float:
    """Greedy `model.generate` of the same question, as a user would call it: the baseline of Table 4."""
    inputs = tokenizer(render_prompt(tokenizer, question, None), return_tensors="pt", add_special_tokens=False)
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(
            **inputs.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return time.perf_counter() - started


def explanation_quality(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, report, item) -> dict:
    """The measures of one explanation (see `QUALITY_DEFINITIONS`)."""
    validation = report.validation
    decision_ids = {d.position for d in report.decision_points}
    claimed = {c.stated.get("position") for c in report.claims if c.kind == "decision" and c.status == "verified"}
    texts = {depth: render_text(report, depth) for depth in DEPTHS}
    return {
        "accuracy": validation.score if validation else None,
        "claims": len(report.claims),
        "decision_coverage": len(decision_ids & claimed) / len(decision_ids) if decision_ids else None,
        "dependency_coverage": dependency_coverage(report, item),
        "clarity": {depth: readability(text) for depth, text in texts.items()},
        "actionable": top_claim_changes_answer(model, tokenizer, report),
        "timings": report.timings,
        "correct": report.answer == item.answer,
    }


def claimed_spans(report, step_index: int | None = None) -> list[tuple[float, object]]:
    """(share, span) of every verified dependency claim (of one step, when given); a claim states its span's
    token positions, which name one of the step's ranked dependencies."""
    found = []
    for claim in report.claims:
        if claim.kind != "dependency" or claim.status != "verified" or step_index not in (None, claim.step):
            continue
        step = next(s for s in report.steps if s.index == claim.step)
        span = next((d.span for d in step.dependencies if d.span.positions == claim.stated["positions"]), None)
        if span is not None:
            found.append((claim.stated.get("share", 0.0), span))
    return found


def dependency_coverage(report, item) -> float | None:
    """Share of the gold dependencies of the model's steps that equal the gold steps which a verified dependency
    claim names (by overlapping characters of the same source); None when no step matches the gold chain."""
    found = total = 0
    for step in report.steps:
        if step.is_answer or step.index >= len(item.steps) or step.text.strip() != item.steps[step.index].strip():
            continue
        spans = [span for _, span in claimed_spans(report, step.index)]
        for gold in item.dependencies[step.index]:
            total += 1
            found += any(_same_place(span, gold) for span in spans)
    return found / total if total else None


def _same_place(span, gold) -> bool:
    same_source = span.source == gold.source and (gold.source == "question" or span.step == gold.step)
    return same_source and span.start < gold.end and gold.start < span.end


_SENTENCE = re.compile(r"[.!?](?:\s|$)")
_WORD = re.compile(r"[A-Za-z0-9%'.,-]+")


def readability(text: str) -> dict:
    """Clarity, measured plainly: words, words per sentence, and the share of words longer than 12 characters."""
    words = _WORD.findall(text)
    sentences = max(1, len(_SENTENCE.findall(text)))
    return {
        "words": len(words),
        "words_per_sentence": len(words) / sentences,
        "long_words": sum(len(w) > 12 for w in words) / max(1, len(words)),
    }


def top_claim_changes_answer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, report) -> bool | None:
    """Actionability: mask the question span of the most significant verified dependency claim and generate
    again greedily; True when the answer changes. None when there is no answer or no such claim."""
    in_question = [(share, span) for share, span in claimed_spans(report) if span.source == "question"]
    if report.answer is None or not in_question:
        return None
    top = max(in_question, key=lambda pair: pair[0])[1]
    masked = ablate(torch.tensor(report.prompt_ids), [top.positions], replacement_id(tokenizer))  # (1, P)
    with torch.no_grad():
        out = model.generate(
            masked.to(model.device),
            attention_mask=torch.ones_like(masked),
            do_sample=False,
            max_new_tokens=len(report.tokens) + 8,
            pad_token_id=tokenizer.pad_token_id,
        )
    return parse_answer(tokenizer.decode(out[0, masked.shape[1] :])) != report.answer


def _mean(values: list) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def summarize_quality(rows: list[dict]) -> dict:
    return {
        "n": len(rows),
        "accuracy": _mean([r["accuracy"] for r in rows]),
        "decision_coverage": _mean([r["decision_coverage"] for r in rows]),
        "dependency_coverage": _mean([r["dependency_coverage"] for r in rows]),
        "dependency_coverage_n": sum(r["dependency_coverage"] is not None for r in rows),
        "actionability": _mean([r["actionable"] for r in rows]),
        "actionability_n": sum(r["actionable"] is not None for r in rows),
        "clarity": {
            depth: {
                key: _mean([r["clarity"][depth][key] for r in rows])
                for key in ("words", "words_per_sentence", "long_words")
            }
            for depth in DEPTHS
        },
        "explain_seconds": _mean([sum(r["timings"].values()) for r in rows]),
    }


COMPONENTS = {
    "tracking (traced generation)": ("generation",),
    "inverse analysis": ("scoring", "decision_points", "alternatives", "dependencies"),
    "explanation": ("claims", "own_explanation"),
    "validation": ("validation",),
}


def summarize_overhead(rows: list[dict]) -> dict:
    """Each component's time over the summed plain-generation time of the same chains (Table 4)."""
    plain = sum(r["plain_seconds"] for r in rows)
    components = {
        name: sum(r["timings"].get(key, 0.0) for r in rows for key in keys) for name, keys in COMPONENTS.items()
    }
    return {
        "plain_seconds": plain,
        "components_seconds": components,
        "ratios": {name: seconds / plain for name, seconds in components.items()} if plain else {},
        "total_ratio": sum(components.values()) / plain if plain else None,
    }


# ---------------------------------------------------------------------------------------------------
# Error taxonomy and ablations


def measure_errors(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, eval_dir: Path, settings: ReportSettings
) -> dict:
    """Classifies every wrong answer of the synthetic benchmarks of this run by the rules of `error_taxonomy`."""
    cases = []
    for name in (n for n in settings.benchmarks if n in SYNTHETIC):
        records = {r["id"]: r for r in read_records(eval_dir / f"{name}.jsonl")}
        items = generate_items(name.removeprefix("synth_"), settings.limit, EVAL_SEED, "heldout")
        for item in items:
            record = records.get(item.id)
            if record is None or record["correct"] or record.get("skipped"):
                continue
            case = classify_error(item, record["chain"] or "", model, tokenizer)
            if case is not None:
                cases.append(case)
    return taxonomy(cases)


def read_ablations(folder: Path | None, model_name: str) -> dict:
    """The ablation models' own measurements: each sub-folder's `eval.json` and recipe, as
    `scripts/train_ablations.py` writes them. Nothing is measured here; a missing folder is reported as such."""
    if folder is None or not folder.is_dir():
        return {"folder": str(folder) if folder else None, "models": []}
    models = []
    for sub in sorted(p for p in folder.iterdir() if (p / "eval.json").is_file()):
        recipe = sub / "recipe.yaml"
        models.append(
            {
                "name": sub.name,
                "eval": json.loads((sub / "eval.json").read_text()),
                "recipe": recipe.read_text() if recipe.is_file() else None,
            }
        )
    return {"folder": str(folder), "models": models}


# ---------------------------------------------------------------------------------------------------
# Figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_reliability(points: list[tuple[float, float | None, bool]], path: Path, bins: int = 10) -> Path:
    """Accuracy against confidence in equal-width bins, raw and (when present) calibrated."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    series = {"raw answer probability": [(p, c) for p, _, c in points]}
    if points and all(cal is not None for _, cal, _ in points):
        series["calibrated"] = [(cal, c) for _, cal, c in points]
    for label, pairs in series.items():
        xs, ys = [], []
        for b in range(bins):
            members = [(p, c) for p, c in pairs if b / bins <= p < (b + 1) / bins or (b == bins - 1 and p == 1.0)]
            if members:
                xs.append(statistics.fmean(p for p, _ in members))
                ys.append(statistics.fmean(float(c) for _, c in members))
        ax.plot(xs, ys, marker="o", label=label)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence",
        ylabel="accuracy",
        title=f"Reliability, synthetic tasks (n={len(points)})",
    )
    ax.legend(loc="upper left", fontsize=8)
    return _save(plt, fig, path)


def plot_overhead(overhead: dict, path: Path) -> Path:
    """Each engine component's time as a multiple of plain generation (Table 4 as bars)."""
    plt = _pyplot()
    ratios = overhead.get("ratios", {})
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(list(ratios), list(ratios.values()), color="#4c72b0")
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="time / plain generation of the same chain", title="Overhead per engine component")
    ax.invert_yaxis()
    return _save(plt, fig, path)


def plot_introspection(introspection: dict, path: Path) -> Path:
    """Dependency-tracking top-1 accuracy per method, overall (Figure 2's shape)."""
    plt = _pyplot()
    methods = introspection_top1(introspection)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(methods), [100 * v for v in methods.values()], color="#55a868")
    ax.set(ylabel="top-1 dependency accuracy (%)", ylim=(0, 100), title="Dependency tracking, ground-truth tasks")
    ax.tick_params(axis="x", labelrotation=30)
    return _save(plt, fig, path)


def introspection_top1(introspection: dict) -> dict[str, float]:
    """{method: overall top-1} from `measure_introspection`'s dependency part."""
    dependency = introspection["summary"]["overall"]["dependency"]
    return {method: values["top1"] for method, values in dependency.items() if values["top1"] is not None}


# ---------------------------------------------------------------------------------------------------
# Markdown


def render_markdown(results: dict, figures: list[Path]) -> str:
    return render(results, [f.relative_to(f.parent.parent) for f in figures])
