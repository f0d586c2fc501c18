"""The training curriculum: schedule, losses, batches, torchrun DDP/FSDP2, checkpoints, resume, failures."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import make_sage
from sagenano.loading import load_model
from sagenano.tokenizer import CHAT_TEMPLATE
from sagenano.train import losses
from sagenano.train.batches import EXPLANATION, REASONING, collate, encode_item, iter_batches
from sagenano.train.checkpoint import CorruptCheckpointError, latest_checkpoint
from sagenano.train.recipe import Recipe
from sagenano.train.schedule import build_scheduler
from sagenano.train.trainer import TrainingDiverged, train

TINY_MODEL = {
    "hidden_size": 64, "head_dim": 16, "head_groups": {"reasoning": 2, "memory": 1, "meta_cognitive": 1},
    "num_hidden_layers": 2, "num_inverse_layers": 1, "num_concepts": 8, "expert_intermediate_size": 32,
    "intermediate_size": 64, "max_position_embeddings": 256,
}  # fmt: skip


def tiny_recipe(**overrides) -> dict:
    recipe = {
        "preset": "pico", "model": TINY_MODEL, "tasks": {"arithmetic": 64, "logic": 32}, "seed": 0,
        "max_length": 200, "bf16": False, "checkpoint_every": 2, "log_every": 1,
        "stages": [
            {"name": "base_lm", "steps": 3, "lr": 3e-3, "warmup": 1, "batch_size": 8},
            {"name": "cot", "steps": 3, "lr": 3e-3, "warmup": 1, "batch_size": 8, "grad_accum": 2, "schedule": "paper"},
        ],
    }  # fmt: skip
    recipe.update(overrides)
    return recipe


def write_recipe(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(**overrides)))
    return path


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(latest_checkpoint(run / "checkpoints") / "model.safetensors")


# --- schedule ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["paper", "cosine"])
def test_schedule_matches_a_reference_computation(name):
    lr_max, warmup, total = 3e-4, 10, 100
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr_max)
    scheduler = build_scheduler(optimizer, name, warmup, total)
    for step in range(total):
        t = step + 1
        if name == "paper":  # eq. 15, written out independently
            expected = lr_max * min(t / warmup, math.sqrt(warmup / t)) * math.cos(math.pi * t / (2 * total))
        elif t <= warmup:
            expected = lr_max * t / warmup
        else:
            expected = lr_max * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))))
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15), step
        optimizer.step()
        scheduler.step()


def test_unknown_schedule_lists_the_choices():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="cosine"):
        build_scheduler(optimizer, "linear", 1, 10)


# --- batches and losses -----------------------------------------------------------------------------


def stage3_record() -> dict:
    from sagenano.data import generate_items

    item = generate_items("arithmetic", 1, 0)[0].to_dict()
    n = len(item["steps"])
    return {**item, "explanation": "Step 1 decided the answer.", "step_correct": [True] * (n - 1) + [False],
            "decision_steps": [True] + [False] * (n - 1), "answer_correct": False, "train_chain": True}  # fmt: skip


def test_segments_and_meta_targets_follow_the_text(tokenizer):
    record = stage3_record()
    example = encode_item(record, tokenizer, "solution+explanation", 512)
    ids, segments = example.input_ids, example.segments
    decoded = {seg: tokenizer.decode([t for t, s in zip(ids, segments, strict=True) if s == seg]) for seg in (1, 2)}
    assert decoded[REASONING].startswith(record["steps"][0]) and record["answer"] in decoded[REASONING]
    assert decoded[EXPLANATION] == "<|explanation|>Step 1 decided the answer.<|endoftext|>"
    step_id = tokenizer.convert_tokens_to_ids("<|step|>")
    starts = [i for i, t in enumerate(ids) if t == step_id]
    assert [example.decision[i] for i in starts] == [int(d) for d in record["decision_steps"]]
    assert example.confidence[starts[0]] == 1 and example.confidence[starts[-1]] == 0
    assert example.confidence[0] == -1, "the question carries no target"
    cot = encode_item(record, tokenizer, "solution", 512)
    assert EXPLANATION not in cot.segments and REASONING in cot.segments


def test_each_loss_term_is_finite_and_has_a_gradient(tokenizer):
    model = make_sage(tokenizer).train()
    batch = collate([encode_item(stage3_record(), tokenizer, "solution+explanation", 512)] * 2, tokenizer.pad_token_id)
    out = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, run_inverse=True, use_cache=False,
        hidden_step=torch.tensor([1, 2]),
    )  # fmt: skip
    terms = {
        "reasoning": (losses.token_nll_sum(out.logits, batch.labels(REASONING)), model.model.layers[0].attn.q_proj),
        "explanation": (losses.token_nll_sum(out.logits, batch.labels(EXPLANATION)), model.lm_head),
        "consistency": (losses.consistency_sum(out, batch.labels(REASONING)), model.inverse.summary_proj),
        "meta": (losses.meta_sum(out, batch.meta_targets), model.meta_head.proj),
    }
    for name, (value, module) in terms.items():
        assert torch.isfinite(value) and value > 0, name
        model.zero_grad()
        value.backward(retain_graph=True)
        grad = module.weight.grad
        assert grad is not None and grad.abs().sum() > 0, f"{name} does not reach {type(module).__name__}"


def test_batches_are_deterministic_and_shards_cover_the_batch(tokenizer, tmp_path):
    from sagenano.data import generate_items, write_jsonl

    path = tmp_path / "items.jsonl"
    write_jsonl(generate_items("linear_equation", 40, 0), path)
    first = list(iter_batches(path, tokenizer, 8, "solution", seed=1, epoch=0, max_length=256, bucket_batches=2))
    again = list(iter_batches(path, tokenizer, 8, "solution", seed=1, epoch=0, max_length=256, bucket_batches=2))
    other = list(iter_batches(path, tokenizer, 8, "solution", seed=1, epoch=1, max_length=256, bucket_batches=2))
    assert len(first) == 5 and all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a.input_ids, b.input_ids) for a, b in zip(first, other, strict=True))
    shards = [first[0].shard(rank, 2) for rank in range(2)]
    assert sorted(map(tuple, torch.cat([s.input_ids for s in shards]).tolist())) == sorted(
        map(tuple, first[0].input_ids.tolist())
    )


def test_text_files_are_stage_one_data_only_and_jsonl_fields_are_their_text(tmp_path):
    from sagenano.data.io import iter_records
    from sagenano.train.prepare import stage_data_path, write_base_lm_data, write_training_items

    text_file = tmp_path / "worked.jsonl"
    rows = [{"question": f"Question {i}: pears?", "answer": f"2+{i} = {2 + i}\n#### {2 + i}"} for i in range(3)]
    text_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = Recipe(**tiny_recipe(text_files=[str(text_file)]))
    base_lm, cot = recipe.stages
    items, stage1 = stage_data_path(tmp_path, 1, cot, recipe), stage_data_path(tmp_path, 0, base_lm, recipe)
    assert items != stage1, "stage 1 reads the text from a file of its own"
    items.parent.mkdir()
    write_training_items(recipe, items)
    write_base_lm_data(recipe, base_lm, items, stage1)
    assert not any("text" in r for r in iter_records(items)), "stage 2's items hold no plain text"
    texts = [r["text"] for r in iter_records(stage1) if "text" in r]
    assert len(texts) == 1 and '{"' not in texts[0], "the records' fields are the text, not their JSON"
    assert all(row["question"] in texts[0] and row["answer"] in texts[0] for row in rows)
    assert sum(1 for _ in iter_records(stage1)) == base_lm.examples, "the text, and items for the rest of the stage"
    with pytest.raises(FileNotFoundError, match="relative to the directory"):
        missing = Recipe(**tiny_recipe(text_files=[str(tmp_path / "missing.jsonl")]))
        write_base_lm_data(missing, base_lm, items, stage1)


# --- whole runs -------------------------------------------------------------------------------------


THREE_STAGES = tiny_recipe()["stages"] + [
    {"name": "inverse", "steps": 2, "lr": 1e-3, "warmup": 1, "batch_size": 8, "synth_questions": 4,
     "synth_resamples": 2, "synth_repeats": 2},
]  # fmt: skip


def test_three_stage_run_writes_a_loadable_model(tmp_path):
    final = train(Recipe(**tiny_recipe(stages=THREE_STAGES)), tmp_path / "run")
    rows = metrics(tmp_path / "run")
    assert [r["stage"] for r in rows] == ["base_lm"] * 3 + ["cot"] * 3 + ["inverse"] * 2
    inverse = rows[-1]
    assert {"reasoning", "explanation", "consistency", "meta"} <= set(inverse)
    assert all(math.isfinite(r["loss"]) for r in rows)
    from sagenano.loading import load_model

    loaded = load_model(str(final))
    assert loaded.trained and loaded.model.config.num_hidden_layers == 2
    stage3 = [
        json.loads(line) for line in (tmp_path / "run" / "data" / "stage3-inverse.jsonl").read_text().splitlines()
    ]
    labelled = [r for r in stage3 if "step_correct" in r]
    assert len(labelled) == 4 * 2 and all("explanation" in r and "answer_share" in r for r in labelled)
    references = [r for r in stage3 if "step_correct" not in r]
    # the references fill the stage's 2 steps x 8 examples, so stage 3 does not over-fit its few synthesised items
    assert len(references) == 2 * 8 - 4 * 2 and all("explanation" not in r for r in references)
    assert not {r["question"] for r in references} & {r["question"] for r in labelled}


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    recipe = Recipe(**tiny_recipe())
    train(recipe, tmp_path / "straight")
    train(recipe, tmp_path / "split", stop_after=4)  # stops mid-stage 2, between checkpoints
    with pytest.raises(ValueError, match="--resume"):
        train(recipe, tmp_path / "split")  # refuses to overwrite a run
    train(recipe, tmp_path / "split", resume=True)
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)
    straight = [r["loss"] for r in metrics(tmp_path / "straight")]
    split = [r["loss"] for r in metrics(tmp_path / "split")]
    assert split == pytest.approx(straight, rel=1e-5)


@pytest.mark.parametrize("stop_after", [3, 6, 7])  # at the end of stage 1, of stage 2 (before synthesis), in stage 3
def test_a_three_stage_run_resumed_at_a_stage_boundary_ends_with_the_same_weights(tmp_path, stop_after):
    recipe = Recipe(**tiny_recipe(stages=THREE_STAGES, checkpoint_every=1))
    train(recipe, tmp_path / "straight")
    train(recipe, tmp_path / "split", stop_after=stop_after)
    train(recipe, tmp_path / "split", resume=True)
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)


def test_nan_loss_stops_cleanly_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = losses.token_nll_sum

    def poisoned(logits, labels):
        calls["n"] += 1
        value = real(logits, labels)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr("sagenano.train.trainer.token_nll_sum", poisoned)
    recipe = Recipe(**tiny_recipe(checkpoint_every=1))
    with pytest.raises(TrainingDiverged, match="nan at step 3"):
        train(recipe, tmp_path / "run")
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "stage1-step000002"


def test_a_checkpoint_is_a_model_folder_that_load_model_takes(tmp_path):
    train(Recipe(**tiny_recipe()), tmp_path / "run", stop_after=2)
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    loaded = load_model(str(checkpoint))
    assert loaded.tokenizer.chat_template == CHAT_TEMPLATE, "the tokenizer is saved with SAGE's question format"
    stored = load_file(checkpoint / "model.safetensors")
    name = "model.embed_tokens.weight"
    assert torch.equal(loaded.model.state_dict()[name], stored[name])


def test_truncated_checkpoint_is_refused_with_a_clear_error(tmp_path):
    recipe = Recipe(**tiny_recipe())
    train(recipe, tmp_path / "run", stop_after=2)
    weights = latest_checkpoint(tmp_path / "run" / "checkpoints") / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CorruptCheckpointError, match=r"is corrupt: model\.safetensors has 1000 bytes"):
        train(recipe, tmp_path / "run", resume=True)


def test_a_parameter_that_had_no_gradient_yet_does_not_block_resume(tmp_path, tokenizer):
    # Stage 3's meta head gets its first gradient from the first batch with decision labels; a checkpoint taken
    # before that has no optimizer state for it (issue 29: resuming it was a RuntimeError).
    from sagenano.train.checkpoint import gather_state, load_trainer_state, save_checkpoint

    model = make_sage(tokenizer).train()
    ids = torch.tensor([[5, 6, 7, 8]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(ids).logits.sum().backward()  # no inverse pass: the meta head gets no gradient
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    assert model.meta_head.proj.weight not in optimizer.state
    tied = dict(model._tied_weights_keys)
    path = save_checkpoint(tmp_path, "stage3-step1", *gather_state(model, optimizer), {"step": 1}, model.config, tied)
    resumed = torch.optim.AdamW(model.parameters(), lr=1e-3)
    assert load_trainer_state(path, model, resumed) == {"step": 1}
    assert model.meta_head.proj.weight not in resumed.state
    name = "model.embed_tokens.weight"
    param = dict(model.named_parameters())[name]
    torch.testing.assert_close(resumed.state[param]["exp_avg"], optimizer.state[param]["exp_avg"])
    other = make_sage(tokenizer, use_meta_cognitive_head=False)
    with pytest.raises(ValueError, match="does not fit this model's parameters"):
        load_trainer_state(path, other, torch.optim.AdamW(other.parameters()))


def test_resume_from_an_earlier_checkpoint_after_a_corrupt_or_missing_latest(tmp_path):
    recipe = Recipe(**tiny_recipe())
    train(recipe, tmp_path / "straight")
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    train(recipe, run, stop_after=5)  # checkpoints: stage 1 steps 2 and 3 (its end), stage 2 step 2
    broken = latest_checkpoint(checkpoints)
    assert broken.name == "stage2-step000002"
    (broken / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(CorruptCheckpointError, match="--resume --from stage1-step000003"):
        train(recipe, run, resume=True)
    shutil.rmtree(broken)  # what the old advice said to do: --resume must still say how to go on
    with pytest.raises(
        CorruptCheckpointError, match=r"names stage2-step000002, which is not there.*--from stage1-step"
    ):
        train(recipe, run, resume=True)
    with pytest.raises(ValueError, match="has no checkpoint of that name"):
        train(recipe, run, resume=True, resume_from="stage9-step000001")
    (checkpoints / "latest").unlink()  # as a kill between a checkpoint's rename and its `latest` leaves it
    with pytest.raises(ValueError, match="latest is missing; resume with --resume --from stage1-step000003"):
        train(recipe, run, resume=True)
    train(recipe, run, resume=True, resume_from="stage1-step000002")  # an older one than needed: later ones move
    moved = sorted(p.name.rsplit("-", 1)[0] for p in (run / "superseded").iterdir())
    assert moved == ["metrics", "stage1-step000003"], "the later checkpoint and the rows after the resumed one"
    a, b = final_weights(tmp_path / "straight"), final_weights(run)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)
    assert [(r["stage"], r["step"]) for r in metrics(run)] == [
        (r["stage"], r["step"]) for r in metrics(tmp_path / "straight")
    ]


def test_a_killed_runs_leftovers_are_cleaned_on_resume(tmp_path):
    # What kill -9 leaves (issue 29): a half-written checkpoint folder, a half-written `latest`, and metric rows
    # logged after the last checkpoint, which the resumed run logs again.
    recipe = Recipe(**tiny_recipe(checkpoint_every=2, log_every=1))
    train(recipe, tmp_path / "straight")
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    train(recipe, run, stop_after=2)
    straight_rows = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(straight_rows[:3]) + "\n" + straight_rows[3][:20])  # cut mid-row
    (checkpoints / ".stage1-step000003.tmp-x1y2").mkdir()
    (checkpoints / ".stage1-step000003.tmp-x1y2" / "model.safetensors").write_bytes(b"half")
    (checkpoints / ".latest.abc").write_text("stage1-step0")
    train(recipe, run, resume=True)
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith(".")) == []
    assert metrics(run)[0] == json.loads(straight_rows[0])  # the rows before the checkpoint are kept
    steps = [(r["stage"], r["step"]) for r in metrics(run)]
    assert steps == [(r["stage"], r["step"]) for r in metrics(tmp_path / "straight")] and len(set(steps)) == len(steps)


def test_a_checkpoint_whose_checksums_differ_is_refused(tmp_path):
    train(Recipe(**tiny_recipe()), tmp_path / "run", stop_after=1)
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    weights = load_file(checkpoint / "model.safetensors")
    weights["model.norm.weight"][0] += 1.0  # a changed value, a whole file: only the manifest's checksum tells
    save_file(weights, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"is corrupt: model\.safetensors.*pass another checkpoint"):
        load_model(str(checkpoint))


def test_a_run_killed_before_its_first_checkpoint_starts_again_cleanly(tmp_path):
    recipe = Recipe(**tiny_recipe(checkpoint_every=2, log_every=1))
    train(recipe, tmp_path / "straight")
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"stage": "base_lm", "step": 1, "loss": 9.0}\n')  # logged, then killed
    (checkpoints / ".stage1-step000002.tmp-a1b2").mkdir()
    train(recipe, run)
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]
    assert [(r["stage"], r["step"]) for r in metrics(run)] == [
        (r["stage"], r["step"]) for r in metrics(tmp_path / "straight")
    ]
    (aside,) = (run / "superseded").glob("metrics-*.jsonl")
    assert '"loss": 9.0' in aside.read_text(), "the killed run's rows are kept aside, not lost"


def without_model(**overrides) -> dict:
    recipe = tiny_recipe(**overrides)
    del recipe["model"]
    return recipe


def test_a_run_starts_from_a_trained_model_with_init(tmp_path):
    first = train(Recipe(**tiny_recipe()), tmp_path / "first")
    stage3 = [{"name": "inverse", "steps": 1, "lr": 1e-4, "warmup": 1, "batch_size": 8, "synth_questions": 2,
               "synth_resamples": 2}]  # fmt: skip
    continued = train(Recipe(**without_model(stages=stage3, init=str(first))), tmp_path / "continued")
    before, after = load_file(first / "model.safetensors"), load_file(continued / "model.safetensors")
    fresh = make_sage(load_model(str(first)).tokenizer, **TINY_MODEL).state_dict()
    name = "model.embed_tokens.weight"
    moved, trained = (after[name] - before[name]).abs().max(), (fresh[name] - before[name]).abs().max()
    # A fresh start (same seed) would be as far from the first run's weights as its six steps took them.
    assert moved * 10 < trained, "one small step from the trained weights, not from a fresh initialisation"
    assert load_model(str(continued)).model.config.hidden_size == TINY_MODEL["hidden_size"]


def test_a_bad_init_is_a_clear_error(tmp_path, tokenizer):
    from sagenano.train.prepare import build_model

    with pytest.raises(ValueError, match="remove `model`"):
        Recipe(**tiny_recipe(init=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="not a SAGE model folder"):
        build_model(Recipe(**without_model(init=str(tmp_path / "missing"))), tokenizer)
    make_sage(tokenizer, vocab_size=len(tokenizer) + 8).save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="another tokenizer"):
        build_model(Recipe(**without_model(init=str(tmp_path / "other"))), tokenizer)


def test_a_run_trains_on_a_sample_of_gsm8k_and_lists_the_lines_it_skipped(tmp_path, capfd):
    from test_cot_files import gsm8k_sample

    sample = gsm8k_sample(tmp_path / "gsm8k-sample.jsonl", 16, extra=['{"question": "no answer"}'])
    stages = [{"name": "base_lm", "steps": 1, "lr": 1e-3, "warmup": 1, "batch_size": 4},
              {"name": "cot", "steps": 2, "lr": 1e-3, "warmup": 1, "batch_size": 4}]  # fmt: skip
    final = train(Recipe(**tiny_recipe(tasks={}, cot_files=[str(sample)], stages=stages)), tmp_path / "run")
    items = [json.loads(line) for line in (tmp_path / "run" / "data" / "train.jsonl").read_text().splitlines()]
    assert len(items) == 16 and {item["task"] for item in items} == {"own:gsm8k-sample"}
    assert (tmp_path / "run" / "data" / "skipped-lines.txt").read_text().startswith(f"{sample}:17: ")
    assert "16 items; 1 bad line skipped" in capfd.readouterr().err
    assert [r["stage"] for r in metrics(tmp_path / "run")] == ["base_lm", "cot", "cot"]
    assert load_model(str(final)).trained
    with pytest.raises(ValueError, match="no training data"):
        train(Recipe(**tiny_recipe(tasks={}, stages=stages)), tmp_path / "empty")


def test_sigterm_during_stage3_synthesis_stops_at_once_and_the_next_run_goes_on(tmp_path, monkeypatch):
    from sagenano.train import stage3_data

    explained, real = [], stage3_data.label_item

    def label_then_sigterm(record, *args):
        explained.append(record["question"])
        if len(explained) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` would, while the second question is explained
        return real(record, *args)

    monkeypatch.setattr(stage3_data, "label_item", label_then_sigterm)
    stages = tiny_recipe()["stages"] + [
        {"name": "inverse", "steps": 1, "lr": 1e-3, "warmup": 1, "batch_size": 8, "synth_questions": 5,
         "synth_resamples": 2},
    ]  # fmt: skip
    recipe, run = Recipe(**tiny_recipe(stages=stages)), tmp_path / "run"
    train(recipe, run)
    data = run / "data"
    assert len(explained) == 2 and not (data / "stage3-inverse.jsonl").exists()
    partial = data / "stage3-inverse.partial.jsonl"
    with partial.open("a") as handle:
        handle.write('{"cut by a kill')  # a broken last line is dropped, not trained on
    assert len(partial.read_text().splitlines()) == 3
    train(recipe, run, resume=True)
    assert len(explained) == 5 and len(set(explained)) == 5, "each question explained once over the two runs"
    records = [json.loads(line) for line in (data / "stage3-inverse.jsonl").read_text().splitlines()]
    assert sum("explanation" in r for r in records) == 5 and not partial.exists()
    assert [r["stage"] for r in metrics(run)][-1] == "inverse"


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path):
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    with (run / ".lock").open("a+") as held:  # as a run in another process holds it
        held.write("pid 12345")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match=r"in use by another `sage-nano train` \(pid 12345\)"):
            train(Recipe(**tiny_recipe()), run)
    assert train(Recipe(**tiny_recipe()), run, stop_after=1).name == "checkpoints"  # free again: it runs


def test_bad_recipe_is_a_clear_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**tiny_recipe(), "learning_rate": 1}))
    with pytest.raises(ValueError, match="unknown recipe keys"):
        Recipe.load(path)
    with pytest.raises(ValueError, match="unknown stage"):
        Recipe(**tiny_recipe(stages=[{"name": "rlhf", "steps": 1}]))
    with pytest.raises(FileNotFoundError, match="no recipe"):
        Recipe.load(tmp_path / "missing.yaml")


# --- real processes: SIGTERM and torchrun -----------------------------------------------------------


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sagenano.cli", *args]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_from_on_the_command_line_needs_resume_and_names_the_checkpoints(tmp_path):
    recipe = write_recipe(tmp_path)
    run = tmp_path / "run"
    alone = subprocess.run(cli("train", "--recipe", str(recipe), "--out", str(run), "--from", "stage1-step000002"),
                           env=ENV, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert alone.returncode == 2 and "pass --resume too" in alone.stderr and not alone.stdout


def test_sigterm_writes_a_checkpoint_and_resume_finishes(tmp_path):
    recipe = write_recipe(tmp_path, stages=[{"name": "base_lm", "steps": 400, "lr": 1e-3, "warmup": 1,
                                             "batch_size": 8}], checkpoint_every=1000)  # fmt: skip
    run = tmp_path / "run"
    process = subprocess.Popen(cli("train", "--recipe", str(recipe), "--out", str(run)), env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    checkpoint = latest_checkpoint(run / "checkpoints")
    stopped_at = json.loads((checkpoint / "checkpoint.json").read_text())["step"]
    assert 1 <= stopped_at < 400, "SIGTERM stops the run early, with a checkpoint"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_one_process(tmp_path, strategy):
    recipe = write_recipe(tmp_path, distributed=strategy)
    single = subprocess.run(cli("train", "--recipe", str(recipe), "--out", str(tmp_path / "one")),
                            env=ENV, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "sagenano.cli"]  # fmt: skip
    for resume in (["--stop-after", "4"], ["--resume"]):  # stopped mid-stage 2, resumed on both ranks
        double = subprocess.run([*torchrun, "train", "--recipe", str(recipe), "--out", str(tmp_path / "two"), *resume],
                                env=ENV, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert double.returncode == 0, double.stderr[-3000:]
    one, two = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert len(one) == len(two) == 6, "rank 0 alone writes metrics"
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-4)
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-4, rtol=1e-3, msg=name)


def test_learning_curve_extrapolation_recovers_a_log_linear_trend():
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    import learning_curve

    def row(tokens: float) -> dict:  # arithmetic gains 10 points per doubling from 10 % at 1 M; logic is flat
        gain = 0.1 * math.log2(tokens / 1e6)
        return {"checkpoint": "c", "stage": "cot", "stage_tokens": int(tokens), "all arithmetic": 0.1 + gain,
                "all linear_equation": 0.5 + gain, "all logic": 0.3, "all multiple_choice": 0.2}  # fmt: skip

    rows = [{**row(5e5), "stage": "base_lm", "all arithmetic": 0.9}] + [row(t * 1e6) for t in range(1, 9)]
    fits = learning_curve.extrapolate(rows)
    assert fits["all arithmetic"]["per_doubling"] == pytest.approx(0.1)
    assert fits["all arithmetic"]["tokens_for_target"] == pytest.approx(2**8 * 1e6, rel=1e-6), "0.1 + 0.8 = 0.9"
    assert fits["all linear_equation"]["tokens_for_target"] == pytest.approx(2**4 * 1e6, rel=1e-6)
    assert fits["all logic"]["tokens_for_target"] is None, "a flat curve reaches no target"
    assert "not rising" in learning_curve.markdown_table(rows, 30)
    assert learning_curve.extrapolate(rows[:3]) == {}, "too few checkpoints to fit a line"


def test_a_resumed_stage_is_timed_by_its_logged_seconds_not_the_gap_between_sessions():
    sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
    from ship_model import logged_seconds

    # 10 s per step: steps 0-300 in one process, stopped, resumed from the checkpoint at step 250 a day later
    first = [{"step": step, "seconds": 10.0 * step} for step in (100, 200, 300)]
    resumed = [{"step": step, "seconds": 10.0 * (step - 250)} for step in (300, 400, 500)]
    assert logged_seconds(first + resumed, saved_steps=[250, 500], steps=500) == pytest.approx(5000.0)
    # with the first process's log lost, the resumed segment alone is scaled from the steps it covers (250-500)
    assert logged_seconds(resumed, saved_steps=[96, 250, 500], steps=500) == pytest.approx(5000.0)
