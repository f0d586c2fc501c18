"""The curriculum's training loop: one entry point for one process or `torchrun` (DDP / FSDP2).

Only rank 0 logs and writes. Checkpoints (model, optimizer, scheduler, data position, RNG) are
written every `checkpoint_every` steps, at each stage's end and on SIGTERM; `resume=True` continues
exactly where the latest one left off. A non-finite loss stops the run and keeps the last good
checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..model import SageForCausalLM, step_ids_from_input_ids
from .batches import EXPLANATION, REASONING, Batch, endless_batches
from .checkpoint import (
    LATEST,
    checkpoint_order,
    gather_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_trainer_state,
    remove_unfinished_writes,
    resume_checkpoint,
    save_checkpoint,
    write_text_atomic,
)
from .distributed import Runtime, all_reduce_sum, init_runtime, shutdown, wrap_model
from .losses import consistency_sum, meta_sum, steps_to_hide, token_nll_sum, total_loss
from .recipe import Recipe, StageConfig
from .schedule import build_scheduler
from .stage3_data import SynthesisStopped


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Position:
    """Where the run is: stage, optimizer step inside it, and the next batch (epoch, index)."""

    stage: int = 0
    step: int = 0
    epoch: int = 0
    batch: int = 0
    tokens: int = 0  # loss tokens trained on in this stage so far


class _Stop:
    """Turns SIGTERM into a request to checkpoint and stop after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def train(
    recipe: Recipe,
    out_dir: str | Path,
    resume: bool = False,
    stop_after: int | None = None,
    resume_from: str | None = None,
) -> Path:
    """Runs the recipe's stages into `out_dir`; returns the folder of the final model.

    Args:
        recipe: what to train.
        out_dir: where data, checkpoints, metrics and the final model go.
        resume: continue from `out_dir/checkpoints/latest` (an error if there is none).
        resume_from: with `resume`, continue from this checkpoint instead (a folder name in
            `out_dir/checkpoints`); the checkpoints after it move to `out_dir/superseded/`.
        stop_after: stop (with a checkpoint) after this many optimizer steps of this call; for tests
            and for splitting a long run over sessions.
    """
    from .prepare import build_model, load_training_tokenizer, prepare_stage_data

    if resume_from is not None and not resume:
        raise ValueError("--from picks the checkpoint to resume from: pass --resume too")
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    runtime = init_runtime()
    stop = _Stop()
    lock = None
    try:
        lock = _lock_run_folder(out_dir) if runtime.is_main else None
        tokenizer = load_training_tokenizer()
        model = build_model(recipe, tokenizer).to(runtime.device)  # the GPU, when torchrun or the machine has one
        position, restored = Position(), None
        if resume:
            restored = resume_checkpoint(ckpt_dir, resume_from)
            position = Position(**load_checkpoint(restored, model, tied=_tied(model))["position"])
        elif latest_checkpoint(ckpt_dir) is not None:
            raise ValueError(f"{out_dir} already holds checkpoints: pass --resume, or choose a new --out")
        logger = _MetricsLog(out_dir, runtime)
        if runtime.is_main:
            _clean_for_start(out_dir, ckpt_dir, restored, recipe, position, logger)
        steps_done = 0
        for index in range(position.stage, len(recipe.stages)):
            stage = recipe.stages[index]
            start = position if index == position.stage else Position(stage=index)
            if start.step >= stage.steps:
                continue
            # Under torchrun the other ranks wait for rank 0's data at a barrier: only one process stops early.
            should_stop = (lambda: stop.requested) if not runtime.distributed else (lambda: False)
            try:
                data = prepare_stage_data(recipe, stage, index, out_dir, runtime, model, tokenizer, should_stop)
            except SynthesisStopped as stopped:
                print(stopped, file=sys.stderr)
                return ckpt_dir
            loop = _StageLoop(recipe, stage, index, model, tokenizer, runtime, ckpt_dir, logger, data)
            mid_stage = restored if (start is position and start.step > 0) else None
            budget = None if stop_after is None else stop_after - steps_done
            steps_done += loop.run(start, mid_stage, stop, budget)
            if stop.requested or (stop_after is not None and steps_done >= stop_after):
                return ckpt_dir
        return _save_final(ckpt_dir, tokenizer, out_dir, runtime, recipe)
    finally:
        if lock is not None:
            lock.close()  # releases the lock (the system releases it too when the process dies)
        stop.restore()
        shutdown(runtime)


