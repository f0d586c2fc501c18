"""Training recipes: the YAML file that says what to build, on what data, through which stages."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGES = ("base_lm", "cot", "inverse")
LOSS_ON = {"base_lm": "all", "cot": "solution", "inverse": "solution+explanation"}


@dataclass
class StageConfig:
    """One curriculum stage (paper §5.2).

    Args:
        name: base_lm (language modelling on all tokens), cot (loss on the solution tokens: L_reasoning),
            or inverse (L_reasoning + λ1·L_explanation + λ2·L_consistency + the meta-cognitive head's loss).
        steps: optimizer steps.
        lr: peak learning rate.
        warmup: warm-up steps.
        schedule: "cosine" (linear warm-up + cosine) or "paper" (eq. 15).
        batch_size: global micro-batch (examples per forward pass over all ranks).
        grad_accum: micro-batches per optimizer step.
        weight_decay: AdamW weight decay (not applied to norms, biases and embeddings of concepts).
        lambda_explanation / lambda_consistency / lambda_meta: weights of the inverse stage's extra losses.
        synth_questions: training questions the stage-2 model answers to synthesise stage-3 data.
        synth_resamples: samples drawn from each step boundary to find decision points.
        synth_repeats: times each synthesised record appears in the stage's data.
        reference_items: reference chains from the training data (plain L_reasoning) mixed into stage 3 so that
            it keeps the stage-2 skill; by default enough that the stage's steps see no item twice.
    """

    name: str
    steps: int
    lr: float = 1e-3
    warmup: int = 100
    schedule: str = "cosine"
    batch_size: int = 32
    grad_accum: int = 1
    weight_decay: float = 0.1
    lambda_explanation: float = 0.5
    lambda_consistency: float = 0.1
    lambda_meta: float = 0.1
    synth_questions: int = 512
    synth_resamples: int = 4
    synth_repeats: int = 1
    reference_items: int | None = None

    def __post_init__(self) -> None:
        if self.name not in STAGES:
            raise ValueError(f"unknown stage {self.name!r}; choose one of {list(STAGES)}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError(f"stage {self.name}: steps, batch_size and grad_accum must be at least 1")

    @property
    def examples(self) -> int:
        """Examples the stage trains on (over all ranks and accumulation steps)."""
        return self.steps * self.batch_size * self.grad_accum

    @property
    def loss_on(self) -> str:
        return LOSS_ON[self.name]


@dataclass
class Recipe:
    """A whole training run.

    Args:
        preset: SAGE preset to build (pico, micro, ...); `model` overrides its fields.
        init: a trained SAGE model folder to start from instead (its weights and config; `preset` and `model` are
            then not used): e.g. to run stage 3 again on a trained model. Its tokenizer must be the package's.
        tasks: synthetic task -> number of training items (see `sage-nano data synth`).
        heldout: items per task in the held-out split used for evaluation.
        cot_files: your own chain-of-thought data for stages 1 and 2 (and the questions stage 3 explains): JSONL
            files in GSM8K's, AQuA-RAT's or a plain {question, steps, answer} shape (`sagenano.data.cot_files`),
            added to the generated `tasks` (which may be empty: `tasks: {}`); bad lines are reported and skipped.
        text_files: extra text for stage 1's language modelling (stage 2 does not read it): plain-text files, or
            JSONL files whose records' string fields are the text (paths relative to the directory the run starts in).
        seed: seed of data generation, initialisation and batch order.
        max_length: longest example in tokens (longer ones are cut).
        bf16: bf16 autocast for forward/backward (weights and optimizer stay fp32).
        gradient_checkpointing: recompute activations in backward to save memory.
        distributed: ddp or fsdp when run under torchrun with several processes.
        checkpoint_every: optimizer steps between checkpoints (and at every stage's end).
        stages: the curriculum, in order.
    """

    preset: str = "pico"
    model: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    tasks: dict[str, int] = field(default_factory=lambda: {"arithmetic": 1000})
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    heldout: int = 200
    cot_files: list[str] = field(default_factory=list)
    text_files: list[str] = field(default_factory=list)
    seed: int = 0
    max_length: int = 384
    bf16: bool = True
    gradient_checkpointing: bool = False
    distributed: str = "ddp"
    checkpoint_every: int = 200
    log_every: int = 10
    stages: list[StageConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stages = [s if isinstance(s, StageConfig) else StageConfig(**s) for s in self.stages]
        if not self.stages:
            raise ValueError("a recipe needs at least one stage")
        if self.init is not None and self.model:
            raise ValueError("a recipe with `init` takes the model's config from it: remove `model`")
        if self.distributed not in ("ddp", "fsdp"):
            raise ValueError(f"distributed must be ddp or fsdp, got {self.distributed!r}")

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no recipe at {path}; see recipes/ for examples")
        data = yaml.safe_load(path.read_text()) or {}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown recipe keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
