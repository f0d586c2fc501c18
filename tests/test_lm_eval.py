"""lm-evaluation-harness (`lm_eval`, its `hf` model) scores SAGE checkpoints with the numbers our own model gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from sagenano.data.format import ANSWER, STEP, prompt_text
from sagenano.data.tasks import generate_items
from sagenano.loading import LoadedModel, load_model, shipped_model_dir
from sagenano.model import SageForCausalLM

ARC_TASK = "sage_arc_easy_mini"
ARITHMETIC_TASK = "sage_arithmetic_answer_mini"
MAX_GEN_TOKS = 8

# Eight ARC-Easy test items, copied from shared/data/benchmarks/arc/arc_easy_test.jsonl so the test stands alone.
ARC_ITEMS = [
    {"query": "Question: Which characteristic describes the texture of a kitten's fur?",
     "choices": ["gray", "warm", "long", "soft"], "gold": 3},
    {"query": "Question: Plants use sunlight to make",
     "choices": ["soil.", "minerals.", "food.", "water."], "gold": 2},
    {"query": "Question: Which of these will most likely harm a habitat?",
     "choices": ["planting trees", "water pollution", "rainfall", "sunlight"], "gold": 1},
    {"query": "Question: All living and nonliving material is composed of",
     "choices": ["air", "elements", "water", "soil"], "gold": 2},
    {"query": "Question: Which process best explains how the Grand Canyon became so wide?",
     "choices": ["folding", "erosion", "deposition", "sedimentation"], "gold": 1},
    {"query": "Question: Using a softball bat to hit a softball is an example of using which simple machine?",
     "choices": ["pulley", "lever", "inclined plane", "wheel and axle"], "gold": 1},
    {"query": "Question: Where do plants get most of the energy they need to live and grow?",
     "choices": ["water", "soil", "air", "sunlight"], "gold": 3},
    {"query": "Question: What causes sound?",
     "choices": ["sunlight", "vibrations", "x-rays", "pitch"], "gold": 1},
]  # fmt: skip


def write_task(folder: Path, name: str, items: list[dict], metric: str, **config: object) -> None:
    """A local lm_eval task: its items as JSONL and a YAML config that reads them (no hub, no download)."""
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    source = {"data_files": {"test": str(data)}, "cache_dir": str(folder / "datasets_cache")}
    task = dict(task=name, dataset_path="json", dataset_kwargs=source, test_split="test", metadata={"version": 1.0},
                metric_list=[{"metric": metric, "aggregation": "mean", "higher_is_better": True}])  # fmt: skip
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({**task, **config}), encoding="utf-8")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """ARC-Easy as multiple choice (log-likelihoods), and arithmetic answers after the reference chain (generation)."""
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    write_task(folder, ARC_TASK, ARC_ITEMS, output_type="multiple_choice", doc_to_text="{{query}}\nAnswer:",
               doc_to_choice="choices", doc_to_target="gold", metric="acc")  # fmt: skip
    arithmetic = [
        {"prompt": prompt_text(item.question) + STEP.join(item.steps) + ANSWER, "answer": item.answer}
        for item in generate_items("arithmetic", 8, seed=0, split="heldout")
    ]
    write_task(folder, ARITHMETIC_TASK, arithmetic, output_type="generate_until", doc_to_text="prompt",
               doc_to_target="answer", metric="exact_match",
               generation_kwargs={"until": ["\n"], "max_gen_toks": MAX_GEN_TOKS, "do_sample": False})  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def harness(task_dir) -> tuple[HFLM, dict]:
    """lm_eval's `hf` model on the shipped checkpoint, both tasks scored in one run (batches of 4: padded)."""
    lm = HFLM(pretrained=str(shipped_model_dir()), backend="causal", device="cpu", batch_size=4)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    results = simple_evaluate(model=lm, tasks=[ARC_TASK, ARITHMETIC_TASK], task_manager=manager, bootstrap_iters=0)
    return lm, results


@pytest.fixture(scope="module")
def ours() -> LoadedModel:
    return load_model(str(shipped_model_dir()))


def continuation_logprob(loaded: LoadedModel, context: str, continuation: str) -> float:
    """log p(continuation | context) under our model: context and continuation tokenised apart, one forward pass."""
    context_ids = loaded.tokenizer(context).input_ids
    continuation_ids = loaded.tokenizer(continuation).input_ids
    ids = torch.tensor([context_ids + continuation_ids])  # (1, T)
    with torch.no_grad():
        logits = loaded.model(ids).logits[0, len(context_ids) - 1 : -1]  # (len(continuation), V): next-token logits
    return logits.log_softmax(-1).gather(-1, torch.tensor(continuation_ids)[:, None]).sum().item()


def greedy_answer(loaded: LoadedModel, prompt: str) -> str:
    """Our own greedy continuation, decoded and cut the way the task asks (special tokens dropped, up to a newline)."""
    ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids
    out = loaded.model.generate(ids, max_new_tokens=MAX_GEN_TOKS, do_sample=False)
    return loaded.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).split("\n")[0]


def test_hf_model_loads_the_checkpoint_as_sage(harness):
    lm, _ = harness
    assert isinstance(lm.model, SageForCausalLM)


def test_choice_log_likelihoods_are_our_models_and_accuracy_follows_from_them(harness, ours):
    _, results = harness
    samples = sorted(results["samples"][ARC_TASK], key=lambda sample: sample["doc_id"])
    assert len(samples) == len(ARC_ITEMS)
    theirs = torch.tensor([[response[0][0] for response in sample["resps"]] for sample in samples])  # (items, choices)
    mine = torch.tensor([[continuation_logprob(ours, *pair) for pair in sample["arguments"]] for sample in samples])
    torch.testing.assert_close(theirs, mine, atol=1e-3, rtol=1e-5)

    acc = results["results"][ARC_TASK]["acc,none"]
    gold = torch.tensor([item["gold"] for item in ARC_ITEMS])
    assert 0.0 <= acc <= 1.0
    assert acc == pytest.approx((mine.argmax(-1) == gold).float().mean().item())


def test_generated_answers_are_our_greedy_generations(harness, ours):
    _, results = harness
    samples = sorted(results["samples"][ARITHMETIC_TASK], key=lambda sample: sample["doc_id"])
    theirs = [sample["resps"][0][0] for sample in samples]
    mine = [greedy_answer(ours, sample["arguments"][0][0]) for sample in samples]
    assert theirs == mine

    exact_match = results["results"][ARITHMETIC_TASK]["exact_match,none"]
    answers = [sample["target"] for sample in samples]
    assert 0.0 <= exact_match <= 1.0
    assert exact_match == pytest.approx(sum(a == b for a, b in zip(mine, answers, strict=True)) / len(samples))


def test_command_line_scores_a_sage_checkpoint_like_the_python_api(harness, task_dir, tmp_path):
    _, results = harness
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "sagenano.eval.lm_eval", "run", "--model", "hf",
        "--model_args", f"pretrained={shipped_model_dir()},backend=causal", "--device", "cpu", "--batch_size", "4",
        "--tasks", ARITHMETIC_TASK, "--include_path", str(task_dir), "--output_path", str(tmp_path),
    ]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert ARITHMETIC_TASK in run.stdout and "exact_match" in run.stdout  # lm_eval's results table
    (written,) = tmp_path.rglob("results_*.json")
    scored = json.loads(written.read_text(encoding="utf-8"))["results"][ARITHMETIC_TASK]
    assert scored["exact_match,none"] == pytest.approx(results["results"][ARITHMETIC_TASK]["exact_match,none"])