def _clean_for_start(
    out_dir: Path, ckpt_dir: Path, restored: Path | None, recipe: Recipe, position: Position, logger: _MetricsLog
) -> None:
    """What a stopped or killed run left that this one would repeat or trip on: unfinished checkpoint writes,
    checkpoints after the one resumed from, and metric rows after it (all rows, when a killed run never reached a
    checkpoint and this one starts afresh). Checkpoints and rows go to RUN/superseded/, nothing is deleted."""
    for path in remove_unfinished_writes(ckpt_dir):
        print(f"removed {path.name}, a checkpoint write that a killed run left unfinished", file=sys.stderr)
    superseded = out_dir / "superseded"
    stamp = int(time.time())
    if restored is not None:
        later = [p for p in list_checkpoints(ckpt_dir) if checkpoint_order(p) > checkpoint_order(restored)]
        for path in later:
            superseded.mkdir(exist_ok=True)
            os.replace(path, superseded / f"{path.name}-{stamp}")
        if later:
            print(f"moved {len(later)} checkpoint(s) after {restored.name} to {superseded}", file=sys.stderr)
        write_text_atomic(ckpt_dir / LATEST, restored.name)
    stage, step = (position.stage, position.step) if restored is not None else (-1, 0)
    logger.keep_rows_up_to([s.name for s in recipe.stages], stage, step, superseded / f"metrics-{stamp}.jsonl")


