"""The spans a reasoning step can rest on: numbers and clauses of the question and of earlier steps.

The question and every step are cut into a partition of *units*: each number is a unit, and so is
each run of text between numbers within a sentence (a whole sentence when it holds no number). A number
is one unit with its decimals, thousands separators, a leading `$` and a trailing `%` ("$1,200.50",
"12.5%"), and a decimal point is not a sentence end.
Units without a letter or digit (operators, punctuation) are left out. Each unit (a `SpanRef`) knows
the token positions it covers in the full sequence (prompt + generated chain), so token scores aggregate to it.
"""

from __future__ import annotations

import re
from decimal import Decimal

from .report import SpanRef

# A number as the text writes it (without its sign: in "14-2" the minus is an operator). `value` is the digits with
# their separators and decimals; a comma separates thousands only in groups of three ("1,2,3" is three numbers).
NUMBER = re.compile(r"\$?(?P<value>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?<![\w.])\.\d+)%?")
# A sentence: numbers (whose points end nothing) and other characters up to its end marks.
_SENTENCE = re.compile(rf"(?:{NUMBER.pattern}|[^.!?\n])+[.!?]*")
_MEANINGFUL = re.compile(r"[A-Za-z0-9]")


def number_value(number: re.Match) -> Decimal:
    """The value of a `NUMBER` match ("$1,200.50" -> 1200.50)."""
    return Decimal(number["value"].replace(",", ""))


def text_units(text: str) -> list[tuple[int, int, str]]:
    """(start, end, kind) for the numbers and the text runs between them, sentence by sentence."""
    units = []
    for sentence in _SENTENCE.finditer(text):
        cursor = sentence.start()
        for number in NUMBER.finditer(text, sentence.start(), sentence.end()):
            units.append((cursor, number.start(), "text"))
            units.append((number.start(), number.end(), "number"))
            cursor = number.end()
        units.append((cursor, sentence.end(), "text"))
    return [(a, b, kind) for a, b, kind in (_strip(text, a, b, kind) for a, b, kind in units) if a < b]


def _strip(text: str, a: int, b: int, kind: str) -> tuple[int, int, str]:
    piece = text[a:b]
    if not _MEANINGFUL.search(piece):
        return a, a, kind
    left = len(piece) - len(piece.lstrip())
    right = len(piece.rstrip())
    return a + left, a + right, kind


def token_starts(char_ends: list[int]) -> list[int]:
    return [0, *char_ends[:-1]]


def covering_positions(char_starts: list[int], char_ends: list[int], a: int, b: int, offset: int) -> list[int]:
    """Positions (offset + token index) of the tokens whose characters overlap [a, b)."""
    return [offset + i for i, (s, e) in enumerate(zip(char_starts, char_ends, strict=True)) if s < b and e > a]


def question_units(question: str, prompt_text: str, prompt_char_ends: list[int]) -> list[SpanRef]:
    """Units of the question, located inside the decoded prompt (whose token i ends at prompt_char_ends[i])."""
    where = prompt_text.rfind(question)
    if where < 0:
        raise ValueError("cannot find the question inside the decoded prompt; is the tokenizer lossless?")
    starts = token_starts(prompt_char_ends)
    units = []
    for a, b, kind in text_units(question):
        positions = covering_positions(starts, prompt_char_ends, where + a, where + b, offset=0)
        if positions:
            units.append(
                SpanRef(
                    source="question", step=None, start=a, end=b, text=question[a:b], kind=kind, positions=positions
                )
            )
    return units


def step_units(step_index: int, step_text: str, step_char_start: int, chain_char_ends: list[int], offset: int):
    """Units of a generated step; positions are offset (the prompt length) + generated-token index."""
    starts = token_starts(chain_char_ends)
    units = []
    for a, b, kind in text_units(step_text):
        lo, hi = step_char_start + a, step_char_start + b
        positions = covering_positions(starts, chain_char_ends, lo, hi, offset)
        if positions:
            units.append(
                SpanRef(
                    source="step", step=step_index, start=a, end=b, text=step_text[a:b], kind=kind, positions=positions
                )
            )
    return units
