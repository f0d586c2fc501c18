"""Train the SAGE-nano tokenizer on benchmark text and save it into the package assets."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from sagenano.tokenizer import SPECIAL_TOKENS, save_tokenizer, train_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "src" / "sagenano" / "assets" / "tokenizer"
DEFAULT_BENCHMARKS = REPO_ROOT / ".." / "shared" / "data" / "benchmarks"


def _jsonl(path: Path) -> Iterator[dict]:
    """Yield one record per non-empty line of a JSON-lines file."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def gsm8k_texts(root: Path) -> Iterator[str]:
    """Yield GSM8K train questions and worked answers."""
    for record in _jsonl(root / "gsm8k" / "train.jsonl"):
        yield f"{record['question']}\n{record['answer']}\n"


def aqua_texts(root: Path) -> Iterator[str]:
    """Yield AQUA-RAT dev questions, options and rationales."""
    for record in _jsonl(root / "aqua_rat" / "dev.json"):
        options = " ".join(record["options"])
        yield f"{record['question']}\n{options}\n{record['rationale']}\n"


def proofwriter_texts(root: Path) -> Iterator[str]:
    """Yield ProofWriter dev contexts and questions."""
    records = json.loads((root / "proofwriter" / "dev.json").read_text(encoding="utf-8"))
    for record in records:
        yield f"{record['context']}\n{record['question']}\n"


def arc_texts(root: Path) -> Iterator[str]:
    """Yield ARC-Easy queries and answer choices."""
    for record in _jsonl(root / "arc" / "arc_easy_test.jsonl"):
        yield f"{record['query']}\n" + "\n".join(record["choices"]) + "\n"


def synthetic_texts(repeats: int = 50) -> Iterator[str]:
    """Yield formatted reasoning traces so special tokens and 'Step N:' patterns are seen."""
    tok = SPECIAL_TOKENS
    for i in range(repeats):
        a, b = i + 2, 3 * i + 1
        yield (
            f"{tok['question']} What is {a} + {b}?\n"
            f"{tok['step']} Step 1: Start with {a}.\n"
            f"{tok['step']} Step 2: Add {b} to get {a + b}.\n"
            f"{tok['answer']} The answer is {a + b}.\n"
            f"{tok['explanation']} Step 2 adds the two numbers, so the answer is {a + b}.{tok['eos']}\n"
        )


def corpus(root: Path) -> Iterator[str]:
    """Yield the whole training corpus, one record at a time."""
    yield from synthetic_texts()
    for source in (gsm8k_texts, aqua_texts, proofwriter_texts, arc_texts):
        yield from source(root)


def parse_args() -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--vocab-size", type=int, default=4096, help="target vocabulary size")
    parser.add_argument("--benchmarks", type=Path, default=DEFAULT_BENCHMARKS, help="benchmark data folder")
    return parser.parse_args()


def main() -> None:
    """Train the tokenizer and save it."""
    args = parse_args()
    root = args.benchmarks.resolve()
    if not root.is_dir():
        raise SystemExit(f"Benchmark folder not found: {root} (pass --benchmarks).")
    tokenizer = train_tokenizer(texts=corpus(root), vocab_size=args.vocab_size)
    out = save_tokenizer(tokenizer, args.out)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"Saved tokenizer (vocab {len(tokenizer)}) to {out} ({size} bytes)")


if __name__ == "__main__":
    main()