def _lock_run_folder(out_dir: Path):
    """An exclusive lock on `out_dir/.lock` for as long as this run lives, so that a second run into the same folder
    is refused instead of writing beside it."""
    import fcntl

    out_dir.mkdir(parents=True, exist_ok=True)
    handle = (out_dir / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ValueError(
            f"{out_dir} is in use by another `sage-nano train` ({holder}): wait for it to end or stop it, or choose "
            "another --out"
        ) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


class _StageLoop:
    """Optimizer, schedule and steps of one stage."""

    def __init__(
        self,
        recipe: Recipe,
        stage: StageConfig,
        index: int,
        model: SageForCausalLM,
        tokenizer,
        runtime: Runtime,
        ckpt_dir: Path,
        logger: _MetricsLog,
        data: Path,
    ) -> None:
        self.recipe, self.stage, self.index = recipe, stage, index
        self.model, self.tokenizer, self.runtime = model, tokenizer, runtime
        self.ckpt_dir, self.logger, self.data = ckpt_dir, logger, data
        if recipe.gradient_checkpointing:
            model.activation_checkpointing_enable()
        _train_only_what_the_stage_uses(model, stage)
        self.wrapped = wrap_model(model, runtime, recipe.distributed)
        self.optimizer = _adamw(self.wrapped, stage)
        self.scheduler = build_scheduler(self.optimizer, stage.schedule, stage.warmup, stage.steps)
        device_type = runtime.device.type
        self.autocast = (
            torch.autocast(device_type, dtype=torch.bfloat16) if recipe.bf16 else nullcontext()
        )  # re-entered every step

    def run(self, position: Position, restored: Path | None, stop: _Stop, budget: int | None) -> int:
        """Trains from `position` (continuing the optimizer of checkpoint `restored`, if given) until the
        stage ends, SIGTERM arrives or `budget` steps are done; returns the steps done."""
        if restored is not None:
            self._restore(restored)
        batches = endless_batches(
            self.data,
            self.tokenizer,
            self.stage.batch_size,
            self.stage.loss_on,
            self.recipe.seed + self.index,
            self.recipe.max_length,
            start=(position.epoch, position.batch),
        )
        bar = tqdm(
            total=self.stage.steps,
            initial=position.step,
            desc=f"stage {self.index + 1} {self.stage.name}",
            disable=not self.runtime.is_main,
            dynamic_ncols=True,
        )
        self.model.train()
        done, started, tokens = 0, time.perf_counter(), 0
        tokens_before = position.tokens
        while position.step < self.stage.steps:
            micro = [next(batches) for _ in range(self.stage.grad_accum)]
            (position.epoch, position.batch) = micro[-1][0]
            stats = self._step([batch for _, batch in micro])
            position.step += 1
            done += 1
            tokens += stats["tokens"]
            position.tokens = tokens_before + int(tokens)
            elapsed = time.perf_counter() - started
            rate = tokens / elapsed
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", tok_s=f"{rate:,.0f}")
            if position.step % self.recipe.log_every == 0 or position.step == self.stage.steps:
                self.logger.write(
                    {
                        "stage": self.stage.name,
                        "step": position.step,
                        **stats,
                        "tokens_per_s": rate,
                        "lr": self.scheduler.get_last_lr()[0],
                        "stage_tokens": position.tokens,
                        "seconds": round(elapsed, 1),
                    }
                )
            interrupted = stop.requested or (budget is not None and done >= budget)
            if position.step % self.recipe.checkpoint_every == 0 or position.step == self.stage.steps or interrupted:
                self._checkpoint(position)
            if interrupted:
                break
        bar.close()
        self.model.eval()
        return done

    def _step(self, micro: list[Batch]) -> dict[str, float]:
        """One optimizer step over the micro-batches; losses are normalised by the global token count."""
        total_tokens = torch.tensor(float(sum(b.num_loss_tokens for b in micro)))  # every rank holds the global batch
        scale = self.runtime.world_size / total_tokens.clamp(min=1)  # DDP / FSDP average over ranks
        sums: dict[str, float] = {}
        for batch in micro:
            part = batch.shard(self.runtime.rank, self.runtime.world_size).to(self.runtime.device)
            with self.autocast:
                terms = self._loss_terms(part)
            loss = total_loss(terms, self._weights()) * scale
            loss.backward()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        reduced = all_reduce_sum(torch.tensor(list(sums.values())), self.runtime)
        stats = {name: float(v) / float(total_tokens) for name, v in zip(sums, reduced, strict=True)}
        stats["loss"] = total_loss({k: torch.tensor(v) for k, v in stats.items()}, self._weights()).item()
        if not math.isfinite(stats["loss"]):
            raise TrainingDiverged(
                f"stage {self.stage.name}: the loss became {stats['loss']} at step {self.scheduler.last_epoch + 1}; "
                f"the last good checkpoint in {self.ckpt_dir} is kept. Lower the learning rate ({self.stage.lr}) "
                "or check the data, then resume with --resume"
            )
        torch.nn.utils.clip_grad_norm_(self.wrapped.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        stats["tokens"] = float(total_tokens)
        return stats

    def _loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        inverse = self.stage.name == "inverse"
        hidden_step = None
        if inverse:
            step_ids = step_ids_from_input_ids(batch.input_ids, self.model.config.step_separator_token_ids)
            hidden_step = steps_to_hide(step_ids, batch.labels(REASONING), self.scheduler.last_epoch)
        out = self.wrapped(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            use_cache=False,
            run_inverse=inverse,
            hidden_step=hidden_step,
        )
        terms = {"reasoning": token_nll_sum(out.logits, batch.labels(REASONING))}
        if inverse:
            terms["explanation"] = token_nll_sum(out.logits, batch.labels(EXPLANATION))
        if inverse and out.reconstructed_logits is not None:
            terms["consistency"] = consistency_sum(out, batch.labels(REASONING))
        if inverse and batch.meta_targets:
            terms["meta"] = meta_sum(out, batch.meta_targets)
        return terms

    def _weights(self) -> dict[str, float]:
        """The λ of each loss term of eq. 8 in this stage."""
        return {
            "reasoning": 1.0,
            "explanation": self.stage.lambda_explanation,
            "consistency": self.stage.lambda_consistency,
            "meta": self.stage.lambda_meta,
        }

    def _checkpoint(self, position: Position) -> None:
        model_state, optimizer_state = gather_state(self.wrapped, self.optimizer)
        if not self.runtime.is_main:
            return
        state = {
            "step": position.step,
            "position": vars(position),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }
        name = f"stage{self.index + 1}-step{position.step:06d}"
        save_checkpoint(
            self.ckpt_dir,
            name,
            model_state,
            optimizer_state,
            state,
            self.model.config,
            tied=_tied(self.model),
            tokenizer=self.tokenizer,
        )

    def _restore(self, path: Path) -> None:
        """The optimizer, schedule and RNG of a checkpoint (its weights were loaded before wrapping)."""
        state = load_trainer_state(path, self.wrapped, self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])


def _train_only_what_the_stage_uses(model: SageForCausalLM, stage: StageConfig) -> None:
    """Stages 1–2 do not run the inverse stack or the meta-cognitive head: freeze them there (their
    weights stay as initialised, and DDP sees no unused parameters); stage 3 trains everything."""
    for name, param in model.named_parameters():
        param.requires_grad = stage.name == "inverse" or not name.startswith(("inverse.", "meta_head."))


def _tied(model: SageForCausalLM) -> dict[str, str]:
    return dict(model._tied_weights_keys) if model.config.tie_word_embeddings else {}


def _adamw(model: nn.Module, stage: StageConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, biases or 1-D parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": stage.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=stage.lr, betas=(0.9, 0.95), eps=1e-8)


class _MetricsLog:
    """Metrics as JSON lines in out_dir/metrics.jsonl (and TensorBoard when installed); rank 0 only."""

    def __init__(self, out_dir: Path, runtime: Runtime) -> None:
        self.enabled = runtime.is_main
        self.path = out_dir / "metrics.jsonl"
        self.board = None
        if self.enabled:
            out_dir.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.board = SummaryWriter(out_dir / "tensorboard")
            except ImportError:
                self.board = None

    def keep_rows_up_to(self, stage_names: list[str], stage: int, step: int, aside: Path) -> None:
        """Moves the rows logged after (stage, step), which this run logs again, to `aside`."""
        if not self.path.is_file():
            return
        kept, dropped, current = [], [], 0
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
                current = stage_names.index(row["stage"], current)
                after = (current, row["step"]) > (stage, step)
            except (ValueError, KeyError, TypeError):
                after = True  # a line cut short by a kill, or not a training row
            (dropped if after else kept).append(line)
        if dropped:
            aside.parent.mkdir(exist_ok=True)
            aside.write_text("".join(f"{line}\n" for line in dropped))
            write_text_atomic(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.board is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "step":
                    self.board.add_scalar(f"{record['stage']}/{key}", value, record["step"])


def _save_final(ckpt_dir: Path, tokenizer, out_dir: Path, runtime: Runtime, recipe: Recipe) -> Path:
    """The last checkpoint's weights and config, with the tokenizer and recipe, as a model folder (rank 0)."""
    final = out_dir / "model"
    if runtime.is_main:
        last = latest_checkpoint(ckpt_dir)
        final.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "config.json"):
            shutil.copyfile(last / name, final / name)
        tokenizer.save_pretrained(final)
        (final / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=1))
    return final
